"""The Python inference API: videos of any length and size in, latents or videos out.

A video is kept as compact uint8 frames ``(N, H, W, 3)``; float model inputs are built one batch
at a time. Each clip of ``T`` frames (see :mod:`vidtwin.inference.clips`) becomes one model input
(``spatial="resize"``: resize the short side and center-crop to the model's size, the official
behaviour) or one input per tile (``spatial="tile"``: native resolution, see
:mod:`vidtwin.inference.tiling`). Model inputs are batched ``batch_clips`` at a time, run under
``torch.inference_mode`` and, for ``dtype="bf16"``/``"fp16"``, under ``torch.autocast`` on the
model's device; the modules themselves never cast. Latents are the posterior means (an eval-mode
model is deterministic), and every result is returned as float32 on the CPU.

Example::

    from vidtwin import load_model
    from vidtwin.inference import reconstruct_video, encode_video, decode_latents, to_uint8_frames

    model = load_model("configs/vidtwin.yaml", "hf://microsoft/vidtwin", device="cuda")
    result = reconstruct_video(model, "clip.mp4", spatial="tile", dtype="bf16", batch_clips=8)
    frames = to_uint8_frames(result.video)      # (N, H, W, 3) uint8, ready for write_video
    latents = encode_video(model, "clip.mp4")   # EncodedVideo; save with save_latents(...)
    again = decode_latents(model, latents, only="structure")
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from vidtwin.data.transforms import preprocess_clip
from vidtwin.data.video_io import read_video, sample_indices
from vidtwin.inference.clips import ClipLayout
from vidtwin.inference.latent_file import (
    TENSOR_NAMES,
    WEIGHTS_FINGERPRINT_KEY,
    EncodedVideo,
    config_to_dict,
    weights_fingerprint,
)
from vidtwin.inference.tiling import TileGrid, blend_tiles, iter_tiles, make_tile_grid
from vidtwin.models.vidtwin_ae import DECODE_PARTS

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SPATIAL_MODES = ("resize", "tile")


class InferenceError(ValueError):
    """A request that cannot be served (bad option, incompatible inputs); the message says why."""


# ----------------------------------------------------------------------------------------------
# runtime: device and precision
# ----------------------------------------------------------------------------------------------


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; asking for missing CUDA is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"--device {name} was requested but CUDA is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InferenceError(f"unknown device {name!r}; use cpu, cuda or auto") from None


def precision_context(device: torch.device, dtype: str = "fp32") -> contextlib.AbstractContextManager:
    """Autocast to bf16/fp16 on ``device`` (the model keeps fp32 weights); fp32 runs as is."""
    if dtype not in DTYPES:
        raise InferenceError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """``(3, N, H, W)`` float in [-1, 1] -> ``(N, H, W, 3)`` uint8 (clamped, rounded to nearest)."""
    scaled = ((video.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()  # [0, 255]
    return scaled.to(torch.uint8).permute(1, 2, 3, 0).contiguous()  # (N, H, W, 3)


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(3, N, H, W)`` float32 in [-1, 1]."""
    return frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, N, H, W)


# ----------------------------------------------------------------------------------------------
# sources and clip plans
# ----------------------------------------------------------------------------------------------


