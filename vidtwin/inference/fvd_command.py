"""The work behind ``vidtwin fvd`` and the ``--fvd`` option of ``vidtwin evaluate`` (their options: :mod:`vidtwin.cli.fvd`).

Everything the user gave is checked before any video is decoded: the protocol's numbers, the
outputs (an existing file needs ``--overwrite``; an output may be no file of either set, nor the
weights or saved statistics, by path or by file identity), the weights (found, readable, of the
I3D network, every value finite), saved statistics (same weights and protocol), and every video's
length. Then the real set (unless its statistics are loaded), then the fake set, each with a
progress bar counting its clips. A set whose features barely vary is warned about (the FVD would
measure nothing). The FVD and its protocol are printed, and written as JSON with ``--output``.
SIGTERM or Ctrl-C stops it with one line saying what was written (the saved real statistics, if
any) and what was lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from vidtwin.atomic_io import atomic_path
from vidtwin.data.video_io import VideoReadError, probe_video, sample_indices
from vidtwin.fvd.protocol import ClipProtocol, FVDError, protocol_report
from vidtwin.fvd.stats import FeatureStats, degenerate_features, fvd_of
from vidtwin.fvd.weights import find_weights, load_i3d
from vidtwin.inference.fvd_reconstruction import ReconstructionFVD
from vidtwin.inference.fvd_sets import check_clip_count, list_video_set, plan_video_set, video_set_statistics
from vidtwin.inference.options import InferenceOptions, resolve_device
from vidtwin.inference.outputs import InputFiles, claim_file_outputs

logger = logging.getLogger(__name__)

DEFAULT_BATCH_CLIPS = 8


# ----------------------------------------------------------------------------------------------
# vidtwin fvd
# ----------------------------------------------------------------------------------------------


class FVDStopped(Exception):
    """A stop signal (or Ctrl-C) ended ``vidtwin fvd``; the message says what was written and what was lost."""

    def __init__(self, signum: int, outcome: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} {outcome}")
        self.signum = signum


class _Signalled(BaseException):
    """Raised by the SIGTERM handler wherever the work is (a BaseException: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _StopOnSignal:
    """While active, SIGTERM raises :class:`_Signalled` at once, except inside :meth:`hold`.

    No state needs saving between clips, so the work ends where it is; a file being written is
    finished first (inside :meth:`hold`), so that the message can say exactly what exists.
    """

    SIGNALS = (signal.SIGTERM,)

    def __init__(self):
        self.held = False
        self.pending: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame) -> None:
        if self.held:
            self.pending = self.pending or signum
            return
        raise _Signalled(signum)

    @contextmanager
    def hold(self, then_stop: bool = True):
        """Finish the block before a signal counts; afterwards stop for one that came (unless not ``then_stop``)."""
        self.held = True
        try:
            yield
        finally:
            self.held = False
        if then_stop and self.pending is not None:
            raise _Signalled(self.pending)


def _protocol(args: argparse.Namespace) -> ClipProtocol:
    return ClipProtocol(frames=args.frames, stride=args.stride, clips_per_video=args.clips_per_video,
                        clip_starts=args.clip_starts, seed=args.seed, resolution=args.resolution)


def _input_files(args: argparse.Namespace, weights_path: Path, real_paths: list[str] | None,
                 fake_paths: list[str]) -> InputFiles:
    """Every file ``vidtwin fvd`` reads: the sets (their folder or CSV, and each video), saved statistics, the weights."""
    inputs = InputFiles([weights_path, args.fake, *fake_paths])
    inputs.add([args.real_stats] if args.real_stats else [args.real, *real_paths])
    return inputs


def _claim_outputs(args: argparse.Namespace, claims: ExitStack, inputs: InputFiles) -> None:
    """Refuse outputs that are inputs, or that exist without --overwrite; hold their names until the end."""
    targets = [Path(p) for p in (args.output, args.save_real_stats) if p is not None]
    if len(targets) == 2 and InputFiles([targets[0]]).find(targets[1]) is not None:
        raise FVDError(f"--output and --save-real-stats are the same file {targets[0]}; give two names")
    claim_file_outputs(claims, targets, inputs, args.overwrite)


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
        raise FVDError(f"cannot write the report {path}: {error.strerror or error}; it was not written") from None


