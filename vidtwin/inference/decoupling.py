"""What the structure and the dynamics latents hold: a decoupling report for any model and any videos.

VidTwin's claim is that the structure latent holds the content and the slow, global movement and
the dynamics latent the fast, fine movement. The paper shows it with single-latent decodes and
cross-reenactment figures; this module scores the same things on any videos, for any weights:

- **Single-latent decodes.** PSNR (per frame on [0, 1], capped at 100 dB, averaged over the frames)
  of the full decode, the structure-only decode and the dynamics-only decode
  (``model.decode(latents, only=...)`` through :func:`~vidtwin.inference.pipeline.decode_latents`).
- **Temporal bands.** Per pixel and channel, a clip's change along time (its temporal mean removed)
  is split by an orthonormal DCT-II along time into a *slow* band (components of at most
  ``band_cutoff`` cycles per frame, default 1/8: periods of 8 frames or more) and a *fast* band (the
  rest). The DCT's even extension keeps a steady drift in the slow band, where a plain FFT would see
  the jump between a clip's last and first frames and spread it over every frequency. For each decode
  and band, ``share = max(0, 1 - ||band(decode) - band(input)||^2 / ||band(input)||^2)``, the sums
  running over every pixel, channel, frame and clip: 1 when the decode reproduces the band, 0 for a
  decode without that change (a still image, or the band of another video). A band that holds (almost)
  none of the input's change (below 1e-6 of it) has no share: ``None``.
- **Order invariance.** The structure latent of each clip is encoded again from the clip with its
  frames shuffled (one seeded permutation per clip, never the identity). Its change is the RMS
  difference between the two structure latents; the ratio divides the mean change by the mean RMS
  difference between the structure latents of clips of *different* videos (so it needs two videos).
  0: the structure latent ignores the frames' order; 1: shuffling moves it as far as another video.
- **Cross-reenactment.** For each pair of consecutive inputs (A, B): the structure of A decoded with
  the dynamics of B and the other way round, with the PSNR of each crossed clip to its structure
  source and to its dynamics source.

Encoding is deterministic: the model runs in eval mode (posterior means or FSQ codes, and none of
the configured ``shuffle_content`` shuffling). Videos are sampled, resized and center-cropped as the
inference pipeline does (``spatial="resize"``), and only their first ``clips`` clips are used.

Example::

    from vidtwin import load_model
    from vidtwin.inference.decoupling import decoupling_report, write_decoupling_report

    model = load_model("vidtwin", "hf://microsoft/vidtwin")
    report = decoupling_report(model, ["a.mp4", "b.mp4"], dtype="fp32")
    report.summary["overall"]["order"]["ratio"]
    write_decoupling_report(report, "decoupling/")   # report.json, report.png, videos/<name>.png
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vidtwin.inference.decoupling_picture import VideoStrips, overview_picture, save_png, strips_picture
from vidtwin.inference.options import InferenceError, InferenceOptions, resolve_dtype
from vidtwin.inference.outputs import write_text_output
from vidtwin.inference.pipeline import (
    check_cross_compatible,
    clip_reference,
    decode_latents,
    encode_video,
    iter_decoded,
    opened_source,
    plan_clips,
    to_uint8_frames,
)
from vidtwin.inference.sources import FrameSource
from vidtwin.latents.latent_file import EncodedVideo
from vidtwin.metrics import psnr_per_frame, to_unit_range

DECODES = ("full", "structure", "dynamics")  # the decodes scored: both latents, then each alone
BANDS = ("slow", "fast")
DEFAULT_BAND_CUTOFF = 0.125  # cycles per frame: periods of 8 frames and longer are slow
EMPTY_BAND = 1e-6  # a band holding less than this share of the input's change has no share
PSNR_CAP_DB = 100.0  # identical frames score this instead of inf, so that means stay finite
PICTURE_SIDE = 128  # frames in the pictures are shrunk to at most this many pixels a side
REPORT_JSON = "report.json"
REPORT_PICTURE = "report.png"
VIDEO_PICTURES = "videos"  # folder of the per-video pictures

DEFINITIONS = {
    "psnr": f"per frame on [0, 1] (decode clamped), capped at {PSNR_CAP_DB:g} dB, mean over the frames; "
            "reference = the model-space input (resized and center-cropped)",
    "bands": "per pixel and channel, the change along time (temporal mean removed) split by an orthonormal DCT-II "
             "along each clip into slow (<= cutoff cycles per frame) and fast (> cutoff) components; share = "
             "max(0, 1 - ||band(decode) - band(input)||^2 / ||band(input)||^2), sums over pixels, channels, frames "
             f"and clips; null where the input's band holds less than {EMPTY_BAND:g} of its change",
    "order": "structure_change = RMS difference between the structure latents of each clip and of the same clip "
             "with its frames shuffled (seeded, never the identity), mean over clips; between_videos = mean RMS "
             "difference between structure latents of clips of different videos; ratio = structure_change / "
             "between_videos (0: order ignored, 1: as far as another video)",
    "cross": "consecutive inputs (A, B): structure of A with the dynamics of B, and of B with the dynamics of A, "
             "cut to the shorter; PSNR of each crossed clip to its structure source and to its dynamics source",
}


# ----------------------------------------------------------------------------------------------
# temporal bands
# ----------------------------------------------------------------------------------------------


def dct_basis(length: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``(length, length)`` float64: row k is the basis of frequency
    ``k / (2 * length)`` cycles per frame; ``coefficients = basis @ signal`` along time."""
    positions = torch.arange(length, dtype=torch.float64)
    frequencies = torch.arange(length, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi * (positions + 0.5) * frequencies / length)  # (k, n)
    basis[0] *= math.sqrt(1.0 / length)
    basis[1:] *= math.sqrt(2.0 / length)
    return basis


