#!/usr/bin/env python3
"""Quick-start benchmark: wall time and held-out quality of ``python train.py --base configs/tiny.yaml``.

Runs the quick start as a user does (a fresh ``train.py`` process, its default data, schedules and
checkpoints), then scores the trained model on the held-out carphone clip with
``inference.py evaluate`` twice: ``--spatial resize`` (the model's 64x64 view) and ``--spatial
tile`` (native 176x144, blended 64x64 tiles). Optionally under a stand-in load: ``--load N`` starts N
busy processes (one core each) before training and stops them after, as other work on a laptop.

    python -m scripts.benchmark_quickstart --picture docs/quickstart_carphone.png   # the quick start, as shipped
    python -m scripts.benchmark_quickstart --load 2 --threads 1 2 auto --updates 100 \\
        --output docs/benchmarks_threads_cpu.json                          # thread policies under load

``--picture`` also writes a PNG of one held-out frame, input beside reconstruction, as
``inference.py reconstruct --spatial tile --side-by-side`` writes it (from the first run).
``--threads auto`` leaves ``OMP_NUM_THREADS`` unset, so train.py chooses (vidtwin.cpu_threads);
a number sets ``OMP_NUM_THREADS``. ``--updates`` shortens the run (``lightning.trainer.max_steps``).
Prints a table and writes the numbers as JSON (``--output``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from vidtwin.atomic_io import atomic_path, atomic_write_text
from vidtwin.cli.convention import add_debug_flag, run_cli

from scripts.bench_report import cpu_name

REPO = Path(__file__).resolve().parents[1]


def _busy_loop(parent: int) -> None:  # pragma: no cover - runs in the stand-in load processes
    # Spin until the benchmark is gone: a kill skips StandInLoad.__exit__, and the load must not outlive it.
    while os.getppid() == parent:
        for _ in range(100_000):
            pass


class StandInLoad:
    """``count`` processes that each keep one core busy, for as long as the context is open."""

    def __init__(self, count: int):
        self.count, self.processes = count, []

    def __enter__(self) -> "StandInLoad":
        context = multiprocessing.get_context("spawn")
        self.processes = [context.Process(target=_busy_loop, args=(os.getpid(),), daemon=True) for _ in range(self.count)]
        for process in self.processes:
            process.start()
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join()


def _environment(threads: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("OMP_NUM_THREADS", None)
    if threads != "auto":
        env["OMP_NUM_THREADS"] = threads
    return env


def _evaluate(run_dir: Path, spatial: str, env: dict) -> float:
    """Mean PSNR (dB) of the held-out carphone clip, as ``inference.py evaluate`` reports it."""
    from vidtwin.data.demo import demo_val_videos

    output = run_dir / f"evaluate_{spatial}"
    command = [sys.executable, str(REPO / "inference.py"), "evaluate", "--config", str(run_dir / "config.yaml"),
               "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"), "--input", demo_val_videos()[0],
               "--output", str(output), "--spatial", spatial, "--lpips", "off", "--quiet", "--overwrite"]
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return float(json.loads((output / "summary.json").read_text())["psnr_mean_over_frames"])


def write_png(path: Path, image) -> None:
    """An RGB uint8 image (H, W, 3) as a PNG file (zlib only: no imaging library needed)."""
    height, width, _ = image.shape
    rows = b"".join(b"\x00" + image[row].contiguous().numpy().tobytes() for row in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with atomic_path(path, suffix=".png") as temp:
        temp.write_bytes(png)


def write_picture(run_dir: Path, env: dict, path: Path, frame: int) -> None:
    """Frame ``frame`` of the held-out clip, input | reconstruction at native size (tile mode), as a PNG."""
    from vidtwin.data.demo import demo_val_videos
    from vidtwin.data.video_io import read_frames

    output = run_dir / "carphone_tile.mp4"
    command = [sys.executable, str(REPO / "inference.py"), "reconstruct", "--config", str(run_dir / "config.yaml"),
               "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"), "--input", demo_val_videos()[0],
               "--output", str(output), "--spatial", "tile", "--side-by-side", "--quiet", "--overwrite"]
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    (image,) = read_frames(output.with_name(f"{output.stem}_side_by_side.mp4"), [frame])  # (H, 2W, 3) uint8
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, image)


def run_quickstart(workdir: Path, threads: str, load: int, updates: int | None, overrides: list[str],
                   score: bool = True) -> dict:
    env = _environment(threads)
    name = f"quickstart_threads-{threads}_load-{load}"
    command = [sys.executable, str(REPO / "train.py"), "--base", str(REPO / "configs" / "tiny.yaml"),
               "--logdir", str(workdir), "--name", name, "--overwrite", *overrides]
    if updates:
        command.append(f"lightning.trainer.max_steps={updates}")
    with StandInLoad(load):
        time.sleep(2 if load else 0)  # let the load reach the cores
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()[0]
    if result.returncode != 0:
        raise RuntimeError(f"train.py failed ({result.returncode}):\n{result.stderr[-3000:]}")
    chosen = re.search(r"torch CPU threads: (\d+)", result.stderr)
    waiting = re.search(r"OMP_WAIT_POLICY=(\w+)", result.stderr)  # set by the policy when threads share cores
    run_dir = workdir / name
    summary = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return {
        "run_dir": str(run_dir), "summary": summary,
        "threads_setting": threads, "threads_used": int(chosen.group(1)) if chosen else None,
        "wait_policy": waiting.group(1) if waiting else env.get("OMP_WAIT_POLICY") or "OpenMP default",
        "stand_in_load": load, "updates": updates, "overrides": overrides, "wall_s": round(wall, 1),
        "psnr_resize_db": round(_evaluate(run_dir, "resize", env), 2) if score else None,
        "psnr_tile_db": round(_evaluate(run_dir, "tile", env), 2) if score else None,
        "load_average_1min_before": round(load_before, 2), "load_average_1min_after": round(load_after, 2),
    }


def _db(value) -> str:
    return "-" if value is None else f"{value} dB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_quickstart.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotlist overrides for train.py")
    parser.add_argument("--threads", nargs="+", default=["auto"], help="thread settings to compare: auto or a number")
    parser.add_argument("--load", nargs="+", type=int, default=[0], help="stand-in busy processes to compare (e.g. 0 2)")
    parser.add_argument("--updates", type=int, default=None, help="shorten the run to this many updates")
    parser.add_argument("--no-score", action="store_true", help="time the runs only (no evaluate)")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--picture", default=None, help="write a PNG of a held-out frame, input | reconstruction")
    parser.add_argument("--picture-frame", type=int, default=60, help="which carphone frame (default 60)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    records = []
    with tempfile.TemporaryDirectory(prefix="quickstart_") as temporary:
        workdir = Path(args.workdir or temporary)
        for load in args.load:
            for threads in args.threads:
                record = run_quickstart(workdir, threads, load, args.updates, args.overrides, score=not args.no_score)
                record.update(cpu=cpu_name(), cores=os.cpu_count())
                if args.picture and not records:
                    write_picture(Path(record["run_dir"]), _environment(threads), Path(args.picture), args.picture_frame)
                records.append(record)
                print(json.dumps(record), flush=True)

    header = ["load", "threads", "used", "waiting", "updates", "wall (s)", "PSNR resize", "PSNR tile", "load avg before/after"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for r in records:
        print(f"| {r['stand_in_load']} | {r['threads_setting']} | {r['threads_used']} | {r['wait_policy']} | "
              f"{r['updates'] or 'config'} | "
              f"{r['wall_s']} | {_db(r['psnr_resize_db'])} | {_db(r['psnr_tile_db'])} | "
              f"{r['load_average_1min_before']} / {r['load_average_1min_after']} |")
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main, "benchmark_quickstart.py")
