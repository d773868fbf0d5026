"""The machine's own matmul rate, and the FLOPs that the benchmarks count against it.

``scripts.benchmark`` (inference) and ``scripts.benchmark_train`` (training updates) report an
achieved FLOP/s as a share of the rate of one large matmul of the matching precision, timed in the
same run: on a shared machine a peak measured another day says little, and a datasheet peak
(turbo clocks, every core idle) is out of reach on the CPUs these scripts run on.

    python -m scripts.bench_matmul --device cpu --dtypes fp32 bf16

What the FLOP counts hold: torch's formulas (``torch.utils.flop_counter``) count matrix products
(``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and their backward, and attention. Torch
registers the attention kernels of CUDA (flash, memory-efficient, cuDNN) but not the one
``F.scaled_dot_product_attention`` runs on the CPU, so :func:`attention_flop_formulas` adds it,
forward and backward, with torch's own formulas. Causal attention is counted in full (as torch
counts it), though the kernels skip the masked half. Nothing else is counted: elementwise work,
normalization, softmax, reductions, losses, dtype casts and the optimizer's update are 0 FLOPs
here, so the achieved rate is that of the matmul-like work, spread over the whole wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

# Benchmark precision names -> the dtype of the matmul that runs them.
MATMUL_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Large enough to reach the rate of big matmuls (2048: 17 GFLOP each, ~0.1 s in fp32 on 2 CPU
# cores); a GPU needs larger ones to fill its units.
DEFAULT_MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}


def matmul_dtype_of_precision(precision: str) -> str:
    """The matmul dtype (a :data:`MATMUL_DTYPES` name) that a Lightning precision computes in:
    ``bf16-mixed`` autocasts matmuls and convolutions to bf16, ``32`` keeps fp32."""
    name = str(precision).lower()
    if name.startswith("bf16"):
        return "bf16"
    if name.startswith("16"):
        return "fp16"
    return "fp32"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_rate(device: torch.device | str, dtype: str, size: int | None = None, warmup: int = 3,
                        repeats: int = 10) -> dict:
    """Time ``repeats`` products of two ``size`` x ``size`` matrices of ``dtype`` after ``warmup``
    untimed ones; the rate of the fastest (the machine's peak here) and of the median one.

    Returns ``{"dtype", "size", "repeats", "tflops_best", "tflops_median", "seconds_best"}``.
    """
    device = torch.device(device)
    size = size or DEFAULT_MATMUL_SIZE.get(device.type, 2048)
    generator = torch.Generator(device=device).manual_seed(0)
    left = torch.randn(size, size, device=device, generator=generator).to(MATMUL_DTYPES[dtype])
    right = torch.randn(size, size, device=device, generator=generator).to(MATMUL_DTYPES[dtype])
    out = torch.empty_like(left)
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            torch.mm(left, right, out=out)
            _synchronize(device)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    return {"dtype": dtype, "size": size, "repeats": repeats, "tflops_best": flops / min(times) / 1e12,
            "tflops_median": flops / statistics.median(times) / 1e12, "seconds_best": min(times)}


class MatmulRates:
    """The matmul rates measured in one benchmark run, by torch thread count and dtype.

    A row's share compares it with the rate at its own thread count. :meth:`remeasure` at the end
    of the run times every pair again, and :meth:`peak` takes the best of all: on a shared machine
    the quieter moment is the closer one to the machine's peak.
    """

    def __init__(self, device: torch.device | str, size: int | None = None, repeats: int = 10):
        self.device, self.size, self.repeats = torch.device(device), size, repeats
        self.measurements: list[dict] = []  # measure_matmul_rate's dicts, with "threads" and "when"

    def measure(self, dtype: str, when: str = "before") -> dict:
        rate = measure_matmul_rate(self.device, dtype, self.size, repeats=self.repeats)
        rate.update(threads=torch.get_num_threads(), when=when)
        self.measurements.append(rate)
        return rate

    def ensure(self, dtype: str) -> None:
        """Measure ``dtype`` at torch's current thread count, unless this run already has."""
        if not any(m["dtype"] == dtype and m["threads"] == torch.get_num_threads() for m in self.measurements):
            self.measure(dtype)

    def remeasure(self) -> None:
        """Time every (threads, dtype) measured so far once more; torch's thread count is restored."""
        threads = torch.get_num_threads()
        for count, dtype in dict.fromkeys((m["threads"], m["dtype"]) for m in list(self.measurements)):
            torch.set_num_threads(count)
            self.measure(dtype, when="after")
        torch.set_num_threads(threads)

    def peak(self, dtype: str, threads: int | None = None) -> float | None:
        """The best TFLOP/s of ``dtype`` at ``threads`` (default: torch's current count); None if unmeasured."""
        threads = torch.get_num_threads() if threads is None else threads
        rates = [m["tflops_best"] for m in self.measurements if m["dtype"] == dtype and m["threads"] == threads]
        return max(rates) if rates else None


def share_of_peak(achieved_tflops: float | None, peak_tflops: float | None) -> float | None:
    """``achieved / peak`` (0.42 for 42%), or None where either is unknown."""
    if not achieved_tflops or not peak_tflops:
        return None
    return achieved_tflops / peak_tflops


def attention_flop_formulas() -> dict:
    """FLOP formulas of the CPU attention kernel, forward and backward, for
    ``FlopCounterMode(custom_mapping=...)``: they take shapes, as torch's own formulas do (wrap
    them in ``torch.utils.flop_counter.shape_wrapper`` to call them on tensors)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)  # QK^T and the product with V

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def flop_counter():
    """A ``FlopCounterMode`` that also counts CPU attention (see the module docstring for what it
    counts); it needs autograd on (its module tracker hooks the backward): count training steps
    with it, not ``no_grad`` code."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=attention_flop_formulas())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_matmul.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(MATMUL_DTYPES))
    parser.add_argument("--size", type=int, default=None, help="matrix size (default: 2048 on the CPU, 8192 on CUDA)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    rates = MatmulRates(args.device, args.size, args.repeats)
    for dtype in args.dtypes:
        rate = rates.measure(dtype)
        print(f"{dtype:<5} {rate['size']}x{rate['size']}: best {rate['tflops_best']:.3f} TFLOP/s, "
              f"median {rate['tflops_median']:.3f} TFLOP/s ({torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