def format_report(report: dict) -> str:
    """``FVD value`` and the protocol, one ``key: value`` line each."""
    lines = [f"FVD {report['fvd']:.4f}"]
    for key, value in report["protocol"].items():
        if key in ("real", "fake", "weights"):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def _warn_degenerate(stats: FeatureStats, what: str, warnings: list[str]) -> None:
    message = degenerate_features(stats, what)
    if message is not None:
        logger.warning("%s", message)
        warnings.append(message)


def _outcome(args: argparse.Namespace, stage: str, saved_stats: bool) -> str:
    """What a stop during ``stage`` leaves behind, in words."""
    if not saved_stats:
        return f"{stage}: no FVD, and nothing was written"
    return (f"{stage}: no FVD; the real statistics were saved to {args.save_real_stats}: run the same command with "
            f"--real-stats {args.save_real_stats} in place of --real and --save-real-stats to go on from there")


def run_fvd(args: argparse.Namespace, options: InferenceOptions) -> dict:
    """``vidtwin fvd``: checks, real statistics, fake statistics, the report; returns the report.

    SIGTERM or Ctrl-C ends it as :class:`FVDStopped`, whose message says what was written.
    """
    protocol = _protocol(args)
    if args.save_real_stats and args.real_stats:
        raise FVDError("--save-real-stats saves statistics computed from --real videos; with --real-stats there is nothing new to save")
    weights_path = find_weights(args.fvd_weights)
    real_paths = None if args.real_stats else list_video_set(args.real, "--real", args.data_dir)
    fake_paths = list_video_set(args.fake, "--fake", args.data_dir)
    progress = {"stage": "while loading I3D and probing the videos", "saved_stats": False}
    with ExitStack() as claims, _StopOnSignal() as stop:
        try:
            _claim_outputs(args, claims, _input_files(args, weights_path, real_paths, fake_paths))
            return _measure(args, options, protocol, weights_path, real_paths, fake_paths, stop, progress)
        except _Signalled as signalled:
            raise FVDStopped(signalled.signum, _outcome(args, progress["stage"], progress["saved_stats"])) from None
        except KeyboardInterrupt:
            raise FVDStopped(signal.SIGINT, _outcome(args, progress["stage"], progress["saved_stats"])) from None


def _measure(args: argparse.Namespace, options: InferenceOptions, protocol: ClipProtocol, weights_path: Path,
             real_paths: list[str] | None, fake_paths: list[str], stop: _StopOnSignal, progress: dict) -> dict:
    """The work of :func:`run_fvd` once its outputs are claimed; ``progress`` records how far it got."""
    device = resolve_device(args.device)
    model, weights = load_i3d(weights_path, device)
    warnings: list[str] = []
    if args.real_stats:
        real_stats, real_info = _load_real_stats(args.real_stats, weights, protocol)
        _warn_degenerate(real_stats, f"--real-stats {args.real_stats}", warnings)
        real_set = None
    else:
        real_set = plan_video_set(args.real, "--real", protocol, args.data_dir, options.progress, real_paths)
    fake_set = plan_video_set(args.fake, "--fake", protocol, args.data_dir, options.progress, fake_paths)
    if real_set is not None:
        progress["stage"] = "during the --real set's features"
        real_stats = video_set_statistics(real_set, protocol, model, options.batch_clips, options.progress)
        _warn_degenerate(real_stats, f"--real {args.real}", warnings)
        real_info = {**real_set.describe(), "split": args.real_split or "not given"}
        if args.save_real_stats:
            with stop.hold():  # the file is whole or absent when the message says which
                real_stats.save(args.save_real_stats, {"identity": _stats_identity(weights, protocol), "real": real_info,
                                                       "protocol": protocol.to_dict(), "weights": weights})
                progress["saved_stats"] = True
                print(f"wrote {args.save_real_stats} ({real_stats.count} real clips)")
    elif args.real_split:
        real_info = {**real_info, "split": args.real_split}
    progress["stage"] = "during the --fake set's features"
    fake_stats = video_set_statistics(fake_set, protocol, model, options.batch_clips, options.progress)
    _warn_degenerate(fake_stats, f"--fake {args.fake}", warnings)
    with stop.hold(then_stop=False):  # the work is done: finish it
        report = {"fvd": fvd_of(real_stats, fake_stats),
                  "protocol": protocol_report(protocol, weights, {**real_info, "clips": real_stats.count}, fake_set.describe())}
        if warnings:
            report["warnings"] = warnings
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
