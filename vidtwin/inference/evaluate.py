"""Reconstruction quality of many videos: per-frame PSNR, SSIM and LPIPS, tables, JSON and plots.

The metric definitions are the official evaluation's (see :mod:`vidtwin.metrics`): per frame, PSNR
and SSIM (Gaussian window 11, sigma 1.5) on [0, 1], LPIPS-VGG on [-1, 1]; the reconstruction is
clamped to [-1, 1]. The reference is the model-space input: with ``spatial="resize"`` the resized
and center-cropped frames, with ``spatial="tile"`` the native frames. Padding frames added to the
last clip are not scored (the official script scores them; they would repeat the last frame).

Two sources of reconstructions:

- a model: each video is read, reconstructed and scored clip by clip (memory does not grow with
  the video's length: only the per-frame metrics accumulate);
- pairs listed in a CSV with a ``reconstruction`` column: existing videos are scored against
  their originals (no model needed), both read a chunk of frames at a time. An original whose
  size differs from its reconstruction is resized and center-cropped to it, as the model input
  would have been.

Outputs in ``output_dir``: ``metrics.csv`` (one row per video), ``per_frame.csv``, ``summary.json``
(means and the settings used) and, with ``plots=True``, ``plots/<name>.png`` (per-frame PSNR curve
above a grid of input/output frames). With a :class:`~vidtwin.inference.fvd_reconstruction.ReconstructionFVD`
the chunks are also cut into FVD clips, and the set's reconstruction FVD and its protocol join
summary.json and a last row of metrics.csv.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from vidtwin.atomic_io import atomic_path, current_umask, temp_prefix
from vidtwin.data.transforms import preprocess_clip
from vidtwin.data.video_io import VideoReadError, is_video_file
from vidtwin.inference.options import InferenceError, InferenceOptions
from vidtwin.inference.pipeline import frames_to_float, iter_reconstruction, opened_source, to_uint8_frames
from vidtwin.inference.sources import VideoFileSource
from vidtwin.metrics import SSIM_WINDOW, video_metrics

if TYPE_CHECKING:
    from vidtwin.inference.fvd_reconstruction import ReconstructionFVD

logger = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "lpips")
REPORT_FILES = ("metrics.csv", "per_frame.csv", "summary.json")
GRID_FRAMES = 4  # frames shown in each plot's input/output grid
PAIR_CHUNK_FRAMES = 16  # frames scored at a time in pair mode
FVD_ROW = "(all videos)"  # the metrics.csv row that holds the set's FVD


@dataclass
class EvalItem:
    """One video to score: the original, and an existing reconstruction or None (use the model)."""

    path: str
    reconstruction: str | None = None

    @property
    def name(self) -> str:
        return Path(self.path).stem


@dataclass
class VideoScores:
    """Per-frame metrics of one video, and what went wrong when it could not be scored."""

    item: EvalItem
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (N,)
    fps: float = 0.0
    error: str | None = None
    grid_inputs: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8 frames for the plot
    grid_outputs: list[np.ndarray] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.per_frame.get("psnr", ()))

    def mean(self, metric: str) -> float:
        values = self.per_frame.get(metric)
        return float(np.mean(values)) if values is not None and len(values) else float("nan")


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------


def list_eval_items(source: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> list[EvalItem]:
    """One video file, the videos of a directory (sorted, top level) or the rows of a CSV.

    A CSV names the original in a column ``path`` or ``videos`` (the official meta files) or else
    its first column, and optionally an existing reconstruction in ``reconstruction``. Relative
    paths are resolved against ``data_dir`` (default: the CSV's folder).
    """
    source = Path(source)
    if source.is_dir():
        items = [EvalItem(str(p)) for p in sorted(source.iterdir()) if p.is_file() and is_video_file(p)]
        if not items:
            raise InferenceError(f"{source} contains no video files")
        return items
    if not source.is_file():
        raise InferenceError(f"input {source} does not exist")
    if is_video_file(source):
        return [EvalItem(str(source))]
    if source.suffix.lower() != ".csv":
        raise InferenceError(f"evaluate --input must be a video, a directory of videos or a .csv list, got {source}")
    root = Path(data_dir) if data_dir is not None else source.parent
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InferenceError(f"{source} is not UTF-8 text (byte {error.start}); save the CSV as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise InferenceError(f"{source} is empty; expected a header row with a 'path' column")
    path_column = next((c for c in ("path", "videos") if c in reader.fieldnames), reader.fieldnames[0])
    items = []
    for row in reader:
        if not (row.get(path_column) or "").strip():
            continue
        original = root / row[path_column].strip()
        rec = (row.get("reconstruction") or "").strip()
        items.append(EvalItem(str(original), str(root / rec) if rec else None))
    if not items:
        raise InferenceError(f"{source} lists no videos")
    return items


# ----------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------


def _grid_positions(num_frames: int) -> list[int]:
    return sorted({round(i) for i in np.linspace(0, num_frames - 1, min(GRID_FRAMES, num_frames))})


def _accumulate(
    scores: VideoScores,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    lpips_model: Callable | None,
    grid_positions: list[int],
    fvd: ReconstructionFVD | None = None,
) -> None:
    """Score ``(reference, output)`` chunks ``(3, t, H, W)`` in [-1, 1], in frame order; ``fvd`` gets them too."""
    chunks: dict[str, list[np.ndarray]] = {}
    start = 0
    for reference, output in pairs:
        height, width = reference.shape[-2:]
        if min(height, width) < SSIM_WINDOW:
            raise InferenceError(
                f"{scores.item.path}: frames of {height}x{width} are smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} "
                "window; score it with --spatial resize"
            )
        values = video_metrics(reference[None], output[None], lpips_model)  # metric -> (1, t)
        if fvd is not None:
            fvd.add(reference, output)
        for name, per_frame in values.items():
            chunks.setdefault(name, []).append(per_frame.reshape(-1))
        count = reference.shape[1]
        for position in grid_positions:
            if start <= position < start + count:
                scores.grid_inputs.append(to_uint8_frames(reference[:, position - start, None])[0].numpy())
                scores.grid_outputs.append(to_uint8_frames(output[:, position - start, None])[0].numpy())
        start += count
    scores.per_frame = {name: np.concatenate(parts) for name, parts in chunks.items()}


def _pairs_from_files(item: EvalItem, options: InferenceOptions) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], float, int]:
    """(reference, reconstruction) chunks of an original and an existing reconstruction file, read as they are scored."""
    original = VideoFileSource(item.path, sample_fps=options.sample_fps, max_frames=options.max_frames)
    reconstruction = VideoFileSource(item.reconstruction, max_frames=options.max_frames)
    num_frames = original.num_frames
    if num_frames != reconstruction.num_frames:
        original.close()
        reconstruction.close()
        raise InferenceError(
            f"{item.path} has {num_frames} (sampled) frames but its reconstruction "
            f"{item.reconstruction} has {reconstruction.num_frames}; use the same --sample-fps as for reconstruct"
        )
    size = reconstruction.size

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        with original, reconstruction:
            for start in range(0, num_frames, PAIR_CHUNK_FRAMES):
                positions = range(start, min(start + PAIR_CHUNK_FRAMES, num_frames))
                part = original.frames_at(positions)  # (t, H, W, 3)
                reference = frames_to_float(part) if original.size == size else preprocess_clip(part, size)
                yield reference, frames_to_float(reconstruction.frames_at(positions))

    return chunks(), original.fps, num_frames


def score_video(
    item: EvalItem,
    model: torch.nn.Module | None,
    lpips_model: Callable | None,
    options: InferenceOptions | None = None,
    fvd: ReconstructionFVD | None = None,
    **option_overrides,
) -> VideoScores:
    """Per-frame metrics of one video, read and scored clip by clip.

    ``options`` and keywords as in :func:`~vidtwin.inference.pipeline.reconstruct_video`. ``fvd``
    (after its ``start_video``) receives every scored chunk. Raises VideoReadError /
    InferenceError for a bad video.
    """
    options = InferenceOptions.of(options, **option_overrides)
    scores = VideoScores(item)
    if item.reconstruction is not None:
        pairs, scores.fps, num_frames = _pairs_from_files(item, options)
        _accumulate(scores, pairs, lpips_model, _grid_positions(num_frames), fvd)
        return scores
    if model is None:
        raise InferenceError(f"{item.path} has no reconstruction listed, so --config and --ckpt are needed")
    with opened_source(item.path, options) as source:
        scores.fps = source.fps
        results = iter_reconstruction(model, source, options)
        pairs = ((r.reference, r.output) for r in results)
        _accumulate(scores, pairs, lpips_model, _grid_positions(source.num_frames), fvd)
    return scores


def evaluate_videos(
    items: list[EvalItem],
    model: torch.nn.Module | None = None,
    lpips_model: Callable | None = None,
    options: InferenceOptions | None = None,
    fvd: ReconstructionFVD | None = None,
    **option_overrides,
) -> list[VideoScores]:
    """Score every item; a video that fails is kept with its ``error`` and the others continue.

    ``fvd`` accumulates reconstruction FVD statistics over the videos scored to the end.
    """
    options = InferenceOptions.of(options, **option_overrides)
    all_scores = []
    for item in tqdm(items, desc="videos", unit="video", disable=not options.progress or len(items) < 2, dynamic_ncols=True):
        if fvd is not None:
            fvd.start_video()
        try:
            all_scores.append(score_video(item, model, lpips_model, options, fvd))
        except (VideoReadError, InferenceError) as error:
            all_scores.append(VideoScores(item, error=str(error)))
        if fvd is not None:
            fvd.end_video(scored=all_scores[-1].error is None)
    return all_scores


# ----------------------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------------------


def _format(value: float, digits: int = 4) -> str:
    return "inf" if value == math.inf else ("nan" if math.isnan(value) else f"{value:.{digits}f}")


def _json_number(value: float) -> float | str | None:
    """JSON has no infinity: identical frames' PSNR is written as the string "inf"."""
    if math.isnan(value):
        return None
    return "inf" if math.isinf(value) else value


def summarize(all_scores: list[VideoScores], settings: dict, fvd: dict | None = None) -> dict:
    """Means over videos (of per-video means) and over all frames, the set's FVD if given, and the settings."""
    scored = [s for s in all_scores if s.error is None]
    metrics = [m for m in METRICS if any(m in s.per_frame for s in scored)]
    summary: dict = {"videos": len(all_scores), "videos_scored": len(scored), "frames": sum(s.num_frames for s in scored)}
    for metric in metrics:
        per_video = [s.mean(metric) for s in scored]
        every_frame = np.concatenate([s.per_frame[metric] for s in scored])
        summary[f"{metric}_mean_over_videos"] = _json_number(float(np.mean(per_video)))
        summary[f"{metric}_mean_over_frames"] = _json_number(float(np.mean(every_frame)))
    if fvd is not None:
        summary["fvd"] = fvd["fvd"]
        summary["fvd_protocol"] = fvd["protocol"]
        if fvd.get("warnings"):
            summary["fvd_warnings"] = fvd["warnings"]
    summary["failed"] = [{"video": s.item.path, "error": s.error} for s in all_scores if s.error]
    summary["settings"] = settings
    return summary


def _plot_names(all_scores: list[VideoScores]) -> list[str]:
    """One plot name per video: its stem, or its file name where stems repeat (``a.mp4``, ``a.mkv``)."""
    stems = [s.item.name for s in all_scores]
    return [stem if stems.count(stem) == 1 else Path(s.item.path).name for stem, s in zip(stems, all_scores)]


def report_paths(output_dir: str | os.PathLike, items: list[EvalItem], plots: bool = False) -> list[Path]:
    """Every file that :func:`write_reports` may write for ``items``."""
    output_dir = Path(output_dir)
    names = _plot_names([VideoScores(item) for item in items]) if plots else []
    return [output_dir / name for name in REPORT_FILES] + [output_dir / "plots" / f"{name}.png" for name in names]


def _write_report_files(all_scores: list[VideoScores], folder: Path, summary: dict, plots: bool) -> list[Path]:
    """metrics.csv, per_frame.csv, summary.json and plots/ into ``folder``; returns the paths relative to it."""
    table = io.StringIO()
    writer = csv.writer(table)
    with_fvd = "fvd" in summary  # one number for the whole set: its own column, filled on a last row
    writer.writerow(["video", "path", "frames", "fps", *METRICS, "error", *(["fvd"] if with_fvd else [])])
    for s in all_scores:
        values = [_format(s.mean(m), 6) if m in s.per_frame else "" for m in METRICS]
        writer.writerow([s.item.name, s.item.path, s.num_frames, f"{s.fps:.3f}", *values, s.error or "", *([""] if with_fvd else [])])
    if with_fvd:
        writer.writerow([FVD_ROW, "", summary["frames"], "", *[""] * len(METRICS), "", _format(summary["fvd"], 6)])
    (folder / "metrics.csv").write_text(table.getvalue(), encoding="utf-8", newline="")

    frames = io.StringIO()
    writer = csv.writer(frames)
    writer.writerow(["video", "frame", *METRICS])
    for s in all_scores:
        for index in range(s.num_frames):
            row = [_format(float(s.per_frame[m][index]), 6) if m in s.per_frame else "" for m in METRICS]
            writer.writerow([s.item.name, index, *row])
    (folder / "per_frame.csv").write_text(frames.getvalue(), encoding="utf-8", newline="")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    written = [Path(name) for name in REPORT_FILES]
    if plots:
        for s, name in zip(all_scores, _plot_names(all_scores)):
            if s.error is None:
                plot_video(s, folder / "plots" / f"{name}.png")
                written.append(Path("plots") / f"{name}.png")
    return written


def write_reports(all_scores: list[VideoScores], output_dir: str | os.PathLike, settings: dict, plots: bool = False,
                  fvd: dict | None = None) -> dict:
    """Write metrics.csv, per_frame.csv, summary.json (and plots/); return the summary.

    ``fvd`` (``{"fvd", "protocol"}`` of :class:`~vidtwin.inference.fvd_reconstruction.ReconstructionFVD`)
    goes into summary.json as ``fvd`` and ``fvd_protocol``, and into metrics.csv as an ``fvd``
    column filled on a last row named ``(all videos)``.

    The set is complete or absent: every file is written into a hidden folder beside
    ``output_dir`` first, which then becomes ``output_dir`` (or, when that exists, whose files are
    renamed into it). A failed write (a full disk) leaves nothing and raises ``InferenceError``.
    """
    output_dir = Path(output_dir)
    summary = summarize(all_scores, settings, fvd)
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=temp_prefix(output_dir.name, "")))
        staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; the reports are for colleagues too
    except OSError as error:
        raise InferenceError(f"cannot write the reports to {output_dir}: {error.strerror or error}") from None
    try:
        written = _write_report_files(all_scores, staging, summary, plots)
        if not output_dir.exists():
            os.rename(staging, output_dir)
        else:
            if len(written) > len(REPORT_FILES):
                (output_dir / "plots").mkdir(exist_ok=True)
            for relative in written:
                os.replace(staging / relative, output_dir / relative)
    except OSError as error:
        raise InferenceError(f"cannot write the reports to {output_dir}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def format_table(all_scores: list[VideoScores], summary: dict) -> str:
    """A fixed-width text table: one row per video and a mean row."""
    metrics = [m for m in METRICS if any(m in s.per_frame for s in all_scores)]
    width = max([len("mean over videos")] + [len(s.item.name) for s in all_scores])
    lines = [f"{'video':<{width}}  {'frames':>6}  " + "  ".join(f"{m.upper():>8}" for m in metrics)]
    for s in all_scores:
        if s.error:
            lines.append(f"{s.item.name:<{width}}  {'-':>6}  failed: {s.error}")
            continue
        lines.append(f"{s.item.name:<{width}}  {s.num_frames:>6}  " + "  ".join(f"{_format(s.mean(m)):>8}" for m in metrics))
    means = [summary.get(f"{m}_mean_over_videos") for m in metrics]
    lines.append(
        f"{'mean over videos':<{width}}  {summary['frames']:>6}  "
        + "  ".join(f"{(v if isinstance(v, str) else _format(v if v is not None else math.nan)):>8}" for v in means)
    )
    return "\n".join(lines)


def plot_video(scores: VideoScores, path: Path) -> None:
    """Per-frame PSNR curve above rows of input and output frames (matplotlib, Agg backend)."""
    from vidtwin.optional import require

    matplotlib = require("matplotlib", "plots", "--plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = max(1, len(scores.grid_inputs))
    figure = plt.figure(figsize=(3 * columns, 7.5), constrained_layout=True)
    grid = figure.add_gridspec(3, columns, height_ratios=[1.0, 1.0, 1.0])
    curve = figure.add_subplot(grid[0, :])
    psnr = np.minimum(scores.per_frame["psnr"], 100.0)  # draw identical frames (inf dB) at 100 dB
    curve.plot(np.arange(len(psnr)), psnr, linewidth=1.2)
    curve.set_xlabel("frame")
    curve.set_ylabel("PSNR (dB)")
    curve.set_title(f"{scores.item.name}: mean PSNR {_format(scores.mean('psnr'), 2)} dB, SSIM {_format(scores.mean('ssim'))}")
    curve.grid(alpha=0.3)
    positions = _grid_positions(scores.num_frames)
    for column, (frame_in, frame_out) in enumerate(zip(scores.grid_inputs, scores.grid_outputs)):
        for row, (image, label) in enumerate(((frame_in, "input"), (frame_out, "output")), start=1):
            axis = figure.add_subplot(grid[row, column])
            axis.imshow(image)
            axis.set_axis_off()
            axis.set_title(f"{label}, frame {positions[column]}", fontsize=9)
    try:
        with atomic_path(path, suffix=".png") as temp:
            figure.savefig(temp, dpi=80)
    finally:
        plt.close(figure)
