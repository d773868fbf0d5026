"""The work behind ``vidtwin fvd`` and the ``--fvd`` option of ``vidtwin evaluate`` (their options: :mod:`vidtwin.cli.fvd`).

Everything the user gave is checked before any video is decoded: the protocol's numbers, the
outputs (an existing file needs ``--overwrite``; an output may not be an input), the weights
(found, readable, of the I3D network), saved statistics (same weights and protocol), and every
video's length. Then the real set (unless its statistics are loaded), then the fake set, each with
a progress bar. The FVD and its protocol are printed, and written as JSON with ``--output``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch

from vidtwin.atomic_io import atomic_path
from vidtwin.data.video_io import VideoReadError, probe_video, sample_indices
from vidtwin.fvd.protocol import ClipProtocol, FVDError, protocol_report
from vidtwin.fvd.stats import FeatureStats, fvd_of
from vidtwin.fvd.weights import find_weights, load_i3d
from vidtwin.inference.fvd_reconstruction import ReconstructionFVD
from vidtwin.inference.fvd_sets import check_clip_count, plan_video_set, video_set_statistics
from vidtwin.inference.options import InferenceOptions, resolve_device
from vidtwin.inference.outputs import check_targets, check_writable_folder

logger = logging.getLogger(__name__)

DEFAULT_BATCH_CLIPS = 8


# ----------------------------------------------------------------------------------------------
# vidtwin fvd
# ----------------------------------------------------------------------------------------------


def _protocol(args: argparse.Namespace) -> ClipProtocol:
    return ClipProtocol(frames=args.frames, stride=args.stride, clips_per_video=args.clips_per_video,
                        clip_starts=args.clip_starts, seed=args.seed, resolution=args.resolution)


def _check_outputs(args: argparse.Namespace) -> list[Path]:
    targets = [Path(p) for p in (args.output, args.save_real_stats) if p is not None]
    if args.save_real_stats and args.real_stats:
        raise FVDError("--save-real-stats saves statistics computed from --real videos; with --real-stats there is nothing new to save")
    if len(targets) == 2 and os.path.abspath(targets[0]) == os.path.abspath(targets[1]):
        raise FVDError(f"--output and --save-real-stats are the same file {targets[0]}; give two names")
    for target in targets:
        if target.is_dir():
            raise FVDError(f"output {target} is a directory; give a file name")
        check_writable_folder(target.parent)
    inputs = [p for p in (args.real, args.fake, args.real_stats) if p is not None]
    check_targets(targets, inputs, args.overwrite)
    return targets


def _stats_identity(weights: dict, protocol: ClipProtocol) -> dict:
    return {"weights_sha256": weights["sha256"], **protocol.comparable_fields()}


def _load_real_stats(path: str, weights: dict, protocol: ClipProtocol) -> tuple[FeatureStats, dict]:
    stats, saved = FeatureStats.load(path)
    expected = _stats_identity(weights, protocol)
    identity = saved.get("identity", {})
    for key, value in expected.items():
        if identity.get(key) != value:
            raise FVDError(f"--real-stats {path} was computed with {key} {identity.get(key)!r}, this run uses {value!r}; "
                           "recompute them with --real and --save-real-stats")
    check_clip_count(stats.count, f"--real-stats {path}")
    return stats, saved.get("real", {"source": path, "clips": stats.count})


def _write_json(path: Path, report: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".json") as temp:
            temp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise FVDError(f"cannot write the report {path}: {error.strerror or error}") from None


def format_report(report: dict) -> str:
    """``FVD value`` and the protocol, one ``key: value`` line each."""
    lines = [f"FVD {report['fvd']:.4f}"]
    for key, value in report["protocol"].items():
        if key in ("real", "fake", "weights"):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def run_fvd(args: argparse.Namespace, options: InferenceOptions) -> dict:
    """``inference.py fvd``: checks, real statistics, fake statistics, the report; returns the report."""
    protocol = _protocol(args)
    _check_outputs(args)
    device = resolve_device(args.device)
    model, weights = load_i3d(find_weights(args.fvd_weights), device)
    progress = options.progress
    if args.real_stats:
        real_stats, real_info = _load_real_stats(args.real_stats, weights, protocol)
        real_set = None
    else:
        real_set = plan_video_set(args.real, "--real", protocol, args.data_dir, progress)
    fake_set = plan_video_set(args.fake, "--fake", protocol, args.data_dir, progress)
    if real_set is not None:
        real_stats = video_set_statistics(real_set, protocol, model, options.batch_clips, progress)
        real_info = {**real_set.describe(), "split": args.real_split or "not given"}
        if args.save_real_stats:
            real_stats.save(args.save_real_stats, {"identity": _stats_identity(weights, protocol), "real": real_info,
                                                   "protocol": protocol.to_dict(), "weights": weights})
            print(f"wrote {args.save_real_stats} ({real_stats.count} real clips)")
    elif args.real_split:
        real_info = {**real_info, "split": args.real_split}
    fake_stats = video_set_statistics(fake_set, protocol, model, options.batch_clips, progress)
    report = {"fvd": fvd_of(real_stats, fake_stats),
              "protocol": protocol_report(protocol, weights, {**real_info, "clips": real_stats.count}, fake_set.describe())}
    print(format_report(report))
    if args.output:
        _write_json(Path(args.output), report)
        print(f"wrote {args.output}")
    return report


# ----------------------------------------------------------------------------------------------
# vidtwin evaluate --fvd
# ----------------------------------------------------------------------------------------------


def _sampled_frame_count(path: str, options: InferenceOptions) -> int | None:
    """Frames of a video after the evaluation's sampling; None for a video that cannot be read (it fails alone later)."""
    try:
        info = probe_video(path)
    except VideoReadError:
        return None
    return len(sample_indices(info.num_frames, info.fps, options.sample_fps, num_samples=options.max_frames))


def prepare_reconstruction_fvd(args: argparse.Namespace, paths: list[str], options: InferenceOptions,
                               device: torch.device) -> ReconstructionFVD | None:
    """With ``--fvd``: the checked protocol, every video long enough for a clip, and I3D loaded; else None."""
    if not args.fvd:
        return None
    try:
        protocol = ClipProtocol(frames=args.fvd_frames, stride=args.fvd_stride)
    except FVDError as error:  # name evaluate's own options
        raise FVDError(str(error).replace("--frames", "--fvd-frames").replace("--stride", "--fvd-stride")) from None
    weights_path = find_weights(args.fvd_weights)
    clips = 0
    for path in paths:
        frames = _sampled_frame_count(path, options)
        if frames is None:
            continue
        if frames < protocol.span:
            raise FVDError(f"--fvd: video {path} {protocol.too_short(frames)} (--fvd-frames, --fvd-stride)")
        clips += frames // protocol.span
    check_clip_count(clips, f"--fvd on {args.input}")
    model, weights = load_i3d(weights_path, device)
    return ReconstructionFVD(model, weights, protocol, batch_clips=DEFAULT_BATCH_CLIPS)
