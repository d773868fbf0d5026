"""The Python inference API: videos of any length and size in, latents or videos out.

Videos stream: a file is decoded clip by clip (see :mod:`vidtwin.inference.sources`), each clip of
``T`` frames (see :mod:`vidtwin.inference.clips`) becomes one model input (``spatial="resize"``:
resize the short side and center-crop to the model's size, the official behaviour) or one input
per tile (``spatial="tile"``: native resolution, see :mod:`vidtwin.inference.tiling`), and the
``iter_*`` functions yield decoded clips as they come, so memory does not grow with the video's
length. Model inputs are batched ``batch_clips`` at a time, run under ``torch.inference_mode`` and,
for bf16/fp16 (``dtype="auto"`` picks what the hardware runs natively, see
:mod:`vidtwin.inference.options`), under ``torch.autocast`` on the model's device; the modules
themselves never cast; with ``compile=True`` the model's encode and decode run through
``torch.compile`` at one fixed batch shape (see :mod:`vidtwin.inference.compiled`). Latents are
the posterior means of a Gaussian (kl) model or the quantized codes of an FSQ model (an eval-mode
model is deterministic either way), and every result is returned as float32 on the CPU.

Every function takes its settings as an :class:`InferenceOptions` object, as keywords, or both
(keywords replace fields of the object).

Example::

    from vidtwin import load_model
    from vidtwin.inference import reconstruct_video, encode_video, decode_latents, to_uint8_frames

    model = load_model("configs/vidtwin.yaml", "hf://microsoft/vidtwin", device="cuda")
    result = reconstruct_video(model, "clip.mp4", spatial="tile", batch_clips=8)
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
from vidtwin.inference.clips import ClipLayout
from vidtwin.inference.compiled import autoencoder_calls
from vidtwin.latents.latent_file import (
    WEIGHTS_FINGERPRINT_KEY,
    EncodedVideo,
    config_to_dict,
    weights_fingerprint,
)
from vidtwin.inference.options import (  # noqa: F401  (re-exported: the pipeline's public names)
    DTYPE_CHOICES,
    DTYPES,
    SPATIAL_MODES,
    InferenceError,
    InferenceOptions,
    precision_context,
    resolve_device,
    resolve_dtype,
)
from vidtwin.inference.sources import FrameSource, SourceVideo, VideoFileSource, load_source  # noqa: F401
from vidtwin.inference.tiling import TileGrid, blend_tiles, iter_tiles, make_tile_grid
from vidtwin.models.config import LATENT_NAMES
from vidtwin.models.vidtwin_ae import DECODE_PARTS

logger = logging.getLogger(__name__)

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
# clip plans
# ----------------------------------------------------------------------------------------------


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


def clip_reference(source: FrameSource, plan: ClipPlan, clip_index: int) -> torch.Tensor:
    """One clip of the source as the model sees it, at the output size: ``(3, T, H_out, W_out)`` in [-1, 1]."""
    frames = source.frames_at(plan.layout.clip_frame_indices(clip_index))  # (T, H, W, 3) uint8
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
    (leading axis B) and returns a tuple of batched tensors. Order is preserved, and items are
    pulled from ``items`` only as batches fill up, so a lazy iterator streams.
    """
    if batch_size < 1:
        raise InferenceError(f"--batch-clips must be >= 1, got {batch_size}")
    dtype = resolve_dtype(dtype, device)

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


@contextlib.contextmanager
def opened_source(
    video: str | os.PathLike | torch.Tensor | FrameSource, options: InferenceOptions, fps: float | None = None
) -> Iterator[FrameSource]:
    """:func:`load_source` with the options' sampling; a file opened here is closed on leaving."""
    source = load_source(video, fps=fps, sample_fps=options.sample_fps, max_frames=options.max_frames)
    try:
        yield source
    finally:
        if source is not video:
            source.close()


# ----------------------------------------------------------------------------------------------
# streaming: one clip at a time (what the command line writes as it goes)
# ----------------------------------------------------------------------------------------------


@dataclass
class ClipResult:
    """One clip's reconstruction with the padding frames already dropped."""

    index: int
    output: torch.Tensor  # (3, t, H_out, W_out) float32 in about [-1, 1], t = real frames of the clip
    reference: torch.Tensor | None  # (3, t, H_out, W_out) the model-space input, or None when decoding