@dataclass
class SourceVideo:
    """Decoded frames of one video after temporal sampling."""

    frames: torch.Tensor  # (N, H, W, 3) uint8
    fps: float  # frame rate of ``frames`` (the sampled rate)
    name: str = ""  # file path or a label, for messages and metadata

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def load_source(
    video: str | os.PathLike | torch.Tensor | SourceVideo,
    fps: float | None = None,
    sample_fps: float | None = None,
    max_frames: int | None = None,
) -> SourceVideo:
    """A file path, uint8 ``(N, H, W, 3)`` frames (with ``fps``) or a :class:`SourceVideo`.

    ``sample_fps`` keeps every ``round(fps / sample_fps)``-th frame (the official sampling);
    ``max_frames`` keeps at most that many. Raises ``VideoReadError`` for unreadable files.
    """
    if isinstance(video, SourceVideo):
        return video
    if isinstance(video, (str, os.PathLike)):
        frames, fps_out = read_video(video, sample_fps=sample_fps, max_frames=max_frames)
        return SourceVideo(frames=frames, fps=fps_out, name=os.fspath(video))
    if not isinstance(video, torch.Tensor) or video.dtype != torch.uint8 or video.dim() != 4 or video.shape[-1] != 3:
        raise InferenceError("a video must be a file path or uint8 frames shaped (N, H, W, 3)")
    if fps is None:
        raise InferenceError("fps is required when the video is given as frames")
    if video.shape[0] == 0:
        raise InferenceError("the video has zero frames")
    indices = sample_indices(video.shape[0], fps, sample_fps, num_samples=max_frames)
    stride = indices[1] - indices[0] if len(indices) > 1 else 1
    return SourceVideo(frames=video[indices], fps=fps / stride, name="<frames>")


@dataclass(frozen=True)
class ClipPlan:
    """How one source video maps onto model inputs."""

    layout: ClipLayout
    spatial: str
    model_size: tuple[int, int]  # (H, W) of a model input
    original_size: tuple[int, int]  # (H, W) of the source frames
    tile_grid: TileGrid | None

    @property
    def units_per_clip(self) -> int:
        return self.tile_grid.num_tiles if self.tile_grid else 1

    @property
    def output_size(self) -> tuple[int, int]:
        return self.original_size if self.spatial == "tile" else self.model_size


def default_tile_overlap(model_size: tuple[int, int]) -> int:
    """A quarter of the smaller tile side: wide enough to hide seams, cheap enough (≈1.8x tiles)."""
    return min(model_size) // 4


def plan_clips(
    model: torch.nn.Module, num_frames: int, original_size: tuple[int, int], spatial: str, tile_overlap: int | None
) -> ClipPlan:
    if spatial not in SPATIAL_MODES:
        raise InferenceError(f"unknown spatial mode {spatial!r}; use one of {', '.join(SPATIAL_MODES)}")
    clip_len, height, width = model.input_size
    grid = None
    if spatial == "tile":
        overlap = default_tile_overlap((height, width)) if tile_overlap is None else int(tile_overlap)
        if not 0 <= overlap < min(height, width):
            raise InferenceError(f"--tile-overlap must be in [0, {min(height, width) - 1}] for {height}x{width} tiles, got {overlap}")
        grid = make_tile_grid(original_size[0], original_size[1], (height, width), overlap)
    return ClipPlan(ClipLayout(num_frames, clip_len), spatial, (height, width), tuple(original_size), grid)


def clip_reference(source: SourceVideo, plan: ClipPlan, clip_index: int) -> torch.Tensor:
    """One clip of the source as the model sees it, at the output size: ``(3, T, H_out, W_out)`` in [-1, 1]."""
    frames = source.frames[plan.layout.clip_frame_indices(clip_index)]  # (T, H, W, 3) uint8
    if plan.spatial == "resize":
        return preprocess_clip(frames, size=plan.model_size)  # (3, T, h, w)
    return frames_to_float(frames)  # (3, T, H, W)


def clip_model_inputs(reference: torch.Tensor, plan: ClipPlan) -> list[torch.Tensor]:
    """Model inputs of one clip: ``units_per_clip`` tensors ``(3, T, h, w)`` in [-1, 1] (views, no copies)."""
    if plan.tile_grid is None:
        return [reference]  # (3, T, h, w)
    return list(iter_tiles(reference, plan.tile_grid))  # num_tiles x (3, T, h, w)


def assemble_clip(outputs: Sequence[torch.Tensor], grid: TileGrid | None) -> torch.Tensor:
    """Decoded units of one clip (each ``(3, T, h, w)``) -> ``(3, T, H_out, W_out)``."""
    return outputs[0] if grid is None else blend_tiles(outputs, grid)


