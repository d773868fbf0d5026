"""``python inference.py``: reconstruct, encode, decode, cross-reenact and evaluate videos.

Examples (the tiny config runs on a laptop CPU; use configs/vidtwin.yaml with the official weights)::

    python inference.py reconstruct --config configs/vidtwin.yaml --ckpt hf://microsoft/vidtwin \\
        --input clip.mp4 --output out/clip_rec.mp4 --side-by-side
    python inference.py reconstruct --config configs/vidtwin.yaml --ckpt vidtwin.ckpt \\
        --input videos/ --output out/ --spatial tile --device cuda --batch-clips 8
    python inference.py encode --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --input clip.mp4 --output clip.safetensors
    python inference.py decode --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --latents clip.safetensors \\
        --output clip_structure.mp4 --only structure
    python inference.py cross --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --structure a.mp4 --dynamics b.mp4 \\
        --output a_moves_like_b.mp4
    python inference.py evaluate --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --input videos/ --output eval/ --plots
    python inference.py fvd --real ucf101/ --fake samples/ --output fvd.json --fvd-weights i3d_pretrained_400.pt

Errors follow vidtwin/cli/convention.py: a user error (missing or unreadable input, an output that is
an input or exists without --overwrite, config/checkpoint mismatch, unwritable output, latents of
another config or other weights) ends with one ``inference.py: error: ...`` line on stderr and exit
code 2, before anything is written (see vidtwin/inference/outputs.py). With a directory of videos
(or a dataset), a bad video is reported and the others are still processed; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from vidtwin.checkpoint import load_model, resolve_checkpoint_path
from vidtwin.cli.convention import PartialFailure, add_debug_flag, one_line, run_main
from vidtwin.cpu_threads import apply_cpu_thread_policy
from vidtwin.data.video_io import VideoWriter, probe_video
from vidtwin.errors import UserError
from vidtwin.inference.evaluate import evaluate_videos, format_table, list_eval_items, report_paths, write_reports
from vidtwin.inference.fvd_command import add_evaluate_fvd_arguments, add_fvd_arguments, prepare_reconstruction_fvd, run_fvd
from vidtwin.inference.options import DTYPE_CHOICES, SPATIAL_MODES, InferenceError, InferenceOptions, auto_dtype, resolve_device
from vidtwin.inference.outputs import (
    LATENT_SUFFIX,
    check_targets,
    check_video_output,
    check_writable_folder,
    claim_outputs,
    collect_inputs,
    output_paths,
    prepare_output,
    side_by_side_path,
)
from vidtwin.inference.pipeline import (
    cross_latents,
    encode_video,
    iter_decoded,
    iter_model_space_frames,
    iter_reconstruction,
    opened_source,
    to_uint8_frames,
)
from vidtwin.inference.sources import load_source
from vidtwin.latents.latent_file import EncodedVideo, load_latents, save_latents
from vidtwin.losses.lpips import LPIPS, VGG16_FILENAME, LPIPSWeightsUnavailable, read_lpips_state_dict

logger = logging.getLogger("vidtwin.inference")

PROG = "inference.py"


# ----------------------------------------------------------------------------------------------
# shared options
# ----------------------------------------------------------------------------------------------


def _add_directory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recursive", action="store_true",
                        help="with a directory --input, also read its sub-folders (kept under --output)")


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")


def _add_allow_other_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-other-weights", action="store_true",
                        help="decode latent files encoded with other weights of the same config")


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    add_debug_flag(parser, in_subcommand=True)
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available); default auto")
    group.add_argument(
        "--dtype", default="auto", choices=DTYPE_CHOICES,
        help="autocast precision; auto (default): bf16 on GPUs that support it, else fp16; on the CPU bf16 only "
        "with native bf16 instructions (AVX512-BF16 or AMX), else fp32",
    )
    group.add_argument("--batch-clips", type=int, default=1, metavar="N", help="model inputs (clips or tiles) per forward pass")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
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


def _add_video(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video")
    group.add_argument("--sample-fps", type=float, default=None, help="keep every round(fps / F)-th frame (official sampling)")
    group.add_argument("--max-frames", type=int, default=None, help="use at most this many (sampled) frames")
    group.add_argument(
        "--spatial", default="resize", choices=SPATIAL_MODES,
        help="resize: short side + center crop to the model size (official); tile: native size, blended tiles",
    )
    group.add_argument("--tile-overlap", type=int, default=None, metavar="PX", help="tile overlap; default a quarter tile")


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The options of every step, built (and checked) once from the command line, before any model
    loads, with ``--dtype auto`` resolved for the device the command runs on (said once on stderr)."""
    options = InferenceOptions(
        sample_fps=getattr(args, "sample_fps", None),
        max_frames=getattr(args, "max_frames", None),
        spatial=getattr(args, "spatial", "resize"),
        tile_overlap=getattr(args, "tile_overlap", None),
        batch_clips=args.batch_clips,
        dtype=args.dtype,
        progress=not args.quiet,
    )
    if options.dtype != "auto":
        return options
    device = _run_device(args)
    dtype, reason = auto_dtype(device)
    if not args.quiet:
        print(f"dtype auto: {dtype} on {device.type} ({reason})", file=sys.stderr)
    return dataclasses.replace(options, dtype=dtype)


