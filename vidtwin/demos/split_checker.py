"""Read the digit, the drift and the shake that two-speed Moving Digits clips show, and score what
an autoencoder's two latents hold by cross-reenacting pairs of clips.

The clips are :mod:`.two_speed`'s: a digit drifting 1 px per frame and shaking +-2 px on alternate
frames. For a clip (uint8 frames) :class:`SplitChecker` reads:

- **digit**: the Moving Digits checker's classifier (:class:`~.digit_checker.DigitChecker`,
  trained on the data set's training digit images), the majority over the frames;
- **drift** and **shake** from the track of the ink's centroid, fitted per axis by least squares
  as ``a + b t + c (-1)^t``: the slope ``b`` is the drift (the direction of the axis with the larger
  slope; none below ``DRIFT_MIN_SPEED``), ``|c|`` is the shake's amplitude (the shake is the axis
  with the larger amplitude; none when neither reaches ``SHAKE_MIN_AMPLITUDE``). Fitting both at
  once keeps each free of the other: over 16 frames ``t`` and ``(-1)^t`` are not orthogonal.

:func:`split_score` measures the split: seeded pairs (A, B) of clips that differ in digit, drift
and shake (:func:`split_pairs`) are cross-reenacted as ``vidtwin cross`` does, with the structure
of A and the dynamics of B, and the checker reports the share of crossed clips that show A's and
B's digit, drift and shake. Beside them: the checker's reading of the plain reconstructions of the
same clips (the ceiling of what the crossed clips can show) and of the real clips. ``vidtwin demo
check-split`` reports all of it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..errors import UserError
from ..hints import command
from .digit_checker import DigitChecker, centroids, data_settings, ink
from .moving_digits import DIRECTIONS
from .two_speed import COLUMNS, SHAKES

# Thresholds, halfway between what the data holds and nothing: the drift is 1 px per frame and the
# shake +-2 px, so a reading is "none" below half of either. On real clips (mp4, crf 10) the fitted
# slopes and amplitudes of the motions a clip has lie within 0.001 px of 1 and 2, and those of the
# motions it lacks within 0.001 px of 0 (1,200 validation clips of seed 11: every drift and shake
# read right), so the whole margin is left to the blurred or half-learnt motions of decoded clips.
DRIFT_MIN_SPEED = 0.5  # px per frame
SHAKE_MIN_AMPLITUDE = 1.0  # px
SHAKE_NAMES = {axis: name for name, axis in SHAKES.items()}  # axis (0: x, 1: y) or None -> shake name
# The targets on held-out clips (docs/benchmarks.md): shares of crossed clips showing what each split promises.
TARGETS = {
    "paper_split": {"digit_from_structure": 0.85, "drift_from_structure": 0.80, "shake_from_dynamics": 0.80},
    "content_motion_split": {"digit_from_structure": 0.85, "drift_from_dynamics": 0.80, "shake_from_dynamics": 0.80},
}


class CheckSplitError(ValueError, UserError):
    """A data folder or CSV that is not a two-speed Moving Digits set, or settings the score cannot use."""


@dataclass(frozen=True)
class SplitClip:
    path: Path
    digit: int  # what the clip shows
    drift: str
    shake: str


def track_motion(points: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(F, 2) centroids (NaN rows: empty frames) -> (slopes (2,) px per frame, shake amplitudes (2,) px)
    along x and y, from the least-squares fit ``a + b t + c (-1)^t``; None with fewer than 4 readable
    frames (too few to tell the three terms apart)."""
    valid = ~np.isnan(points).any(axis=1)
    if valid.sum() < 4:
        return None
    times = np.flatnonzero(valid).astype(np.float64)
    design = np.stack([np.ones_like(times), times, (-1.0) ** times], axis=1)  # (F', 3)
    coefficients = np.linalg.lstsq(design, points[valid], rcond=None)[0]  # (3, 2): rows a, b, c; columns x, y
    return coefficients[1], np.abs(coefficients[2])


def drift_of(slopes: np.ndarray) -> Optional[str]:
    """(2,) px per frame along x, y -> the direction of the faster axis, or None below DRIFT_MIN_SPEED."""
    axis = int(np.argmax(np.abs(slopes)))
    if abs(slopes[axis]) < DRIFT_MIN_SPEED:
        return None
    return next(name for name, vector in DIRECTIONS.items()
                if vector[axis] == np.sign(slopes[axis]) and vector[1 - axis] == 0)


