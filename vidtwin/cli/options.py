"""What the subcommands share: option groups declared once (model reference, video, runtime, outputs),
the options object built from them, the model load, and the per-video loop of folder inputs.

Errors follow :mod:`vidtwin.cli.convention`: a user error (missing or unreadable input, an output
that is an input or exists without --overwrite, config/checkpoint mismatch, unwritable output)
ends with one ``vidtwin COMMAND: error: ...`` line and exit code 2, before anything is written (see
:mod:`vidtwin.inference.outputs`). With a folder of videos a bad video is reported and the others
are still processed; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import math
import dataclasses
import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..checkpoint import load_model
from ..cpu_threads import apply_cpu_thread_policy
from ..data.video_io import VideoWriter
from ..errors import PartialFailure, UserError
from ..inference.options import DTYPE_CHOICES, SPATIAL_MODES, InferenceOptions, auto_dtype, resolve_device
from ..inference.outputs import check_targets, claim_outputs, collect_inputs, output_paths, side_by_side_path
from .convention import one_line

logger = logging.getLogger("vidtwin.inference")


def positive_number(text: str) -> float:
    """An argparse type for rates and sizes: a finite number above 0 (argparse names the option when
    it refuses ``nan``, ``inf`` or ``-1``, in one line, before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def add_directory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recursive", action="store_true",
                        help="with a directory --input, also read its sub-folders (kept under --output)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")


def add_allow_other_weights(parser: argparse.ArgumentParser, encoded: str = "the latent files") -> None:
    """``--allow-other-weights``: decode with weights other than those that encoded ``encoded``."""
    parser.add_argument("--allow-other-weights", action="store_true",
                        help=f"decode with autoencoder weights other than the ones that encoded {encoded} "
                             "(refused by default: the output is noise-like)")