def _run_device(args: argparse.Namespace) -> torch.device:
    """The device type the model runs on: ``--device``, or for encode-dataset the one that Lightning
    puts the model on (``--accelerator``)."""
    accelerator = getattr(args, "accelerator", None)
    if accelerator is None:
        return resolve_device(args.device)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if on_gpu else "cpu")


def _load(args: argparse.Namespace) -> torch.nn.Module:
    device = resolve_device(args.device)
    if device.type == "cpu":
        choice = apply_cpu_thread_policy()
        if not (getattr(args, "quiet", False) or args.verbose):  # --verbose shows the same line through logging
            print(choice.describe(), file=sys.stderr)
    model = load_model(args.config, args.ckpt, device=device, allow_unsafe_pickle=args.allow_unsafe_pickle)
    logger.info("loaded %s on %s (%.1fM parameters)", args.ckpt, device, sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def _report(target: Path, writer: VideoWriter, side: VideoWriter | None = None) -> None:
    height, width = writer.size
    line = f"wrote {target} ({writer.num_frames} frames, {width}x{height}, {writer.fps:.3f} fps)"
    if side is not None:
        side_height, side_width = side.size
        line += f" and {side_by_side_path(target)} ({side_width}x{side_height}, side by side)"
    print(line)


def _with_side_by_side(outputs: list[Path], side_by_side: bool) -> list[Path]:
    return outputs + ([side_by_side_path(o) for o in outputs] if side_by_side else [])


def _plan_outputs(args: argparse.Namespace, suffix: str, tag: str, side_by_side: bool = False) -> tuple[list[Path], list[Path], bool]:
    """``(inputs, outputs, is_directory)`` of reconstruct / encode, checked before any work (see outputs.py).

    A single output is claimed here, before the model loads; a folder's outputs are claimed one
    video at a time by :func:`_for_each`.
    """
    inputs, is_directory = collect_inputs(args.input, args.recursive, args.output)
    outputs = output_paths(inputs, is_directory, args.output, suffix, tag, Path(args.input) if is_directory else None)
    targets = _with_side_by_side(outputs, side_by_side)
    if is_directory:
        check_targets(targets, inputs, args.overwrite)
    else:
        claim_outputs(args.claims, targets, inputs, args.overwrite)
    return inputs, outputs, is_directory


def _for_each(args: argparse.Namespace, inputs: list[Path], outputs: list, work: Callable[[Path, object], None],
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
                claim_outputs(claims, _with_side_by_side([target], side_by_side), [source], args.overwrite)
                work(source, target)
        except UserError as error:
            failures += 1
            tqdm.write(f"{PROG}: failed: {one_line(error)}", file=sys.stderr)
    if failures:
        raise PartialFailure(f"{failures} of {len(inputs)} videos failed (listed above); the others were written")
    return 0


# ----------------------------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------------------------


def run_reconstruct(args: argparse.Namespace) -> int:
    inputs, outputs, is_directory = _plan_outputs(args, ".mp4", "_reconstructed", side_by_side=args.side_by_side)
    if not is_directory:
        probe_video(inputs[0])  # a bad single input fails before the model is loaded
    model = _load(args)

    def work(path: Path, target: Path) -> None:
        # Frames are read, reconstructed and written clip by clip: nothing holds the whole video.
        with opened_source(path, args.options) as source, ExitStack() as writers:
            writer = writers.enter_context(VideoWriter(target, source.fps))
            side = writers.enter_context(VideoWriter(side_by_side_path(target), source.fps)) if args.side_by_side else None
            for clip in iter_reconstruction(model, source, args.options):
                frames = to_uint8_frames(clip.output)  # (t, H, W, 3)
                writer.write(frames)
                if side is not None:
                    side.write(torch.cat([to_uint8_frames(clip.reference), frames], dim=2))  # (t, H, 2W, 3)
        _report(target, writer, side)

    return _for_each(args, inputs, outputs, work, is_directory, side_by_side=args.side_by_side)


def run_encode(args: argparse.Namespace) -> int:
    inputs, outputs, is_directory = _plan_outputs(args, LATENT_SUFFIX, "")
    if not is_directory:
        probe_video(inputs[0])
    model = _load(args)

    def work(path: Path, target: Path) -> None:
        encoded = encode_video(model, path, args.options)
        save_latents(encoded, target)  # a failed write (a full disk) is a LatentFileError naming the file
        print(f"wrote {target} ({encoded.num_clips} clips x {encoded.num_tiles} tiles, {encoded.num_frames} frames)")

    return _for_each(args, inputs, outputs, work, is_directory)


def open_latents(path: str, video: str | None) -> EncodedVideo:
    """A latent file, or with ``video`` one video of a latent dataset folder (``encode-dataset``)."""
    if not Path(path).is_dir():
        if video is not None:
            raise InferenceError("--video picks a video of a latent dataset folder; --latents is a file")
        return load_latents(path)
    from vidtwin.latents.dataset import LatentDataset
    from vidtwin.latents.shards import MANIFEST

    if not (Path(path) / MANIFEST).is_file():
        raise InferenceError(f"--latents {path} is a folder but not a latent dataset (no {MANIFEST}); give a .safetensors "
                             "file written by `inference.py encode`, or a folder written by `inference.py encode-dataset`")
    dataset = LatentDataset(path)
    if video is None:
        raise InferenceError(f"--latents {path} is a latent dataset of {len(dataset.videos)} videos; pick one with --video (e.g. --video {dataset.videos[0]!r})")
    return dataset.encoded_video(video)


def run_decode(args: argparse.Namespace) -> int:
    target = prepare_output(check_video_output(args.output))
    claim_outputs(args.claims, [target], [args.latents], args.overwrite)
    encoded = open_latents(args.latents, args.video)
    model = _load(args)
    encoded.check_config(model.config, what=f"the latents in {args.latents}")
    if not args.allow_other_weights:
        encoded.check_weights(model, what=f"the latents in {args.latents}")
    with VideoWriter(target, encoded.fps) as writer:
        for clip in iter_decoded(model, encoded, args.options, only=args.only):
            writer.write(to_uint8_frames(clip.output))  # (t, H, W, 3)
    _report(target, writer)
    return 0


def run_cross(args: argparse.Namespace) -> int:
    def open_source(path: str):
        if path.lower().endswith(LATENT_SUFFIX):
            return load_latents(path)
        probe_video(path)
        return load_source(path, sample_fps=args.options.sample_fps, max_frames=args.options.max_frames)

    target = prepare_output(check_video_output(args.output))
    claim_outputs(args.claims, _with_side_by_side([target], args.side_by_side), [args.structure, args.dynamics],
                  args.overwrite)
    if args.side_by_side and any(path.lower().endswith(LATENT_SUFFIX) for path in (args.structure, args.dynamics)):
        raise InferenceError("--side-by-side needs --structure and --dynamics to be videos, not latent files")
    structure, dynamics = open_source(args.structure), open_source(args.dynamics)
    model = _load(args)
    for name, item in (("--structure", structure), ("--dynamics", dynamics)):
        if isinstance(item, EncodedVideo):
            item.check_config(model.config, what=f"the {name} latents")
            if not args.allow_other_weights:
                item.check_weights(model, what=f"the {name} latents")
    structure_latents, dynamics_latents = cross_latents(model, structure, dynamics, args.options)
    fps = structure_latents.fps
    with ExitStack() as stack:
        for item in (structure, dynamics):
            if not isinstance(item, EncodedVideo):
                stack.callback(item.close)
        writer = stack.enter_context(VideoWriter(target, fps))
        side = stack.enter_context(VideoWriter(side_by_side_path(target), fps)) if args.side_by_side else None
        # The input panels are read again clip by clip, in step with the decoded clips.
        panels = [iter_model_space_frames(model, item, args.options) for item in (structure, dynamics)] if side else []
        for clip in iter_decoded(model, structure_latents, args.options, dynamics=dynamics_latents):
            frames = to_uint8_frames(clip.output)  # (t, H, W, 3)
            writer.write(frames)
            if side is not None:
                inputs = [next(panel)[: frames.shape[0]] for panel in panels]  # each (t, H, W, 3)
                side.write(torch.cat([*inputs, frames], dim=2))  # (t, H, 3W, 3)
    _report(target, writer, side)
    return 0


def _lpips_model(args: argparse.Namespace, device: torch.device):
    """The LPIPS network the user asked for, on ``device``, or None for ``--lpips off``."""
    if args.lpips == "off":
        return None
    if args.lpips == "random":
        torch.manual_seed(0)
        return LPIPS(pretrained=False).to(device)
    weights = None
    source = args.lpips_weights or args.ckpt
    if source:
        try:
            path = args.lpips_weights or resolve_checkpoint_path(args.ckpt)
            if not Path(path).is_dir():
                weights = read_lpips_state_dict(path)
        except (ValueError, OSError, RuntimeError) as error:
            if args.lpips_weights:
                raise InferenceError(f"cannot read LPIPS weights from {args.lpips_weights}: {error}") from None
            logger.info("no LPIPS weights in %s (%s); trying the lpips package and the torch hub cache", source, error)
    try:
        return LPIPS.from_sources(state_dict=weights).to(device)
    except LPIPSWeightsUnavailable:  # the library's message gives training advice; this is evaluate's
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise LPIPSWeightsUnavailable(
            "--lpips vgg needs the ImageNet VGG16 weights, which are not available offline: give --lpips-weights "
            f"FILE (a checkpoint holding loss.perceptual_loss.*, e.g. the official .ckpt), put {VGG16_FILENAME} "
            f"into {cache}/, or evaluate without LPIPS: --lpips off"
        ) from None


def run_evaluate(args: argparse.Namespace) -> int:
    items = list_eval_items(args.input, args.data_dir)
    output_dir = Path(args.output)
    check_writable_folder(output_dir)
    check_targets(report_paths(output_dir, items, args.plots), [args.input], args.overwrite)
    needs_model = any(item.reconstruction is None for item in items)
    if needs_model and not args.ckpt:
        raise InferenceError("evaluate reconstructs the videos, so it needs --config and --ckpt (or a CSV with a reconstruction column)")
    device = resolve_device(args.device)
    fvd = prepare_reconstruction_fvd(args, [item.path for item in items], args.options, device)  # checked before any work
    model = _load(args) if needs_model else None
    lpips_model = _lpips_model(args, device)
    all_scores = evaluate_videos(items, model, lpips_model, args.options, fvd)
    fvd_result = fvd.result(args.input) if fvd is not None else None
    for scores in all_scores:
        if scores.error:
            print(f"{PROG}: failed: {one_line(scores.error)}", file=sys.stderr)
    settings = {
        "config": args.config, "ckpt": args.ckpt, "input": args.input, "spatial": args.spatial,
        "tile_overlap": args.tile_overlap, "sample_fps": args.sample_fps, "max_frames": args.max_frames,
        "dtype": args.options.dtype, "device": str(device), "lpips": args.lpips,
        "definitions": "per-frame PSNR and SSIM (Gaussian window 11, sigma 1.5) on [0, 1]; LPIPS-VGG on [-1, 1]; "
        "reference = model-space input (resized+cropped or native); padding frames not scored",
    }
    if args.lpips == "random":
        settings["lpips_note"] = "random VGG backbone: a code check, not a perceptual metric"
    summary = write_reports(all_scores, output_dir, settings, plots=args.plots, fvd=fvd_result)
    print(format_table(all_scores, summary))
    if fvd_result is not None:
        protocol = fvd_result["protocol"]
        print(f"rFVD {fvd_result['fvd']:.4f} over {protocol['real_clips']} clips of {protocol['frames_per_clip']} frames "
              "(protocol in summary.json)")
    print(f"wrote {output_dir / 'metrics.csv'}, {output_dir / 'per_frame.csv'}, {output_dir / 'summary.json'}")
    if summary["failed"]:
        raise PartialFailure(f"{len(summary['failed'])} of {len(all_scores)} videos failed (listed above); "
                             "the reports hold the others")
    return 0


def run_fvd_command(args: argparse.Namespace) -> int:
    run_fvd(args, args.options)  # vidtwin/inference/fvd_command.py: checks, statistics, report
    return 0


def run_generate_command(args: argparse.Namespace) -> int:
    from vidtwin.inference.generate import run_generate

    return run_generate(args)  # vidtwin/inference/generate.py: checks, sampling, decoding, files


def run_encode_dataset(args: argparse.Namespace) -> int:
    from vidtwin.optional import require

    require("pytorch_lightning", "dataset", "encode-dataset")  # it runs on Trainer.predict
    from vidtwin.inference.dataset_lock import launch_rank, output_lock
    from vidtwin.inference.dataset_plan import (ClipSampling, check_accelerator, check_launcher, count_clips, list_sources,
                                                parse_devices)
    from vidtwin.inference.encode_dataset import DatasetJob, EncodingStopped, check_output, format_summary, run_job
    from vidtwin.latents.actions import check_action_counts, read_actions
    from vidtwin.latents.labels import read_labels
    from vidtwin.latents.latent_file import config_to_dict, weights_fingerprint

    for option, value, least in (("--shard-size", args.shard_size, 1), ("--num-workers", args.num_workers, 0),
                                 ("--num-nodes", args.num_nodes, 1)):
        if value < least:
            raise InferenceError(f"{option} must be >= {least}, got {value}")
    devices = parse_devices(args.devices)
    check_accelerator(args.accelerator, devices)
    check_launcher(args.num_nodes)
    sources = list_sources(args.input, args.data_dir)
    labels = read_labels(args.input, [source.name for source in sources], args.label_column, args.labels_from_folders)
    actions = read_actions(args.input, [source.name for source in sources], args.actions_column)
    options = args.options
    dtype = options.dtype  # concrete: resolved for the accelerator's device type (inference_options)
    model = load_model(args.config, args.ckpt, device="cpu", allow_unsafe_pickle=args.allow_unsafe_pickle)
    sampling = ClipSampling(model.input_size[0], tuple(model.input_size[1:]), options.sample_fps, options.max_frames)
    if actions is not None:  # one letter per clip, checked before anything is written
        check_action_counts(actions, count_clips(sources, sampling, progress=options.progress))
    identity = {
        "model_config": config_to_dict(model.config),
        "weights_fingerprint": weights_fingerprint(model),  # the same check as a latent file's
        "sampling": sampling.to_dict(),
        "dtype": dtype,
    }
    job = DatasetJob(
        sources=sources, output=Path(args.output), sampling=sampling, identity=identity, shard_size=args.shard_size,
        batch_clips=options.batch_clips, num_workers=args.num_workers, overwrite=args.overwrite, progress=options.progress,
        labels=labels.to_manifest() if labels is not None else None,
        actions=actions, actions_source=f"column {args.actions_column.strip()}" if actions is not None else "",
    )
    check_output(job)
    try:
        with output_lock(job.output):
            stats = run_job(job, model, dtype, args.accelerator, devices, args.num_nodes)
    except EncodingStopped as stopped:
        if launch_rank() == 0:  # one line for the job, not one per rank
            print(f"{PROG}: stopped by {stopped}: the shards finished so far are kept in {job.output}; "
                  "run the same command again to resume", file=sys.stderr, flush=True)
        return 128 + stopped.signum  # as a process killed by the signal reports it: 143 for SIGTERM
    if not stats:  # ranks other than 0 report nothing
        return 0
    print(format_summary(stats, job.output))
    if stats["failures"]:
        raise PartialFailure(f"{stats['failures']} of {len(sources)} videos failed; see {job.output / 'failures.csv'}")
    return 0


# ----------------------------------------------------------------------------------------------
# parser and entry point
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="VidTwin inference: reconstruct, encode, decode, cross-reenact, evaluate, encode-dataset, fvd, generate.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:3]),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more details")
    add_debug_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    reconstruct = commands.add_parser("reconstruct", help="encode and decode videos; writes mp4s")
    reconstruct.add_argument("--input", required=True, help="a video or a directory of videos")
    reconstruct.add_argument("--output", required=True, help="an .mp4 (single input) or a directory")
    reconstruct.add_argument("--side-by-side", action="store_true", help="also write <output>_side_by_side.mp4: input | output")
    _add_directory_options(reconstruct)
    _add_overwrite(reconstruct), _add_model(reconstruct), _add_video(reconstruct), _add_runtime(reconstruct)
    reconstruct.set_defaults(run=run_reconstruct)

    encode = commands.add_parser("encode", help="write the latents of videos to .safetensors files")
    encode.add_argument("--input", required=True, help="a video or a directory of videos")
    encode.add_argument("--output", required=True, help="a .safetensors file (single input) or a directory")
    _add_directory_options(encode)
    _add_overwrite(encode), _add_model(encode), _add_video(encode), _add_runtime(encode)
    encode.set_defaults(run=run_encode)

    decode = commands.add_parser("decode", help="rebuild a video from a latent file")
    decode.add_argument("--latents", required=True, help="a .safetensors file written by encode, or an encode-dataset folder")
    decode.add_argument("--video", default=None, help="with an encode-dataset folder: the source video to rebuild, as listed in its index.csv")
    decode.add_argument("--output", required=True, help="the .mp4 to write")
    decode.add_argument("--only", choices=("structure", "dynamics"), default=None, help="decode one latent alone")
    _add_overwrite(decode), _add_allow_other_weights(decode), _add_model(decode), _add_runtime(decode)
    decode.set_defaults(run=run_decode)

    cross = commands.add_parser("cross", help="structure of one video with the dynamics of another")
    cross.add_argument("--structure", required=True, help="video or latent file giving the structure")
    cross.add_argument("--dynamics", required=True, help="video or latent file giving the dynamics")
    cross.add_argument("--output", required=True, help="the .mp4 to write")
    cross.add_argument("--side-by-side", action="store_true", help="also write structure | dynamics | output")
    _add_overwrite(cross), _add_allow_other_weights(cross), _add_model(cross), _add_video(cross), _add_runtime(cross)
    cross.set_defaults(run=run_cross)

    evaluate = commands.add_parser("evaluate", help="PSNR / SSIM / LPIPS of reconstructions")
    evaluate.add_argument("--input", required=True, help="a video, a directory of videos, or a CSV (path[,reconstruction])")
    evaluate.add_argument("--output", required=True, help="directory for metrics.csv, per_frame.csv, summary.json")
    evaluate.add_argument("--data-dir", default=None, help="root for relative paths in the CSV (default: its folder)")
    evaluate.add_argument("--plots", action="store_true", help="also write plots/<video>.png")
    evaluate.add_argument(
        "--lpips", choices=("vgg", "random", "off"), default="vgg",
        help="vgg: real LPIPS (weights from --lpips-weights, the checkpoint, the lpips package, the torch cache); "
        "random: random backbone, for code checks only; off: skip LPIPS",
    )
    evaluate.add_argument("--lpips-weights", default=None, help="file holding loss.perceptual_loss.* (e.g. the official .ckpt)")
    add_evaluate_fvd_arguments(evaluate)
    _add_overwrite(evaluate), _add_model(evaluate, required=False), _add_video(evaluate), _add_runtime(evaluate)
    evaluate.set_defaults(run=run_evaluate)

    fvd = commands.add_parser("fvd", help="Frechet Video Distance between two sets of videos, with its protocol")
    add_fvd_arguments(fvd)
    fvd.set_defaults(run=run_fvd_command)

    dataset = commands.add_parser("encode-dataset", help="encode a folder or CSV of videos into a sharded latent dataset")
    dataset.add_argument("--input", required=True, help="a folder (searched recursively) or a meta CSV with a 'videos' column")
    dataset.add_argument("--data-dir", default=None, help="root of the CSV's relative paths (default: the CSV's folder)")
    dataset.add_argument("--output", required=True, help="the latent dataset folder (created; rerun to resume)")
    dataset.add_argument("--shard-size", type=int, default=4096, metavar="CLIPS", help="clips per shard file (default 4096)")
    dataset.add_argument("--overwrite", action="store_true", help="replace a latent dataset made with other settings")
    dataset.add_argument("--label-column", default=None, metavar="NAME",
                         help="record each video's class from this column of the CSV --input (see docs/datasets.md)")
    dataset.add_argument("--labels-from-folders", action="store_true",
                         help="record each video's class as its first folder under the folder --input (as ImageFolder)")
    dataset.add_argument("--actions-column", default=None, metavar="NAME",
                         help="record each clip's action from this column of the CSV --input: one letter per clip "
                              "(e.g. RRUULDLL for 8 clips; see docs/datasets.md)")
    _add_model(dataset)
    group = dataset.add_argument_group("video")
    group.add_argument("--sample-fps", type=float, default=None, help="keep every round(fps / F)-th frame (official sampling)")
    group.add_argument("--max-frames", type=int, default=None, help="use at most this many (sampled) frames per video")
    group = dataset.add_argument_group("processes")
    group.add_argument("--accelerator", default="auto", choices=("cpu", "gpu", "cuda", "auto"), help="default auto")
    group.add_argument("--devices", default="1", help="processes per node (GPUs, or CPU processes), 'auto', or GPU ids such as 0,1; default 1")
    group.add_argument("--num-nodes", type=int, default=1, help="nodes (launch with torchrun or srun); default 1")
    group.add_argument("--num-workers", type=int, default=2, help="video-decoding DataLoader workers per process; default 2")
    group.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                       help="autocast precision; auto (default): bf16 where the GPU or CPU runs it natively, else fp16 on GPUs, fp32 on CPUs")
    group.add_argument("--batch-clips", type=int, default=1, metavar="N", help="clips per forward pass")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_flag(dataset, in_subcommand=True)
    dataset.set_defaults(run=run_encode_dataset)

    generate = commands.add_parser("generate", help="sample videos from a trained latent generator")
    from vidtwin.inference.generate import add_generate_arguments

    add_generate_arguments(generate)
    _add_overwrite(generate), _add_model(generate, required=False), _add_runtime(generate)
    generate.set_defaults(run=run_generate_command, batch_clips=16)  # samples per batch: small latents
    return parser


def _quiet_native_decoder_logs() -> None:
    """Silence FFmpeg's own log lines inside decord: read failures are reported as our one-line errors."""
    try:
        import decord
    except ImportError:
        return
    decord.logging.set_level(decord.logging.QUIET)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code of the convention in :mod:`vidtwin.cli.convention`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not args.verbose:
        _quiet_native_decoder_logs()

    def run() -> int:
        args.options = inference_options(args)
        with ExitStack() as claims:  # output names claimed for the whole command (see outputs.claim_outputs)
            args.claims = claims
            return args.run(args)

    return run_main(PROG, run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