def shake_of(amplitudes: np.ndarray) -> str:
    """(2,) px along x, y -> "horizontal" / "vertical" (the larger), or "none" below SHAKE_MIN_AMPLITUDE."""
    axis = int(np.argmax(amplitudes))
    return SHAKE_NAMES[axis] if amplitudes[axis] >= SHAKE_MIN_AMPLITUDE else SHAKE_NAMES[None]


def two_speed_settings(data_dir: Path) -> dict:
    """The settings of a two-speed data folder; CheckSplitError for any other folder."""
    settings = data_settings(data_dir)
    if not settings.get("two_speed"):
        raise CheckSplitError(f"{data_dir} is a Moving Digits set without the two speeds; make one with "
                              f"`{command('demo digits', Path(data_dir), '--two-speed')}`")
    return settings


class SplitChecker:
    """Reads the digit, the drift and the shake of two-speed clips (see the module docstring)."""

    def __init__(self, data_dir: Path):
        self.settings = two_speed_settings(data_dir)
        self.digit_checker = DigitChecker(data_dir)  # its classifier reads the digit

    def read(self, frames: np.ndarray) -> Tuple[Optional[int], Optional[str], Optional[str]]:
        """uint8 (F, H, W, 3) -> (digit, drift, shake); None for what cannot be read (an empty clip)."""
        digit, _ = self.digit_checker.read(frames)
        motion = track_motion(centroids(ink(frames)))
        if motion is None:
            return digit, None, None
        slopes, amplitudes = motion
        return digit, drift_of(slopes), shake_of(amplitudes)

    def score(self, items: Iterable[Tuple[np.ndarray, SplitClip]]) -> dict:
        """{"clips", "digit_accuracy", "drift_accuracy", "shake_accuracy", "all_accuracy"} over
        ``(frames, clip)`` items: how often the reading matches what the clip is labelled to show."""
        hits = np.zeros(4)
        count = 0
        for frames, clip in items:
            digit, drift, shake = self.read(frames)
            right = [digit == clip.digit, drift == clip.drift, shake == clip.shake]
            hits += [*right, all(right)]
            count += 1
        shares = [float(hit) / max(count, 1) for hit in hits]
        return {"clips": count, "digit_accuracy": shares[0], "drift_accuracy": shares[1],
                "shake_accuracy": shares[2], "all_accuracy": shares[3]}

    def score_crossed(self, crossed: Sequence[Tuple[np.ndarray, SplitClip, SplitClip]]) -> dict:
        """Shares of crossed clips ``(frames, structure source A, dynamics source B)`` that show A's or
        B's digit, drift and shake ("digit_from_structure": A's digit, ...), and of those that show
        all three of each split's targets ("paper_split": A's digit, A's drift and B's shake;
        "content_motion_split": A's digit, B's drift and B's shake). Pairs must differ in all three."""
        keys = [f"{part}_from_{source}" for part in ("digit", "drift", "shake") for source in ("structure", "dynamics")]
        hits = dict.fromkeys([*keys, *TARGETS], 0)
        for frames, structure, dynamics in crossed:
            reading = dict(zip(("digit", "drift", "shake"), self.read(frames)))
            shown = {f"{part}_from_{name}": reading[part] == getattr(source, part)
                     for part in reading for name, source in (("structure", structure), ("dynamics", dynamics))}
            for key in keys:
                hits[key] += int(shown[key])
            for split, parts in TARGETS.items():
                hits[split] += int(all(shown[key] for key in parts))
        count = max(len(crossed), 1)
        return {"pairs": len(crossed), **{key: value / count for key, value in hits.items()}}


def targets_met(crossed_figures: dict) -> dict:
    """{split: True when every share that split promises reaches its target}."""
    return {split: all(crossed_figures[key] >= target for key, target in parts.items())
            for split, parts in TARGETS.items()}