def add_device(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--device`` in the ``runtime`` group (returned, for a command's other runtime options)."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available); default auto")
    return group


def add_runtime(parser: argparse.ArgumentParser, device: bool = True, dtype: bool = True, batch_clips: int | None = 1,
                batch_clips_help: str = "model inputs (clips or tiles) per forward pass", with_compile: bool | None = None) -> None:
    """``--device``, ``--dtype``, ``--batch-clips``, ``--compile`` and ``--quiet``; a command that has its
    own way of placing the model (encode-dataset's ``--accelerator``) or one precision (fvd) leaves them
    out. ``--compile`` comes with ``--dtype`` unless ``with_compile`` says otherwise: it compiles the
    autoencoder, which every command with a precision choice runs. ``batch_clips=None``: the command
    chooses once the model is known, and ``batch_clips_help`` says how."""
    group = add_device(parser) if device else parser.add_argument_group("runtime")
    if dtype:
        group.add_argument(
            "--dtype", default="auto", choices=DTYPE_CHOICES,
            help="autocast precision; auto (default): bf16 on GPUs that support it, else fp16; on the CPU bf16 only "
            "with native bf16 instructions (AVX512-BF16 or AMX), else fp32",
        )
    group.add_argument("--batch-clips", type=int, default=batch_clips, metavar="N",
                       help=batch_clips_help if batch_clips is None else f"{batch_clips_help} (default {batch_clips})")
    if dtype if with_compile is None else with_compile:
        group.add_argument("--compile", action="store_true",
                           help="run the model through torch.compile at one fixed batch shape: the first batch "
                                "compiles (a minute or more) and is checked against eager; eager if compiling fails. "
                                "When it pays: docs/inference.md#compilation (default off)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--config", default=None, nargs="+", metavar="YAML",
        help="model YAML (this project's or the official format); several are merged in order, e.g. "
             "configs/tiny.yaml configs/tiny_fsq.yaml; not needed for a save_pretrained directory",
    )
    group.add_argument(
        "--ckpt", required=required,
        help="official .ckpt, this project's checkpoint/.safetensors/save_pretrained dir, or hf://OWNER/NAME[@REVISION][/FILE]",
    )
    group.add_argument("--allow-unsafe-pickle", action="store_true", help="allow full unpickling of a trusted .ckpt")


def add_video(parser: argparse.ArgumentParser, spatial: bool = True) -> None:
    """How frames are sampled from a video and fitted to the model's clip size."""
    group = parser.add_argument_group("video")
    group.add_argument("--sample-fps", type=float, default=None, help="keep every round(fps / F)-th frame (official sampling)")
    group.add_argument("--max-frames", type=int, default=None, help="use at most this many (sampled) frames per video")
    if spatial:
        group.add_argument(
            "--spatial", default="resize", choices=SPATIAL_MODES,
            help="resize: short side + center crop to the model size (official); tile: native size, blended tiles",
        )
        group.add_argument("--tile-overlap", type=int, default=None, metavar="PX", help="tile overlap; default a quarter tile")


def _quiet_native_decoder_logs() -> None:
    """Silence FFmpeg's own log lines inside decord: read failures are reported as our one-line errors."""
    try:
        import decord
    except ImportError:
        return
    decord.logging.set_level(decord.logging.QUIET)


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The options of every step, built (and checked) once from the command line, before any model
    loads, with ``--dtype auto`` resolved for the device the command runs on (said once on stderr)."""
    if not args.verbose:
        _quiet_native_decoder_logs()
    options = InferenceOptions(
        sample_fps=getattr(args, "sample_fps", None),
        max_frames=getattr(args, "max_frames", None),
        spatial=getattr(args, "spatial", "resize"),
        tile_overlap=getattr(args, "tile_overlap", None),
        batch_clips=1 if args.batch_clips is None else args.batch_clips,  # None: the command chooses once the model is known
        dtype=args.dtype,
        progress=not args.quiet,
        compile=getattr(args, "compile", False),
    )
    if options.dtype != "auto":
        return options
    device = run_device(args)
    dtype, reason = auto_dtype(device)
    if not args.quiet:
        print(f"dtype auto: {dtype} on {device.type} ({reason})", file=sys.stderr)
    return dataclasses.replace(options, dtype=dtype)


def run_device(args: argparse.Namespace) -> torch.device:
    """The device type the model runs on: ``--device``, or for encode-dataset the one that Lightning
    puts the model on (``--accelerator``)."""
    accelerator = getattr(args, "accelerator", None)
    if accelerator is None:
        return resolve_device(args.device)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if on_gpu else "cpu")


def load_autoencoder(args: argparse.Namespace) -> torch.nn.Module:
    device = resolve_device(args.device)
    if device.type == "cpu":
        choice = apply_cpu_thread_policy()
        if not (getattr(args, "quiet", False) or args.verbose):  # --verbose shows the same line through logging
            print(choice.describe(), file=sys.stderr)
    model = load_model(args.config, args.ckpt, device=device, allow_unsafe_pickle=args.allow_unsafe_pickle)
    logger.info("loaded %s on %s (%.1fM parameters)", args.ckpt, device, sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def report_written(target: Path, writer: VideoWriter, side: VideoWriter | None = None) -> None:
    height, width = writer.size
    line = f"wrote {target} ({writer.num_frames} frames, {width}x{height}, {writer.fps:.3f} fps)"
    if side is not None:
        side_height, side_width = side.size
        line += f" and {side_by_side_path(target)} ({side_width}x{side_height}, side by side)"
    print(line)


def with_side_by_side(outputs: list[Path], side_by_side: bool) -> list[Path]:
    return outputs + ([side_by_side_path(o) for o in outputs] if side_by_side else [])


def plan_outputs(args: argparse.Namespace, suffix: str, tag: str, side_by_side: bool = False) -> tuple[list[Path], list[Path], bool]:
    """``(inputs, outputs, is_directory)`` of reconstruct / encode, checked before any work (see outputs.py).

    A single output is claimed here, before the model loads; a folder's outputs are claimed one
    video at a time by :func:`for_each_video`.
    """
    inputs, is_directory = collect_inputs(args.input, args.recursive, args.output)
    outputs = output_paths(inputs, is_directory, args.output, suffix, tag, Path(args.input) if is_directory else None)
    targets = with_side_by_side(outputs, side_by_side)
    if is_directory:
        check_targets(targets, inputs, args.overwrite)
    else:
        claim_outputs(args.claims, targets, inputs, args.overwrite)
    return inputs, outputs, is_directory


def for_each_video(args: argparse.Namespace, inputs: list[Path], outputs: list, work: Callable[[Path, object], None],
              is_directory: bool, side_by_side: bool = False) -> int:
    """Run ``work`` per input. A single input's error propagates (a user error); in directory mode a
    failed video is reported as it happens, the others go on, and a summary ends a partial failure.
    In directory mode each video's outputs are claimed while its work runs."""
    if not is_directory:
        work(inputs[0], outputs[0])
        return 0
    failures = 0
    videos = tqdm(list(zip(inputs, outputs)), desc="videos", unit="video", disable=args.quiet or len(inputs) < 2,
                  dynamic_ncols=True)
    for source, target in videos:
        try:
            with ExitStack() as claims:
                claim_outputs(claims, with_side_by_side([target], side_by_side), [source], args.overwrite)
                work(source, target)
        except UserError as error:
            failures += 1
            tqdm.write(f"{args.prog}: failed: {one_line(error)}", file=sys.stderr)
    if failures:
        raise PartialFailure(f"{failures} of {len(inputs)} videos failed (listed above); the others were written")
    return 0