def split_temporal_bands(video: torch.Tensor, cutoff: float = DEFAULT_BAND_CUTOFF) -> tuple[torch.Tensor, ...]:
    """``video = mean + slow + fast`` along time (dimension 1 of ``(C, N, H, W)``), each float64.

    mean: the temporal mean of each pixel (broadcast to every frame); slow: the DCT-II components of
    ``0 < k / (2N) <= cutoff`` cycles per frame; fast: those above the cutoff.
    """
    if video.dim() != 4:
        raise ValueError(f"expected a (C, N, H, W) video, got shape {tuple(video.shape)}")
    length = video.shape[1]
    basis = dct_basis(length)  # (k, n)
    coefficients = torch.einsum("kn,cnhw->ckhw", basis, video.double())  # (C, k, H, W)
    frequency = torch.arange(length, dtype=torch.float64) / (2 * length)  # cycles per frame of each k
    masks = (frequency == 0, (frequency > 0) & (frequency <= cutoff), frequency > cutoff)
    return tuple(torch.einsum("kn,ckhw->cnhw", basis, coefficients * mask[None, :, None, None].double())
                 for mask in masks)  # each (C, N, H, W)


@dataclass
class BandScore:
    """Sums over pixels, channels and frames: the input band's energy, the decode's error in that band,
    and the input's whole change (every band), from which a share and its emptiness follow."""

    error: float = 0.0
    energy: float = 0.0
    change: float = 0.0

    def add(self, other: "BandScore") -> "BandScore":
        return BandScore(self.error + other.error, self.energy + other.energy, self.change + other.change)

    @property
    def share(self) -> float | None:
        """``max(0, 1 - error / energy)``; None where the band holds no change of the input."""
        if self.energy <= EMPTY_BAND * self.change or self.energy <= 0.0:
            return None
        return max(0.0, 1.0 - self.error / self.energy)


