"""Which reduced precision the hardware computes natively: one detector for inference and training.

Inference's ``dtype="auto"`` (:func:`auto_dtype`) and training's ``lightning.trainer.precision:
auto`` (:func:`auto_training_precision`) both use it, so that the two never disagree on a machine.
bf16 is chosen on CUDA GPUs that support it, and on CPUs with native bf16 instructions (AVX512-BF16
or AMX) that torch uses and whose bf16 matmuls measure clearly faster than fp32 ones. Elsewhere a
CPU emulates bf16, several times slower than fp32; and native instructions are not always faster:
an Intel Xeon whose AMX is not enabled runs bf16 matmuls on AVX512-BF16 at about half its fp32
rate (docs/benchmarks.md, "Training precision on a CPU").

This module imports nothing but torch, so that training can use it without loading inference code.
"""

from __future__ import annotations

import functools
import os
import time

import torch

# Lightning's accelerator names that run on a CUDA device (``gpu`` may also be Apple's MPS).
_CUDA_ACCELERATORS = ("gpu", "cuda")


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX-BF16 instructions and torch may use them.

    ``ATEN_CPU_CAPABILITY=avx2`` (or ``default``) limits torch to older kernels, as on a CPU
    without AVX-512; the choice follows it, so that the setting and the log never disagree.
    """
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.6
    if get_capabilities is None:
        return False
    capabilities = get_capabilities()
    hardware = bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return hardware and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


# bf16 is chosen on a CPU only when its matmuls beat fp32 by this much: mixed precision adds casts,
# and the CPUs measured sit far from it on either side (AMD EPYC with AVX512-BF16: about 2x;
# Intel Xeon with AMX: about 5x; Intel Xeon without AMX enabled: about 0.55x).
BF16_MIN_SPEEDUP = 1.25
_PROBE_SIZE = 1024  # 2.1 GFLOP a matmul: tens of milliseconds on 2 cores, large enough for oneDNN's kernels


# The measurement, handed to the processes that a run starts (Lightning's DDP launcher starts its
# other ranks with this environment), so that every rank of a run makes the same choice.
SPEEDUP_ENV = "VIDTWIN_CPU_BF16_SPEEDUP"


@functools.lru_cache(maxsize=1)
def cpu_bf16_matmul_speedup() -> float:
    """How many times faster a bf16 matmul runs than an fp32 one on this CPU (measured once a process,
    or taken from ``VIDTWIN_CPU_BF16_SPEEDUP`` when the process that started this one measured it).

    Square matmuls of ``_PROBE_SIZE`` on torch's current threads, each precision's best of three
    after one warm-up, interleaved so that a burst of other work slows both alike: about a tenth
    of a second on 2 cores.
    """
    try:
        handed_down = float(os.environ.get(SPEEDUP_ENV, "nan"))
    except ValueError:
        handed_down = float("nan")  # not a number: measure
    if handed_down > 0:
        return handed_down
    speedup = _measure_bf16_matmul_speedup()
    os.environ[SPEEDUP_ENV] = repr(speedup)
    return speedup


def _measure_bf16_matmul_speedup() -> float:
    operands = {dtype: torch.randn(_PROBE_SIZE, _PROBE_SIZE, generator=torch.Generator().manual_seed(0)).to(dtype)
                for dtype in (torch.float32, torch.bfloat16)}
    best = {dtype: float("inf") for dtype in operands}
    for repeat in range(4):
        for dtype, matrix in operands.items():
            start = time.perf_counter()
            torch.mm(matrix, matrix)
            elapsed = time.perf_counter() - start
            if repeat:  # the first is the warm-up: oneDNN builds its kernel
                best[dtype] = min(best[dtype], elapsed)
    return best[torch.float32] / best[torch.bfloat16]


def auto_dtype(device: torch.device) -> tuple[str, str]:
    """``(dtype, reason)``: what ``dtype="auto"`` runs on ``device``, and why, in words."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "the GPU supports bf16"
        return "fp16", "the GPU has no bf16 support"
    if device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        if not cpu_has_native_bf16():
            return "fp32", (f"torch uses no native bf16 instructions here (torch CPU capability {capability}); "
                            "emulated bf16 is slower than fp32")
        speedup = cpu_bf16_matmul_speedup()
        if speedup >= BF16_MIN_SPEEDUP:
            return "bf16", (f"the CPU has native bf16 instructions (torch CPU capability {capability}); "
                            f"bf16 matmuls ran {speedup:.2f}x as fast as fp32")
        return "fp32", (f"the CPU has native bf16 instructions (torch CPU capability {capability}), but bf16 "
                        f"matmuls ran {speedup:.2f}x as fast as fp32, so fp32 is faster")
    return "fp32", f"no reduced precision is chosen automatically on {device.type}"


def accelerator_device_type(accelerator: str | None) -> str:
    """The torch device type that a Lightning Trainer with ``accelerator`` runs on: ``cpu``, ``cuda``,
    ``mps``, or the accelerator's own name for others. ``auto`` (Lightning's default) follows
    Lightning's order: CUDA, then MPS, then the CPU."""
    name = str(accelerator or "auto").lower()
    mps_available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu"
    if name in _CUDA_ACCELERATORS:
        return "mps" if name == "gpu" and mps_available and not torch.cuda.is_available() else "cuda"
    return name


def auto_training_precision(accelerator: str | None = "auto") -> tuple[str, str, str]:
    """``(precision, device_type, reason)`` for ``lightning.trainer.precision: auto``.

    ``bf16-mixed`` where :func:`auto_dtype` picks bf16 on the trainer's device, ``32`` elsewhere:
    a GPU without bf16 trains in fp32 rather than ``16-mixed``, whose fp16 range needs loss scaling.
    """
    device_type = accelerator_device_type(accelerator)
    if device_type not in ("cpu", "cuda", "mps"):
        return "32", device_type, f"no reduced precision is chosen automatically on the {device_type} accelerator"
    dtype, reason = auto_dtype(torch.device(device_type))
    return ("bf16-mixed" if dtype == "bf16" else "32"), device_type, reason