def iter_reconstruction(
    model: torch.nn.Module,
    source: FrameSource,
    options: InferenceOptions | None = None,
    *,
    only: str | None = None,
    **option_overrides,
) -> Iterator[ClipResult]:
    """Reconstruct a video clip by clip (encode, then decode the latents: posterior means or FSQ codes).

    ``source`` is already sampled (see :func:`load_source`), so only the options' ``spatial``,
    ``tile_overlap``, ``batch_clips``, ``dtype``, ``progress`` and ``compile`` apply. Frames are read
    as the batches need them; at most ``batch_clips`` clips are held at once.
    """
    options = InferenceOptions.of(options, **option_overrides)
    _check_part(only)
    plan = plan_clips(model, source.num_frames, source.size, options.spatial, options.tile_overlap)
    references: dict[int, torch.Tensor] = {}

    def units() -> Iterator[tuple[torch.Tensor]]:
        for clip_index in range(plan.layout.num_clips):
            references[clip_index] = clip_reference(source, plan, clip_index)
            for unit in clip_model_inputs(references[clip_index], plan):
                yield (unit,)

    autoencoder = autoencoder_calls(model, options)

    def round_trip(video: torch.Tensor) -> tuple[torch.Tensor]:
        return (autoencoder.decode(autoencoder.encode(video), only=only),)

    bar = _progress(plan, f"reconstruct {os.path.basename(source.name)}", options.progress)
    outputs = run_batched(units(), round_trip, options.batch_clips, model_device(model), options.dtype, bar)
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
    options: InferenceOptions | None = None,
    *,
    only: str | None = None,
    dynamics: EncodedVideo | None = None,
    **option_overrides,
) -> Iterator[ClipResult]:
    """Decode an :class:`EncodedVideo` clip by clip; with ``dynamics``, take the dynamics from it.

    Only the options' ``batch_clips``, ``dtype``, ``progress`` and ``compile`` apply (the rest is in
    the latents).
    """
    options = InferenceOptions.of(options, **option_overrides)
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

    autoencoder = autoencoder_calls(model, options)

    def decode(structure, dynamics_x, dynamics_y) -> tuple[torch.Tensor]:
        return (autoencoder.decode(VidTwinLatents(structure, dynamics_x, dynamics_y), only=only),)

    label = os.path.basename(encoded.source) or "latents"
    bar = _progress(plan, f"decode {label}", options.progress)
    outputs = run_batched(units(), decode, options.batch_clips, model_device(model), options.dtype, bar)
    try:
        for clip_index, decoded in enumerate(_group_units(outputs, plan)):
            valid = plan.layout.valid_frames(clip_index)
            yield ClipResult(clip_index, assemble_clip(decoded, plan.tile_grid)[:, :valid], None)
    finally:
        bar.close()


def iter_model_space_frames(
    model: torch.nn.Module, source: FrameSource, options: InferenceOptions | None = None, **option_overrides
) -> Iterator[torch.Tensor]:
    """The frames the model is asked to reproduce (resized and cropped, or native), clip by clip.

    Yields uint8 ``(t, H_out, W_out, 3)`` per clip, ``t`` its real frames; used for side-by-side
    videos (equal to ``to_uint8_frames(clip.reference)`` of :func:`iter_reconstruction`).
    """
    options = InferenceOptions.of(options, **option_overrides)
    plan = plan_clips(model, source.num_frames, source.size, options.spatial, options.tile_overlap)
    for index in range(plan.layout.num_clips):
        yield to_uint8_frames(clip_reference(source, plan, index)[:, : plan.layout.valid_frames(index)])


# ----------------------------------------------------------------------------------------------
# whole videos
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


def _concat(results: Iterator[ClipResult], fps: float, keep_inputs: bool) -> VideoResult:
    results = list(results)
    video = torch.cat([r.output for r in results], dim=1)  # (3, N, H, W)
    inputs = torch.cat([r.reference for r in results], dim=1) if keep_inputs else None  # (3, N, H, W)
    return VideoResult(video=video, fps=fps, inputs=inputs)


def reconstruct_video(
    model: torch.nn.Module,
    video: str | os.PathLike | torch.Tensor | FrameSource,
    options: InferenceOptions | None = None,
    *,
    fps: float | None = None,
    only: str | None = None,
    keep_inputs: bool = True,
    **option_overrides,
) -> VideoResult:
    """Encode and decode a whole video; the result has exactly the sampled frame count.

    Args:
        model: an eval-mode VidTwin (see ``vidtwin.load_model``); its device is used.
        video: a file path, uint8 ``(N, H, W, 3)`` frames (then ``fps`` is required) or a FrameSource.
        options, option_overrides: :class:`InferenceOptions` and/or its fields as keywords
            (``sample_fps``, ``max_frames``, ``spatial``, ``tile_overlap``, ``batch_clips``,
            ``dtype``, ``progress``, ``compile``).
        only: ``None``, ``"structure"`` or ``"dynamics"``: decode one latent alone.
        keep_inputs: also return the model-space input frames.

    Returns:
        :class:`VideoResult` with ``video`` ``(3, N, H, W)`` float32 in about [-1, 1]. The whole
        video is held in memory; :func:`iter_reconstruction` streams instead.
    """
    options = InferenceOptions.of(options, **option_overrides)
    with opened_source(video, options, fps) as source:
        return _concat(iter_reconstruction(model, source, options, only=only), source.fps, keep_inputs)


