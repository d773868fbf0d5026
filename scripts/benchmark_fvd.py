"""Peak memory and throughput of ``inference.py fvd`` against the number of videos per set.

FVD statistics are running float64 sums, so the memory of a run should not grow with the number
of clips. This script makes, once, folders of N short videos (64x64, 12 frames, moving color
gradients; I3D resizes every clip to 224x224, so the frame size does not change the cost) and an
untrained I3D weights file in the standard layout (random weights cost the same time as trained
ones). For each N it runs, in a fresh process,

    python inference.py fvd --real videos_N --fake videos_N --frames 9 --fvd-weights ...

and records that process's peak resident set size (``os.wait4``'s ``ru_maxrss``, measured as in
scripts/benchmark_memory.py, whose measuring process stays small for the same reason) and its
wall time. Target: the peak RSS of the largest set at most 1.1x that of the smallest.

Examples::

    python -m scripts.benchmark_fvd --json docs/benchmarks_fvd_cpu.json
    python -m scripts.benchmark_fvd --sizes 8 64 --batch-clips 16
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scripts.bench_report import cpu_name, write_json_report
from scripts.benchmark_memory import (
    add_measured_process_arguments, measure, measured_environment, prepare_inputs_in_subprocess,
)
from vidtwin.cli.convention import run_cli  # light: the standard library only

PROG = "benchmark_fvd.py"
REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.1
FRAMES = 12  # per video; the measured clips take the first 9


def prepare(sizes: list[int], cache: Path) -> None:
    """The video folders and the weights file, made once (in a subprocess: see the module docstring)."""
    import torch

    from vidtwin.data.video_io import write_video
    from vidtwin.fvd.i3d import InceptionI3d
    from vidtwin.fvd.weights import WEIGHTS_FILENAME

    if not (cache / WEIGHTS_FILENAME).is_file():
        torch.manual_seed(0)
        torch.save(InceptionI3d().state_dict(), cache / WEIGHTS_FILENAME)
    t = torch.arange(FRAMES, dtype=torch.float32)[:, None, None, None]
    grid = torch.linspace(0, 4, 64)
    for size in sizes:
        folder = cache / f"videos_{size}"
        folder.mkdir(exist_ok=True)
        for index in range(size):
            if (folder / f"video{index:04d}.mp4").is_file():
                continue
            phase = torch.tensor([0.0, 2.0, 4.0]) + index
            frames = 127.5 + 100 * torch.sin(grid[None, :, None, None] + grid[None, None, :, None] * (1 + index % 3) + 0.3 * t + phase)
            write_video(folder / f"video{index:04d}.mp4", frames.round().to(torch.uint8), fps=25.0)  # (12, 64, 64, 3)


def format_table(rows: list[dict]) -> str:
    lines = [f"{'videos':>6} {'clips':>6} {'peak RSS MiB':>12} {'vs smallest':>11} {'time s':>8} {'clips/s':>8}"]
    for row in rows:
        lines.append(f"{row['videos']:>6} {row['clips']:>6} {row['peak_rss_mib']:>12.0f} {row['rss_vs_smallest']:>10.2f}x "
                     f"{row['seconds']:>8.1f} {row['clips'] / row['seconds']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32], help="videos per set")
    add_measured_process_arguments(parser, "vidtwin_benchmark_fvd", "where the videos and the weights are made once",
                                   batch_clips=8)
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        prepare(sizes, cache)
        return 0
    prepare_inputs_in_subprocess("scripts.benchmark_fvd", argv)
    env = measured_environment(args.threads)
    rows = []
    for size in sizes:
        folder = cache / f"videos_{size}"
        command = [sys.executable, str(REPO / "inference.py"), "fvd", "--real", str(folder), "--fake", str(folder),
                   "--frames", "9", "--fvd-weights", str(cache / "i3d_pretrained_400.pt"), "--batch-clips", str(args.batch_clips),
                   "--device", "cpu", "--quiet"]
        print(f"{size} videos per set ...", flush=True)
        peak, seconds, stdout = measure(command, env)
        smallest = rows[0]["peak_rss_mib"] if rows else peak
        rows.append({"videos": size, "clips": 2 * size, "peak_rss_mib": peak, "rss_vs_smallest": peak / smallest,
                     "seconds": seconds, "fvd": float(stdout.splitlines()[0].split()[1])})
        print(format_table(rows[-1:]).splitlines()[1], flush=True)
    print(format_table(rows))
    ratio = rows[-1]["rss_vs_smallest"]
    print(f"peak RSS with {sizes[-1]} videos per set is {ratio:.2f}x that with {sizes[0]} (target <= {TARGET_RATIO}x): "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}")
    import torch

    write_json_report(args.json, {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": args.threads,
        "batch_clips": args.batch_clips, "clips": "one 9-frame clip per 64x64 video, real and fake sets the same folder",
        "peak_rss": "ru_maxrss of each inference.py process (os.wait4)", "results": rows,
    })
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