def band_scores(reference: torch.Tensor, decoded: torch.Tensor,
                cutoff: float = DEFAULT_BAND_CUTOFF) -> dict[str, BandScore]:
    """``{"slow", "fast"}``: the :class:`BandScore` of ``decoded`` against ``reference``, both ``(C, N, H, W)``."""
    if reference.shape != decoded.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)} vs {tuple(decoded.shape)}")
    _, *wanted = split_temporal_bands(reference, cutoff)
    _, *got = split_temporal_bands(decoded, cutoff)
    change = float(sum(band.square().sum() for band in wanted))
    return {name: BandScore(float((have - want).square().sum()), float(want.square().sum()), change)
            for name, want, have in zip(BANDS, wanted, got)}


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


@dataclass
class DecouplingReport:
    """``summary``: everything report.json holds; ``videos`` and ``pairs``: the pictures' frames."""

    summary: dict
    videos: list[VideoStrips] = field(default_factory=list)
    pairs: list[VideoStrips] = field(default_factory=list)


@dataclass
class _Video:
    """What one video leaves for the pairs and the order score (its frames only until the next video)."""

    name: str
    encoded: EncodedVideo
    reference: torch.Tensor  # (3, n, H, W) model-space input in [-1, 1]
    structures: torch.Tensor  # (clips, D) flattened structure latents
    changes: list[float]  # per clip: RMS change of the structure latent under shuffling


class _ReorderedSource(FrameSource):
    """The frames of ``source`` at ``order`` (position -> source position): its first frames, or those
    frames shuffled."""

    def __init__(self, source: FrameSource, order: list[int]):
        self.source, self.order = source, order
        self.fps, self.name = source.fps, source.name

    @property
    def num_frames(self) -> int:
        return len(self.order)

    @property
    def size(self) -> tuple[int, int]:
        return self.source.size

    def frames_at(self, positions: Sequence[int]) -> torch.Tensor:
        wanted = [self.order[p] for p in positions]
        unique = sorted(set(wanted))  # files are read forward
        frames = self.source.frames_at(unique)  # (u, H, W, 3)
        return frames[[unique.index(w) for w in wanted]]  # (n, H, W, 3)


def shuffled_order(num_frames: int, clip_len: int, generator: torch.Generator) -> list[int]:
    """A frame order that permutes the real frames of each clip of ``clip_len`` among themselves:
    one random permutation per clip, redrawn if it is the identity (a clip of one frame stays)."""
    order = []
    for start in range(0, num_frames, clip_len):
        count = min(clip_len, num_frames - start)
        permutation = torch.arange(count)
        while count > 1 and torch.equal(permutation, torch.arange(count)):
            permutation = torch.randperm(count, generator=generator)
        order += (start + permutation).tolist()
    return order


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).square().mean().sqrt())