def encode_video(
    model: torch.nn.Module,
    video: str | os.PathLike | torch.Tensor | FrameSource,
    options: InferenceOptions | None = None,
    *,
    fps: float | None = None,
    **option_overrides,
) -> EncodedVideo:
    """Structure and dynamics latents (posterior means, or FSQ codes) of every clip (and tile) of a video.

    Frames are read and encoded clip by clip; only the latents accumulate. ``video``, ``options``
    and keywords as in :func:`reconstruct_video`.

    Returns:
        :class:`~vidtwin.latents.latent_file.EncodedVideo`; write it with ``save_latents``.
    """
    options = InferenceOptions.of(options, **option_overrides)
    with opened_source(video, options, fps) as source:
        plan = plan_clips(model, source.num_frames, source.size, options.spatial, options.tile_overlap)

        def units() -> Iterator[tuple[torch.Tensor]]:
            for clip_index in range(plan.layout.num_clips):
                for unit in clip_model_inputs(clip_reference(source, plan, clip_index), plan):
                    yield (unit,)

        autoencoder = autoencoder_calls(model, options)

        def encode(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            latents = autoencoder.encode(batch)
            return tuple(getattr(latents, name) for name in LATENT_NAMES)

        bar = _progress(plan, f"encode {os.path.basename(source.name)}", options.progress)
        with bar:
            per_unit = list(run_batched(units(), encode, options.batch_clips, model_device(model), options.dtype, bar))
    stacked = [torch.stack(parts) for parts in zip(*per_unit)]  # each (clips*units, ...)
    by_clip = [t.unflatten(0, (plan.layout.num_clips, plan.units_per_clip)) for t in stacked]  # (clips, units, ...)
    return EncodedVideo(
        *by_clip,
        fps=source.fps,
        num_frames=source.num_frames,
        clip_len=plan.layout.clip_len,
        original_size=plan.original_size,
        output_size=plan.output_size,
        spatial=options.spatial,
        config=config_to_dict(model.config),
        tile_grid=plan.tile_grid,
        source=os.path.basename(source.name),
        extra={WEIGHTS_FINGERPRINT_KEY: weights_fingerprint(model)},  # decode can tell other weights apart
    )


def decode_latents(
    model: torch.nn.Module,
    encoded: EncodedVideo,
    options: InferenceOptions | None = None,
    *,
    only: str | None = None,
    **option_overrides,
) -> VideoResult:
    """Rebuild a video from its latents alone (``only`` decodes one part); see :func:`iter_decoded`.

    Raises:
        LatentFileError: the latents come from a model with another config.
    """
    return _concat(iter_decoded(model, encoded, options, only=only, **option_overrides), encoded.fps, keep_inputs=False)


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


def cross_latents(
    model: torch.nn.Module,
    structure: str | os.PathLike | torch.Tensor | FrameSource | EncodedVideo,
    dynamics: str | os.PathLike | torch.Tensor | FrameSource | EncodedVideo,
    options: InferenceOptions | None = None,
    *,
    fps: float | None = None,
    **option_overrides,
) -> tuple[EncodedVideo, EncodedVideo]:
    """The two encodings that cross-reenactment decodes together, cut to the shorter video.

    Each source is a video (encoded here) or an :class:`EncodedVideo`. Decode the pair with
    ``iter_decoded(model, structure_latents, dynamics=dynamics_latents)``.
    """
    options = InferenceOptions.of(options, **option_overrides)

    def as_encoded(item) -> EncodedVideo:
        return item if isinstance(item, EncodedVideo) else encode_video(model, item, options, fps=fps)

    structure_latents, dynamics_latents = as_encoded(structure), as_encoded(dynamics)
    check_cross_compatible(structure_latents, dynamics_latents)
    num_frames = min(structure_latents.num_frames, dynamics_latents.num_frames)
    if abs(structure_latents.fps - dynamics_latents.fps) > 1e-3:
        logger.warning(
            "structure video runs at %.3f fps and dynamics video at %.3f fps; the output uses %.3f",
            structure_latents.fps, dynamics_latents.fps, structure_latents.fps,
        )
    return structure_latents.truncated(num_frames), dynamics_latents.truncated(num_frames)


def cross_reenact(
    model: torch.nn.Module,
    structure: str | os.PathLike | torch.Tensor | FrameSource | EncodedVideo,
    dynamics: str | os.PathLike | torch.Tensor | FrameSource | EncodedVideo,
    options: InferenceOptions | None = None,
    *,
    fps: float | None = None,
    **option_overrides,
) -> VideoResult:
    """Decode the structure latents of one video with the dynamics latents of another.

    Each source is a video (encoded here with the given options) or an :class:`EncodedVideo`.
    The result has the shorter video's frame count and the structure video's frame rate.
    """
    options = InferenceOptions.of(options, **option_overrides)
    structure_latents, dynamics_latents = cross_latents(model, structure, dynamics, options, fps=fps)
    results = iter_decoded(model, structure_latents, options, dynamics=dynamics_latents)
    return _concat(results, structure_latents.fps, keep_inputs=False)


def model_space_frames(
    model: torch.nn.Module, source: FrameSource, options: InferenceOptions | None = None, **option_overrides
) -> torch.Tensor:
    """All of :func:`iter_model_space_frames` as one uint8 ``(N, H, W, 3)`` tensor.

    Equals ``to_uint8_frames(reconstruct_video(...).inputs)``.
    """
    return torch.cat(list(iter_model_space_frames(model, source, options, **option_overrides)))  # (N, H, W, 3)