# ----------------------------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------------------------


def run_batched(
    items: Iterator[tuple[torch.Tensor, ...]],
    function: Callable[..., tuple[torch.Tensor, ...]],
    batch_size: int,
    device: torch.device,
    dtype: str,
    progress: tqdm | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Stack ``batch_size`` items, run ``function`` on the device, and yield per-item CPU float32 results.

    Each item is a tuple of tensors without a batch axis; ``function`` gets the stacked tuple
    (leading axis B) and returns a tuple of batched tensors. Order is preserved.
    """
    if batch_size < 1:
        raise InferenceError(f"--batch-clips must be >= 1, got {batch_size}")

    buffers: list[torch.Tensor] = []

    def flush(pending: list[tuple[torch.Tensor, ...]]) -> Iterator[tuple[torch.Tensor, ...]]:
        # Copy the items into batch buffers that are reused from batch to batch: fresh large
        # allocations cost page faults on every batch, which dominated small models on the CPU.
        if not buffers:
            buffers.extend(torch.empty((batch_size, *part.shape), dtype=part.dtype) for part in pending[0])
        for slot, item in enumerate(pending):
            for buffer, part in zip(buffers, item):
                buffer[slot].copy_(part)
        batch = [buffer[: len(pending)].to(device) for buffer in buffers]  # each (B, ...)
        with torch.inference_mode(), precision_context(device, dtype):
            results = function(*batch)
        results = [result.float().cpu() for result in results]
        if progress is not None:
            progress.update(len(pending))
        for index in range(len(pending)):
            yield tuple(result[index] for result in results)

    pending: list[tuple[torch.Tensor, ...]] = []
    for item in items:
        pending.append(item)
        if len(pending) == batch_size:
            yield from flush(pending)
            pending = []
    if pending:
        yield from flush(pending)


def _progress(plan: ClipPlan, desc: str, enabled: bool) -> tqdm:
    """A bar over the model inputs of a video: its clips, or its clips' tiles."""
    unit = "tile" if plan.tile_grid is not None else "clip"
    total = plan.layout.num_clips * plan.units_per_clip
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


def _check_part(only: str | None) -> None:
    if only not in DECODE_PARTS:
        raise InferenceError(f"only must be structure, dynamics or None, got {only!r}")


# ----------------------------------------------------------------------------------------------
# streaming reconstruction and decoding (used by the CLI and by evaluate to bound memory)
# ----------------------------------------------------------------------------------------------


@dataclass
class ClipResult:
    """One clip's reconstruction with the padding frames already dropped."""

    index: int
    output: torch.Tensor  # (3, t, H_out, W_out) float32 in about [-1, 1], t = real frames of the clip
    reference: torch.Tensor | None  # (3, t, H_out, W_out) the model-space input, or None when decoding


def iter_reconstruction(
    model: torch.nn.Module,
    source: SourceVideo,
    *,
    spatial: str = "resize",
    tile_overlap: int | None = None,
    batch_clips: int = 1,
    dtype: str = "fp32",
    only: str | None = None,
    progress: bool = False,
) -> Iterator[ClipResult]:
    """Reconstruct a video clip by clip (encode, then decode the posterior means)."""
    _check_part(only)
    plan = plan_clips(model, source.num_frames, source.size, spatial, tile_overlap)
    references: dict[int, torch.Tensor] = {}

    def units() -> Iterator[tuple[torch.Tensor]]:
        for clip_index in range(plan.layout.num_clips):
            references[clip_index] = clip_reference(source, plan, clip_index)
            for unit in clip_model_inputs(references[clip_index], plan):
                yield (unit,)

    def round_trip(video: torch.Tensor) -> tuple[torch.Tensor]:
        return (model.decode(model.encode(video), only=only),)

    bar = _progress(plan, f"reconstruct {os.path.basename(source.name)}", progress)
    outputs = run_batched(units(), round_trip, batch_clips, model_device(model), dtype, bar)
    try:
        for clip_index, decoded in enumerate(_group_units(outputs, plan)):
            valid = plan.layout.valid_frames(clip_index)
            reference = references.pop(clip_index)[:, :valid]  # (3, t, H_out, W_out)
            yield ClipResult(clip_index, assemble_clip(decoded, plan.tile_grid)[:, :valid], reference)
    finally:
        bar.close()


def _group_units(outputs: Iterator[tuple[torch.Tensor, ...]], plan: ClipPlan) -> Iterator[list[torch.Tensor]]:
    """Regroup per-unit outputs into per-clip lists of ``units_per_clip`` tensors."""
    group: list[torch.Tensor] = []
    for (output,) in outputs:
        group.append(output)
        if len(group) == plan.units_per_clip:
            yield group
            group = []


def _plan_of(encoded: EncodedVideo) -> ClipPlan:
    return ClipPlan(
        layout=encoded.layout,
        spatial=encoded.spatial,
        model_size=tuple(encoded.config["input_size"][1:]),
        original_size=encoded.original_size,
        tile_grid=encoded.tile_grid,
    )


def iter_decoded(
    model: torch.nn.Module,
    encoded: EncodedVideo,
    *,
    only: str | None = None,
    batch_clips: int = 1,
    dtype: str = "fp32",
    progress: bool = False,
    dynamics: EncodedVideo | None = None,
) -> Iterator[ClipResult]:
    """Decode an :class:`EncodedVideo` clip by clip; with ``dynamics``, take the dynamics from it."""
    _check_part(only)
    from vidtwin.models.vidtwin_ae import VidTwinLatents

    encoded.check_config(model.config)
    dynamics = encoded if dynamics is None else dynamics
    dynamics.check_config(model.config, what="the dynamics latents")
    plan = _plan_of(encoded)

    def units() -> Iterator[tuple[torch.Tensor, ...]]:
        for clip_index in range(plan.layout.num_clips):
            for tile_index in range(plan.units_per_clip):
                yield (
                    encoded.structure[clip_index, tile_index],
                    dynamics.dynamics_x[clip_index, tile_index],
                    dynamics.dynamics_y[clip_index, tile_index],
                )

    def decode(structure, dynamics_x, dynamics_y) -> tuple[torch.Tensor]:
        return (model.decode(VidTwinLatents(structure, dynamics_x, dynamics_y), only=only),)

    label = os.path.basename(encoded.source) or "latents"
    bar = _progress(plan, f"decode {label}", progress)
    outputs = run_batched(units(), decode, batch_clips, model_device(model), dtype, bar)
    try:
        for clip_index, decoded in enumerate(_group_units(outputs, plan)):
            valid = plan.layout.valid_frames(clip_index)
            yield ClipResult(clip_index, assemble_clip(decoded, plan.tile_grid)[:, :valid], None)
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------
# the public functions
# ----------------------------------------------------------------------------------------------


@dataclass
class VideoResult:
    """A decoded video and the model-space input it came from."""

    video: torch.Tensor  # (3, N, H, W) float32 in about [-1, 1] on the CPU
    fps: float
    inputs: torch.Tensor | None = None  # (3, N, H, W) the (resized or native) input; None when decoding

    @property
    def num_frames(self) -> int:
        return self.video.shape[1]


def _concat(results: Sequence[ClipResult], fps: float, keep_inputs: bool) -> VideoResult:
    video = torch.cat([r.output for r in results], dim=1)  # (3, N, H, W)
    inputs = torch.cat([r.reference for r in results], dim=1) if keep_inputs else None  # (3, N, H, W)
    return VideoResult(video=video, fps=fps, inputs=inputs)


def reconstruct_video(
    model: torch.nn.Module,
    video: str | os.PathLike | torch.Tensor | SourceVideo,
    *,
    fps: float | None = None,
    sample_fps: float | None = None,
    max_frames: int | None = None,
    spatial: str = "resize",
    tile_overlap: int | None = None,
    batch_clips: int = 1,
    dtype: str = "fp32",
    only: str | None = None,
    keep_inputs: bool = True,
    progress: bool = False,
) -> VideoResult:
    """Encode and decode a whole video; the result has exactly the sampled frame count.

    Args:
        model: an eval-mode VidTwin (see ``vidtwin.load_model``); its device is used.
        video: a file path, uint8 ``(N, H, W, 3)`` frames (then ``fps`` is required) or a SourceVideo.
        sample_fps: keep every ``round(fps / sample_fps)``-th frame first (official sampling).
        spatial: ``"resize"`` (model-size output) or ``"tile"`` (native-size output).
        tile_overlap: pixels of overlap between tiles; default a quarter of the tile side.
        batch_clips: model inputs (clips, or tiles of clips) per forward pass.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
        only: ``None``, ``"structure"`` or ``"dynamics"``: decode one latent alone.

    Returns:
        :class:`VideoResult` with ``video`` ``(3, N, H, W)`` float32 in about [-1, 1].
    """
    source = load_source(video, fps=fps, sample_fps=sample_fps, max_frames=max_frames)
    results = list(
        iter_reconstruction(
            model, source, spatial=spatial, tile_overlap=tile_overlap, batch_clips=batch_clips,
            dtype=dtype, only=only, progress=progress,
        )
    )
    return _concat(results, source.fps, keep_inputs)


def encode_video(
    model: torch.nn.Module,
    video: str | os.PathLike | torch.Tensor | SourceVideo,
    *,
    fps: float | None = None,
    sample_fps: float | None = None,
    max_frames: int | None = None,
    spatial: str = "resize",
    tile_overlap: int | None = None,
    batch_clips: int = 1,
    dtype: str = "fp32",
    progress: bool = False,
) -> EncodedVideo:
    """Structure and dynamics latents (posterior means) of every clip (and tile) of a video.

    Returns:
        :class:`~vidtwin.inference.latent_file.EncodedVideo`; write it with ``save_latents``.
    """
    source = load_source(video, fps=fps, sample_fps=sample_fps, max_frames=max_frames)
    plan = plan_clips(model, source.num_frames, source.size, spatial, tile_overlap)

    def units() -> Iterator[tuple[torch.Tensor]]:
        for clip_index in range(plan.layout.num_clips):
            for unit in clip_model_inputs(clip_reference(source, plan, clip_index), plan):
                yield (unit,)

    def encode(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        latents = model.encode(batch)
        return tuple(getattr(latents, name) for name in TENSOR_NAMES)

    bar = _progress(plan, f"encode {os.path.basename(source.name)}", progress)
    with bar:
        per_unit = list(run_batched(units(), encode, batch_clips, model_device(model), dtype, bar))
    stacked = [torch.stack(parts) for parts in zip(*per_unit)]  # each (clips*units, ...)
    by_clip = [t.unflatten(0, (plan.layout.num_clips, plan.units_per_clip)) for t in stacked]  # (clips, units, ...)
    return EncodedVideo(
        *by_clip,
        fps=source.fps,
        num_frames=source.num_frames,
        clip_len=plan.layout.clip_len,
        original_size=plan.original_size,
        output_size=plan.output_size,
        spatial=spatial,
        config=config_to_dict(model.config),
        tile_grid=plan.tile_grid,
        source=os.path.basename(source.name),
        extra={WEIGHTS_FINGERPRINT_KEY: weights_fingerprint(model)},  # decode can tell other weights apart
    )


def decode_latents(
    model: torch.nn.Module,
    encoded: EncodedVideo,
    *,
    only: str | None = None,
    batch_clips: int = 1,
    dtype: str = "fp32",
    progress: bool = False,
) -> VideoResult:
    """Rebuild a video from its latents alone (``only`` decodes one part).

    Raises:
        LatentFileError: the latents come from a model with another config.
    """
    results = list(iter_decoded(model, encoded, only=only, batch_clips=batch_clips, dtype=dtype, progress=progress))
    return _concat(results, encoded.fps, keep_inputs=False)


def check_cross_compatible(structure: EncodedVideo, dynamics: EncodedVideo) -> None:
    """Raise :class:`InferenceError` unless the two encodings can be mixed clip by clip."""
    if structure.config_sha256 != dynamics.config_sha256:
        raise InferenceError("the structure and dynamics latents come from models with different configs")
    if structure.spatial != dynamics.spatial:
        raise InferenceError(
            f"the structure latents use --spatial {structure.spatial} and the dynamics latents --spatial {dynamics.spatial}; use one mode"
        )
    if structure.tile_grid != dynamics.tile_grid:
        raise InferenceError(
            f"tiled cross-reenactment needs videos of the same size, got {structure.original_size} and "
            f"{dynamics.original_size}; use --spatial resize"
        )


def cross_reenact(
    model: torch.nn.Module,
    structure: str | os.PathLike | torch.Tensor | SourceVideo | EncodedVideo,
    dynamics: str | os.PathLike | torch.Tensor | SourceVideo | EncodedVideo,
    *,
    fps: float | None = None,
    sample_fps: float | None = None,
    max_frames: int | None = None,
    spatial: str = "resize",
    tile_overlap: int | None = None,
    batch_clips: int = 1,
    dtype: str = "fp32",
    progress: bool = False,
) -> VideoResult:
    """Decode the structure latents of one video with the dynamics latents of another.

    Each source is a video (encoded here with the given options) or an :class:`EncodedVideo`.
    The result has the shorter video's frame count and the structure video's frame rate.
    """

    def as_encoded(item) -> EncodedVideo:
        if isinstance(item, EncodedVideo):
            return item
        return encode_video(
            model, item, fps=fps, sample_fps=sample_fps, max_frames=max_frames, spatial=spatial,
            tile_overlap=tile_overlap, batch_clips=batch_clips, dtype=dtype, progress=progress,
        )

    structure_latents, dynamics_latents = as_encoded(structure), as_encoded(dynamics)
    check_cross_compatible(structure_latents, dynamics_latents)
    num_frames = min(structure_latents.num_frames, dynamics_latents.num_frames)
    if abs(structure_latents.fps - dynamics_latents.fps) > 1e-3:
        logger.warning(
            "structure video runs at %.3f fps and dynamics video at %.3f fps; the output uses %.3f",
            structure_latents.fps, dynamics_latents.fps, structure_latents.fps,
        )
    structure_latents = structure_latents.truncated(num_frames)
    dynamics_latents = dynamics_latents.truncated(num_frames)
    results = list(
        iter_decoded(
            model, structure_latents, batch_clips=batch_clips, dtype=dtype, progress=progress,
            dynamics=dynamics_latents,
        )
    )
    return _concat(results, structure_latents.fps, keep_inputs=False)


def model_space_frames(
    model: torch.nn.Module,
    source: SourceVideo,
    *,
    spatial: str = "resize",
    tile_overlap: int | None = None,
) -> torch.Tensor:
    """The frames the model is asked to reproduce (resized and cropped, or native), as uint8 ``(N, H, W, 3)``.

    Used for side-by-side videos; equals ``to_uint8_frames(reconstruct_video(...).inputs)``.
    """
    plan = plan_clips(model, source.num_frames, source.size, spatial, tile_overlap)
    clips = [
        to_uint8_frames(clip_reference(source, plan, index)[:, : plan.layout.valid_frames(index)])
        for index in range(plan.layout.num_clips)
    ]
    return torch.cat(clips)  # (N, H, W, 3)
