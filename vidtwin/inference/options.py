"""Inference settings shared by every entry point: device, precision, and the per-video options.

:class:`InferenceOptions` carries the options that every step of the pipeline needs (sampling,
spatial mode, batching, precision, progress bars, compilation), so they are built once, from the command line
or from keyword arguments, instead of being passed by hand through each function.

``dtype="auto"`` (the default) picks the fastest precision that the hardware runs natively:
bf16 on CUDA GPUs that support it, else fp16; on the CPU bf16 only where the CPU has native bf16
instructions (AVX512-BF16 or AMX), since elsewhere bf16 is emulated and several times slower than
fp32; fp32 otherwise. The detection is :mod:`vidtwin.precision`'s, which training's ``precision: auto``
uses too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass

import torch

from ..errors import UserError
# The detection lives in vidtwin.precision, which training shares; imported here, it keeps working
# from this module as before.
from ..precision import auto_dtype, cpu_has_native_bf16  # noqa: F401

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
SPATIAL_MODES = ("resize", "tile")


class InferenceError(ValueError, UserError):
    """A request that cannot be served (bad option, incompatible inputs); the message says why."""


# ----------------------------------------------------------------------------------------------
# device and precision
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


_reported_auto_choices: set[tuple[str, str]] = set()


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The concrete dtype name for ``dtype`` on ``device``; ``"auto"`` is logged once per choice."""
    if dtype not in DTYPE_CHOICES:
        raise InferenceError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_CHOICES)}")
    if dtype != "auto":
        return dtype
    choice, reason = auto_dtype(device)
    if (device.type, choice) not in _reported_auto_choices:
        _reported_auto_choices.add((device.type, choice))
        logger.info("dtype auto: %s on %s (%s)", choice, device.type, reason)
    return choice


def precision_context(device: torch.device, dtype: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast to bf16/fp16 on ``device`` (the model keeps fp32 weights); fp32 runs as is."""
    dtype = resolve_dtype(dtype, device)
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


# ----------------------------------------------------------------------------------------------
# per-video options
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InferenceOptions:
    """How videos are sampled, cut, batched and run; checked when built.

    Attributes:
        sample_fps: keep every ``round(fps / sample_fps)``-th frame (official sampling); None keeps all.
        max_frames: keep at most this many (sampled) frames; None keeps all.
        spatial: ``"resize"`` (model-size output, official) or ``"tile"`` (native-size output).
        tile_overlap: pixels of overlap between tiles; None is a quarter of the tile side.
        batch_clips: model inputs (clips, or tiles of clips) per forward pass.
        dtype: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
        progress: show progress bars.
        compile: run the model's encode and decode through ``torch.compile`` at one fixed batch shape
            (see :mod:`vidtwin.inference.compiled`); eager when compilation fails.
    """

    sample_fps: float | None = None
    max_frames: int | None = None
    spatial: str = "resize"
    tile_overlap: int | None = None
    batch_clips: int = 1
    dtype: str = "auto"
    progress: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.spatial not in SPATIAL_MODES:
            raise InferenceError(f"unknown spatial mode {self.spatial!r}; use one of {', '.join(SPATIAL_MODES)}")
        if self.dtype not in DTYPE_CHOICES:
            raise InferenceError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPE_CHOICES)}")
        if self.batch_clips < 1:
            raise InferenceError(f"--batch-clips must be >= 1, got {self.batch_clips}")
        if self.max_frames is not None and self.max_frames < 1:
            raise InferenceError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.sample_fps is not None and not (math.isfinite(self.sample_fps) and self.sample_fps > 0):
            raise InferenceError(f"--sample-fps must be a positive number, got {self.sample_fps}")

    @classmethod
    def of(cls, options: InferenceOptions | None = None, **overrides) -> InferenceOptions:
        """``options`` (default: all defaults) with some fields replaced by keyword arguments.

        This is what lets the public functions take either an options object or keywords:
        ``reconstruct_video(model, path, spatial="tile", batch_clips=8)``.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown inference option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(options or cls(), **overrides)
