"""``--compile``: the autoencoder's encode and decode run through ``torch.compile`` at one fixed shape.

Every model input of a run has the same shape: a clip, or a tile of a clip, has the model's
``input_size``, and a batch holds ``batch_clips`` of them. Only the last batch of a video can be
smaller; it is padded with zeros up to ``batch_clips`` and the padding is dropped from the results.
Each clip is computed on its own inside a batch (attention, norms and convolutions never mix clips),
so the padding changes nothing but the time of one batch, while a batch of another size compiles
the graph a second time, about as long as the first compilation; a dynamic batch axis does not
avoid that either, as torch specializes a batch of one (``scripts/benchmark_compile.py
--last-batch`` measures the three). So ``dynamic=False``: one graph per callable and precision, and
no recompiles from clip to clip or video to video.

:func:`autoencoder_calls` is the one place the choice is applied: it returns the model itself (eager)
or a :class:`CompiledAutoencoder`, both with ``encode(video)`` and ``decode(latents, only=None)``.
A compiled runner is kept on the model, so the videos of a folder share one compilation; torch's
own cache also reuses the compiled code for another model of the same architecture.

Compilation happens on the first batch, whose compiled outputs are checked against eager ones (the
compiled code can be wrong: see :meth:`CompiledAutoencoder._first_call`), and its time (that
batch's two runs included) is reported once per callable and precision: ``compiled encode in 12.3
s``. Where compiling fails (no C++ compiler for inductor on a CPU, an inductor error) or the check
does, the runner says so in one warning line and runs eagerly from then on.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from vidtwin.inference.options import InferenceOptions
from vidtwin.models.config import LATENT_NAMES
from vidtwin.models.vidtwin_ae import VidTwinLatents

logger = logging.getLogger(__name__)

_RUNNERS_ATTRIBUTE = "_vidtwin_compiled_runners"


class _RunnerCache(dict):
    """Compiled runners of one model by batch size. A copied or pickled model starts without any:
    compiled code can be neither, and the copy compiles again (from torch's cache) when asked to."""

    def __deepcopy__(self, memo) -> "_RunnerCache":
        return type(self)()

    def __reduce__(self):
        return type(self), ()


def fixed_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """A fresh contiguous copy of ``tensor`` ``(n, ...)``, zeros appended up to ``(size, ...)``.

    Always a copy, so that every call of a compiled graph sees the same strides and the same kind
    of tensor: a view of a batch buffer, a graph's own output layout, or a tensor made inside
    ``torch.inference_mode`` would each fail a guard and compile again.
    """
    count = tensor.shape[0]
    batch = tensor.new_empty((size, *tensor.shape[1:]))  # (size, ...) contiguous
    batch[:count].copy_(tensor)
    batch[count:].zero_()
    return batch


class CompiledAutoencoder:
    """``encode`` / ``decode`` of an eval-mode VidTwin through ``torch.compile`` at batch size ``batch_size``.

    The same calls as the model's (``encode(video) -> VidTwinLatents``, ``decode(latents, only)``),
    for batches of at most ``batch_size`` inputs. The latents carry the three tensors only: the KL
    term and FSQ statistics are batch totals, which inference does not use and padding would change.
    Decoding one part alone (``only``) is a graph of its own, compiled when first asked for.
    """

    def __init__(self, model: torch.nn.Module, batch_size: int, announce: Callable[[str], None] = logger.info):
        self.model = model
        self.batch_size = batch_size
        self.announce = announce
        self.eager = False  # set when a compilation or its check failed: everything runs eagerly from then on
        # "encode", "decode (bf16 autocast)", ... -> time of its first (compiling) call
        self.compile_seconds: dict[str, float] = {}
        self._compiled: dict[str, Callable] = {}  # callable name -> its torch.compile wrapper

    def encode(self, video: torch.Tensor) -> VidTwinLatents:
        """``(B, 3, T, H, W)`` in [-1, 1], ``B <= batch_size`` -> latents of ``B`` clips."""
        return VidTwinLatents(*self._run("encode", self._encode_tensors, video))

    def decode(self, latents: VidTwinLatents, only: str | None = None) -> torch.Tensor:
        """Latents of ``B <= batch_size`` clips -> ``(B, 3, T, H, W)`` in about [-1, 1]."""
        name = "decode" if only is None else f"decode {only}"
        decode_part = functools.partial(self._decode_tensors, only=only)
        (video,) = self._run(name, decode_part, *(getattr(latents, part) for part in LATENT_NAMES))
        return video

    # What is compiled: tensors in, tensors out (dataclasses stay outside the graph).
    def _encode_tensors(self, video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        latents = self.model.encode(video)
        return tuple(getattr(latents, part) for part in LATENT_NAMES)

    def _decode_tensors(self, structure: torch.Tensor, dynamics_x: torch.Tensor, dynamics_y: torch.Tensor,
                        only: str | None) -> tuple[torch.Tensor]:
        return (self.model.decode(VidTwinLatents(structure, dynamics_x, dynamics_y), only=only),)

    def _run(self, name: str, function: Callable[..., tuple[torch.Tensor, ...]],
             *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = tensors[0].shape[0]
        if count > self.batch_size:
            raise ValueError(f"a batch of {count} inputs for a model compiled for batches of {self.batch_size}")
        if self.eager:
            return function(*tensors)
        padded = [fixed_batch(tensor, self.batch_size) for tensor in tensors]  # each (batch_size, ...)
        # Autocast is part of what a graph was compiled for: another precision compiles once more.
        label = name + _autocast_label(tensors[0].device.type)
        if label in self.compile_seconds:
            outputs = self._compiled[name](*padded)
        else:
            outputs = self._first_call(name, label, function, padded)
        return tuple(output[:count] for output in outputs)

    def _first_call(self, name: str, label: str, function: Callable,
                    padded: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Compile ``function`` (for this precision) on its first batch, run it, and check it against
        eager on that batch; where compiling fails or the check does, warn once and return eager's
        outputs, and run eagerly from now on."""
        started = time.perf_counter()
        try:
            if name not in self._compiled:
                self._compiled[name] = torch.compile(function, dynamic=False)
            outputs = self._compiled[name](*padded)
        except Exception as error:  # no C++ compiler, an inductor or dynamo error: eager still works
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            return self._fall_back(f"torch.compile failed ({type(error).__name__}: {reason})", function, padded)
        # The compiled code is checked once, because it can be wrong where eager is right: with torch
        # 2.14.1 and ATEN_CPU_CAPABILITY=avx2, inductor's code gave NaN latents and videos for the
        # tiny model (fine with its tiling heuristic off, cpp.enable_tiling_heuristics=False).
        expected = function(*padded)
        mismatch = compiled_mismatch(outputs, expected, reduced_precision=bool(_autocast_label(padded[0].device.type)))
        if mismatch:
            return self._fall_back(f"the compiled {label} differs from eager on the first batch ({mismatch})",
                                   function, padded, expected)
        seconds = self.compile_seconds[label] = time.perf_counter() - started
        self.announce(f"compiled {label} in {seconds:.1f} s (batches of {self.batch_size}; includes the first "
                      "batch, run compiled and eagerly to check it)")
        return outputs

    def _fall_back(self, why: str, function: Callable, padded: list[torch.Tensor],
                   expected: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, ...]:
        self.eager = True
        logger.warning("--compile: %s; running eagerly", why)
        return function(*padded) if expected is None else expected


# How far a compiled output may be from eager's, relative to 1 + the largest eager value: far above
# the rounding that reordered float32 sums or bf16/fp16 steps give (seen: 1e-6 in fp32, 1.6e-2 in
# bf16 at values near 2), far below a wrong result.
MISMATCH_TOLERANCE = {False: 1e-3, True: 0.125}


def compiled_mismatch(outputs: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...],
                      reduced_precision: bool) -> str | None:
    """Why ``outputs`` are not eager's ``expected`` (non-finite values where eager has none, or a
    difference beyond :data:`MISMATCH_TOLERANCE`), or None where they agree."""
    for output, reference in zip(outputs, expected):
        output, reference = output.float(), reference.float()
        finite = torch.isfinite(reference)
        if not torch.equal(torch.isfinite(output), finite):
            return "non-finite values where eager's are finite, or the reverse"
        difference = (output - reference)[finite].abs().max().item() if finite.any() else 0.0
        scale = 1.0 + reference[finite].abs().max().item() if finite.any() else 1.0
        if difference > MISMATCH_TOLERANCE[reduced_precision] * scale:
            return f"max |difference| {difference:.3g}"
    return None


def _autocast_label(device_type: str) -> str:
    """`` (bf16 autocast)`` under autocast on ``device_type``, else nothing."""
    if not torch.is_autocast_enabled(device_type):
        return ""
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(torch.get_autocast_dtype(device_type), "autocast")
    return f" ({name} autocast)"


def _say_on_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # between progress bars, not through them


def autoencoder_calls(model: torch.nn.Module, options: InferenceOptions) -> torch.nn.Module | CompiledAutoencoder:
    """What runs ``encode`` and ``decode`` for ``options``: the model itself, or with ``options.compile``
    its compiled runner for batches of ``options.batch_clips`` (made once per model and batch size).

    The compile time is said on stderr when ``options.progress`` is on (the command line without
    ``--quiet``), else logged at INFO level.
    """
    if not options.compile:
        return model
    runners = model.__dict__.get(_RUNNERS_ATTRIBUTE)
    if runners is None:
        runners = _RunnerCache()
        object.__setattr__(model, _RUNNERS_ATTRIBUTE, runners)  # a plain attribute: no module, no buffer
    runner = runners.get(options.batch_clips)
    if runner is None:
        runner = runners[options.batch_clips] = CompiledAutoencoder(model, options.batch_clips)
    runner.announce = _say_on_stderr if options.progress else logger.info
    return runner


__all__ = ["CompiledAutoencoder", "autoencoder_calls", "compiled_mismatch", "fixed_batch"]