def clips_from_csv(path: Path) -> List[SplitClip]:
    """The clips a two-speed CSV lists (videos relative to the CSV's folder)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not set(COLUMNS) <= set(rows[0]):
        raise CheckSplitError(f"{path} is not a two-speed Moving Digits CSV with columns {', '.join(COLUMNS)}")
    return [SplitClip(Path(path).parent / row["videos"], int(row["digit"]), row["drift"], row["shake"]) for row in rows]


def split_pairs(clips: Sequence[SplitClip], count: int, seed: int = 0) -> List[Tuple[SplitClip, SplitClip]]:
    """``count`` seeded (structure source A, dynamics source B) pairs that differ in digit, drift and
    shake, so that every reading of a crossed clip tells which source it follows."""
    labels = [np.array([getattr(clip, part) for clip in clips]) for part in ("digit", "drift", "shake")]
    differ = np.logical_and.reduce([values[:, None] != values[None, :] for values in labels])  # (N, N): A x B
    candidates = np.flatnonzero(differ)
    if candidates.size == 0:
        raise CheckSplitError("the split score needs clips that differ in digit, drift and shake")
    chosen = np.random.default_rng(seed).choice(candidates, size=min(count, candidates.size), replace=False)
    return [(clips[index // len(clips)], clips[index % len(clips)]) for index in np.sort(chosen)]


def read_frames(clips: Iterable[SplitClip]) -> Iterable[Tuple[np.ndarray, SplitClip]]:
    """``(uint8 frames (F, H, W, 3), clip)`` per clip, read from its file as needed."""
    from ..data.video_io import read_video

    for clip in clips:
        yield read_video(clip.path)[0].numpy(), clip


def crossed_and_reconstructed(model, pairs: Sequence[Tuple[SplitClip, SplitClip]], progress: bool = True):
    """(crossed, reconstructed): ``(frames, A, B)`` per pair, decoded from A's structure latents
    with B's dynamics latents as ``vidtwin cross`` does (posterior means, the model's clip size), and
    ``(frames, clip)`` for every clip of the pairs, encoded and decoded whole. Each clip is encoded once.

    model: an eval-mode autoencoder (``vidtwin.load_model``).
    """
    import torch

    from ..inference import cross_reenact
    from ..inference.pipeline import decode_latents, encode_video, to_uint8_frames

    clips = list(dict.fromkeys(clip for pair in pairs for clip in pair))  # first-seen order
    latents, reconstructed, crossed = {}, [], []
    with torch.inference_mode():
        for clip in tqdm(clips, desc="encoding and reconstructing", unit="clip", disable=not progress):
            latents[clip] = encode_video(model, str(clip.path))
            video = decode_latents(model, latents[clip]).video  # (3, N, H, W)
            reconstructed.append((to_uint8_frames(video).numpy(), clip))  # frames (N, H, W, 3)
        for structure, dynamics in tqdm(pairs, desc="cross-reenacting", unit="pair", disable=not progress):
            video = cross_reenact(model, latents[structure], latents[dynamics]).video  # (3, N, H, W)
            crossed.append((to_uint8_frames(video).numpy(), structure, dynamics))
    return crossed, reconstructed


def split_score(checker: SplitChecker, model, clips: Sequence[SplitClip], pairs: int = 200, seed: int = 0,
                real: bool = True, progress: bool = True) -> dict:
    """The figures of ``vidtwin demo check-split``, as a plain dict:

    - "crossed": :meth:`SplitChecker.score_crossed` over ``pairs`` seeded pairs of ``clips``;
    - "reconstructed": :meth:`SplitChecker.score` of the plain reconstructions of the pairs' clips
      (the ceiling: a crossed clip can hardly show what a reconstruction loses);
    - "real": the same on the real ``clips`` (the checker's own accuracy), None when ``real`` is False;
    - "targets_met": :func:`targets_met`; "pairs_asked", "seed".
    """
    chosen = split_pairs(clips, pairs, seed)
    crossed, reconstructed = crossed_and_reconstructed(model, chosen, progress)
    crossed_figures = checker.score_crossed(crossed)
    real_figures = None
    if real:
        real_figures = checker.score(tqdm(read_frames(clips), total=len(clips), desc="checking real clips",
                                          unit="clip", disable=not progress))
    return {"pairs_asked": pairs, "seed": seed, "crossed": crossed_figures,
            "reconstructed": checker.score(reconstructed), "real": real_figures,
            "targets_met": targets_met(crossed_figures)}


__all__ = ["CheckSplitError", "DRIFT_MIN_SPEED", "SHAKE_MIN_AMPLITUDE", "SplitChecker", "SplitClip", "TARGETS",
           "clips_from_csv", "crossed_and_reconstructed", "drift_of", "read_frames", "shake_of", "split_pairs",
           "split_score", "targets_met", "track_motion", "two_speed_settings"]