def _psnr(decoded: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean per-frame PSNR of two ``(3, n, H, W)`` videos in [-1, 1]."""
    frames = psnr_per_frame(to_unit_range(decoded)[None], to_unit_range(reference)[None], max_value=PSNR_CAP_DB)
    return float(frames.mean())


def _thumbnails(video: torch.Tensor, positions: list[int]) -> np.ndarray:
    """Frames ``positions`` of a ``(3, n, H, W)`` video in [-1, 1], shrunk to PICTURE_SIDE -> uint8 (F, h, w, 3)."""
    frames = video[:, positions].transpose(0, 1).float()  # (F, 3, H, W)
    scale = min(1.0, PICTURE_SIDE / max(frames.shape[-2:]))
    if scale < 1.0:
        size = (max(1, round(frames.shape[-2] * scale)), max(1, round(frames.shape[-1] * scale)))
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    return to_uint8_frames(frames.transpose(0, 1)).numpy()  # (F, h, w, 3)


def _shown_positions(num_frames: int, count: int) -> list[int]:
    count = max(1, min(count, num_frames))
    return sorted({round(i * (num_frames - 1) / max(count - 1, 1)) for i in range(count)})


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _significant(value: float | None, digits: int = 6) -> float | None:
    """For latent distances, whose scale depends on the model: ``digits`` significant digits."""
    return None if value is None or not math.isfinite(value) else float(f"{value:.{digits}g}")


def _band_json(scores: dict[str, dict[str, BandScore]]) -> dict:
    return {decode: {band: _rounded(scores[decode][band].share) for band in BANDS} for decode in DECODES}


def unique_names(labels: Sequence[str]) -> list[str]:
    """One picture name per video: its stem; its file name where stems repeat; ``NN_`` + that where names
    repeat too (the same name in two folders)."""
    stems = [Path(label).stem or "video" for label in labels]
    if len(set(stems)) == len(stems):
        return stems
    names = [stem if stems.count(stem) == 1 else Path(label).name for stem, label in zip(stems, labels)]
    if len(set(names)) == len(names):
        return names
    return [f"{index:02d}_{name}" for index, name in enumerate(names, start=1)]


def report_paths(output_dir: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """Every file :func:`write_decoupling_report` writes for videos of these (unique) names."""
    output_dir = Path(output_dir)
    return [output_dir / REPORT_JSON, output_dir / REPORT_PICTURE,
            *(output_dir / VIDEO_PICTURES / f"{name}.png" for name in names)]


def decoupling_report(
    model: torch.nn.Module,
    videos: Sequence[str | os.PathLike | torch.Tensor | FrameSource],
    options: InferenceOptions | None = None,
    *,
    clips: int = 1,
    seed: int = 0,
    band_cutoff: float = DEFAULT_BAND_CUTOFF,
    names: Sequence[str] | None = None,
    fps: float | None = None,
    picture_frames: int = 4,
    **option_overrides,
) -> DecouplingReport:
    """Score what each latent of ``model`` holds on ``videos`` (see the module docstring).

    Args:
        model: a VidTwin; it runs in eval mode here (its mode is restored afterwards), on its device.
        videos: file paths, uint8 ``(N, H, W, 3)`` frames (with ``fps``) or FrameSources.
        options, option_overrides: :class:`InferenceOptions` and/or its fields (``sample_fps``,
            ``max_frames``, ``batch_clips``, ``dtype``, ``progress``); ``spatial`` must be ``"resize"``.
        clips: how many clips of each video to use, from its start (a shorter video gives fewer).
        seed: the seed of the frame shuffles.
        band_cutoff: the slow/fast border in cycles per frame, in (0, 0.5).
        names: one name per video for the report and its pictures (default: unique file stems).
        picture_frames: frames shown per row of the pictures.

    Returns:
        :class:`DecouplingReport`; write it with :func:`write_decoupling_report`.
    """
    options = InferenceOptions.of(options, **option_overrides)
    if options.spatial != "resize":
        raise InferenceError("the decoupling report resizes and crops videos to the model size: use spatial='resize'")
    if clips < 1:
        raise InferenceError(f"clips must be >= 1, got {clips}")
    if not 0.0 < band_cutoff < 0.5:
        raise InferenceError(f"the band cutoff must lie between 0 and 0.5 cycles per frame, got {band_cutoff}")
    if not videos:
        raise InferenceError("the decoupling report needs at least one video")
    labels = [os.fspath(video) if isinstance(video, (str, os.PathLike)) else getattr(video, "name", "") or f"video{i + 1}"
              for i, video in enumerate(videos)]
    names = unique_names(labels) if names is None else list(names)
    if len(names) != len(videos) or len(set(names)) != len(names) or any("/" in n or os.sep in n for n in names):
        raise InferenceError(f"names must give one different file name (no folder) per video, got {names}")
    clip_len = model.input_size[0]
    requested_frames = options.max_frames
    cap = clips * clip_len if requested_frames is None else min(requested_frames, clips * clip_len)
    options = dataclasses.replace(options, max_frames=cap)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)

    was_training = model.training
    model.eval()  # posterior means (or FSQ codes), no configured shuffling
    report = DecouplingReport(summary={})
    entries, pair_entries, kept = [], [], []
    previous: _Video | None = None
    try:
        for index, video in enumerate(tqdm(videos, desc="decoupling", unit="video",
                                           disable=not options.progress or len(videos) < 2, dynamic_ncols=True)):
            current, entry, strips, scores = _score_video(model, video, names[index], labels[index], options, fps,
                                                          generator, band_cutoff, picture_frames)
            entries.append((entry, scores))
            report.videos.append(strips)
            kept.append(current)
            if previous is not None:
                pair, pair_strips = _score_pair(model, previous, current, options, picture_frames)
                pair_entries.append(pair)
                report.pairs.append(pair_strips)
                previous.reference = previous.encoded = None  # only the latents are needed from here on
            previous = current
    finally:
        model.train(was_training)
    report.summary = _summarize(entries, pair_entries, kept, settings={
        "clips_per_video": clips, "frames_per_clip": clip_len, "model_size": list(model.input_size[1:]),
        "shuffle_seed": seed, "band_cutoff_cycles_per_frame": band_cutoff, "sample_fps": options.sample_fps,
        "max_frames": requested_frames, "dtype": resolve_dtype(options.dtype, device), "device": str(device),
        "spatial": "resize",
    })
    return report


def _score_video(model, video, name, label, options, fps, generator, band_cutoff, picture_frames):
    """One video's decodes, bands and order change -> (_Video, JSON entry, picture strips, band scores)."""
    with opened_source(video, options, fps) as opened:
        # A FrameSource given as it is skips the options' sampling: the frame cap applies here too.
        frames = min(opened.num_frames, options.max_frames)
        source = _ReorderedSource(opened, list(range(frames)))
        plan = plan_clips(model, frames, source.size, "resize", None)
        layout = plan.layout
        reference = torch.cat([clip_reference(source, plan, clip)[:, :layout.valid_frames(clip)]
                               for clip in range(layout.num_clips)], dim=1)  # (3, n, H, W)
        encoded = encode_video(model, source, options)
        shuffled = encode_video(model, _ReorderedSource(opened, shuffled_order(frames, layout.clip_len, generator)),
                                options)
        fps_used = source.fps
    decoded = {decode: decode_latents(model, encoded, options, only=None if decode == "full" else decode).video
               for decode in DECODES}  # each (3, n, H, W)
    bounds = [(clip * layout.clip_len, clip * layout.clip_len + layout.valid_frames(clip))
              for clip in range(layout.num_clips)]
    scores = {decode: {band: BandScore() for band in BANDS} for decode in DECODES}
    for start, end in bounds:
        for decode in DECODES:
            clip_scores = band_scores(reference[:, start:end], decoded[decode][:, start:end].clamp(-1.0, 1.0), band_cutoff)
            scores[decode] = {band: scores[decode][band].add(clip_scores[band]) for band in BANDS}
    structures = encoded.structure.flatten(1)  # (clips, tiles*D): one tile with spatial="resize"
    changes = [_rms(a, b) for a, b in zip(structures, shuffled.structure.flatten(1))]
    psnr = {decode: _psnr(decoded[decode], reference) for decode in DECODES}
    change_total = scores["full"]["slow"].change
    entry = {
        "name": name, "source": label, "frames": reference.shape[1], "fps": round(fps_used, 3), "clips": layout.num_clips,
        "psnr": {decode: _rounded(psnr[decode]) for decode in DECODES},
        "bands": _band_json(scores),
        "input_change": {band: _rounded(scores["full"][band].energy / change_total if change_total > 0 else None)
                         for band in BANDS},
        "order": {"structure_change": _significant(sum(changes) / len(changes))},
        "picture": f"{VIDEO_PICTURES}/{name}.png",
    }
    positions = _shown_positions(reference.shape[1], picture_frames)
    labels = ["input", *(f"{'both latents' if d == 'full' else d + ' only'}\nPSNR {psnr[d]:.2f} dB\n"
                        f"slow {_text(scores[d]['slow'].share)} fast {_text(scores[d]['fast'].share)}" for d in DECODES)]
    rows = [_thumbnails(reference, positions), *(_thumbnails(decoded[d], positions) for d in DECODES)]
    strips = VideoStrips(name, labels, rows, positions)
    return _Video(name, encoded, reference, structures, changes), entry, strips, scores


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _score_pair(model, first: _Video, second: _Video, options, picture_frames):
    """Cross-reenactment of two consecutive videos -> (JSON entry, picture strips)."""
    length = min(first.reference.shape[1], second.reference.shape[1])
    crossed = {(a.name, b.name): _cross(model, a.encoded, b.encoded, length, options)  # (3, length, H, W)
               for a, b in ((first, second), (second, first))}
    entry = {"a": first.name, "b": second.name, "frames": length, "crossed": []}
    for (structure, dynamics), video in crossed.items():
        source = {first.name: first, second.name: second}
        entry["crossed"].append({
            "structure": structure, "dynamics": dynamics,
            "psnr_to_structure_source": _rounded(_psnr(video, source[structure].reference[:, :length])),
            "psnr_to_dynamics_source": _rounded(_psnr(video, source[dynamics].reference[:, :length])),
        })
    positions = _shown_positions(length, picture_frames)
    labels = [f"A: {first.name}", f"B: {second.name}", "structure A\n+ dynamics B", "structure B\n+ dynamics A"]
    rows = [_thumbnails(first.reference, positions), _thumbnails(second.reference, positions),
            *(_thumbnails(video, positions) for video in crossed.values())]
    return entry, VideoStrips(f"{first.name} x {second.name}", labels, rows, positions)


def _cross(model, structure: EncodedVideo, dynamics: EncodedVideo, frames: int, options) -> torch.Tensor:
    """The first ``frames`` of ``structure`` decoded with the dynamics of ``dynamics``: ``(3, frames, H, W)``.
    As :func:`~vidtwin.inference.pipeline.cross_reenact`, without its warning about different frame
    rates, which means nothing for clips that are only compared."""
    check_cross_compatible(structure, dynamics)
    clips = iter_decoded(model, structure.truncated(frames), options, dynamics=dynamics.truncated(frames))
    return torch.cat([clip.output for clip in clips], dim=1)  # (3, frames, H, W)


def _summarize(entries, pair_entries, kept: list[_Video], settings: dict) -> dict:
    """report.json: settings, definitions, per video, per pair, and the overall figures."""
    videos = [entry for entry, _ in entries]
    pooled = {decode: {band: BandScore() for band in BANDS} for decode in DECODES}
    for _, scores in entries:
        pooled = {d: {b: pooled[d][b].add(scores[d][b]) for b in BANDS} for d in DECODES}
    between = _between_videos(kept)
    changes = [change for video in kept for change in video.changes]
    mean_change = sum(changes) / len(changes)
    order = {"structure_change": _significant(mean_change), "between_videos": _significant(between),
             "ratio": _rounded(mean_change / between) if between else None}
    if between is None:
        order["note"] = "the ratio needs two or more videos: structure_change is the raw RMS change"
    elif not between:
        order["note"] = "the videos' structure latents are identical: no ratio"
    for entry, video in zip(videos, kept):
        entry["order"]["ratio"] = _rounded(sum(video.changes) / len(video.changes) / between) if between else None
    overall = {
        "videos": len(videos),
        "psnr": {d: _rounded(sum(e["psnr"][d] for e in videos) / len(videos)) for d in DECODES},
        "bands": _band_json(pooled),
        "order": order,
    }
    crossed = [item for pair in pair_entries for item in pair["crossed"]]
    if crossed:
        overall["cross"] = {key: _rounded(sum(item[key] for item in crossed) / len(crossed))
                            for key in ("psnr_to_structure_source", "psnr_to_dynamics_source")}
    else:
        overall["cross"] = None
        overall["cross_note"] = "cross-reenactment needs two or more videos"
    return {"settings": settings, "definitions": DEFINITIONS, "overall": overall, "videos": videos,
            "pairs": pair_entries, "picture": REPORT_PICTURE}


def _between_videos(kept: list[_Video]) -> float | None:
    """Mean RMS distance between the structure latents of clips of different videos; None for one video."""
    if len(kept) < 2:
        return None
    latents = torch.cat([video.structures for video in kept]).double()  # (M, D)
    owner = torch.cat([torch.full((len(video.structures),), index) for index, video in enumerate(kept)])  # (M,)
    distances = torch.cdist(latents, latents) / math.sqrt(latents.shape[1])  # (M, M) RMS differences
    different = owner[:, None] != owner[None, :]  # (M, M)
    return float(distances[different].mean())


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def write_decoupling_report(report: DecouplingReport, output_dir: str | os.PathLike,
                            settings: dict | None = None) -> list[Path]:
    """Write report.json, report.png and videos/<name>.png into ``output_dir``; return their paths.

    ``settings`` are added to the summary's (e.g. the command line's config and checkpoint). Each
    file is written to a temporary name and renamed, so a reader never sees a half-written one;
    report.json is written last. A failed write is one InferenceError.
    """
    output_dir = Path(output_dir)
    if settings:
        report.summary["settings"].update(settings)
    names = [video["name"] for video in report.summary["videos"]]
    paths = report_paths(output_dir, names)
    try:
        (output_dir / VIDEO_PICTURES).mkdir(parents=True, exist_ok=True)
        for strips, path in zip(report.videos, paths[2:]):
            save_png(strips_picture([strips]), path)
        save_png(overview_picture(report.summary, report.pairs, report.videos), paths[1])
    except OSError as error:
        raise InferenceError(f"cannot write the decoupling pictures to {output_dir}: {error.strerror or error}") from None
    write_text_output(paths[0], json.dumps(report.summary, indent=2) + "\n", what="the decoupling report")
    return paths


def format_summary(summary: dict) -> str:
    """The report as a text table: per video and overall, one line per decode (PSNR, slow and fast
    shares), the order score, and cross-reenactment's mean PSNRs."""
    entries = [*summary["videos"], {**summary["overall"], "name": "overall"}]
    width = max(len("overall"), *(len(entry["name"]) for entry in entries))
    lines = [f"{'video':<{width}}  {'decode':<15}  {'PSNR':>7}  {'slow':>5}  {'fast':>5}"]
    for entry in entries:
        for index, decode in enumerate(DECODES):
            what = "both latents" if decode == "full" else f"{decode} only"
            bands = entry["bands"][decode]
            lines.append(f"{entry['name'] if index == 0 else '':<{width}}  {what:<15}  {_cell(entry['psnr'][decode], 2):>7}  "
                         f"{_cell(bands['slow'], 2):>5}  {_cell(bands['fast'], 2):>5}")
    order = summary["overall"]["order"]
    if order["ratio"] is not None:
        lines.append(f"order: shuffling the frames moves the structure latent {_cell(order['ratio'], 3)} of the "
                     f"distance between videos (RMS {order['structure_change']:.3g} of {order['between_videos']:.3g})")
    else:
        lines.append(f"order: shuffling the frames moves the structure latent by RMS {order['structure_change']:.3g} "
                     "(the ratio to the distance between videos needs two or more videos)")
    cross = summary["overall"]["cross"]
    if cross:
        lines.append(f"cross-reenactment: PSNR to the structure source {_cell(cross['psnr_to_structure_source'], 2)} dB, "
                     f"to the dynamics source {_cell(cross['psnr_to_dynamics_source'], 2)} dB")
    return "\n".join(lines)


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


__all__ = ["BandScore", "DecouplingReport", "VideoStrips", "band_scores", "dct_basis", "decoupling_report",
           "format_summary", "report_paths", "shuffled_order", "split_temporal_bands", "unique_names",
           "write_decoupling_report", "DEFAULT_BAND_CUTOFF", "DECODES", "BANDS"]
