"""``python inference.py``: reconstruct, encode, decode, cross-reenact and evaluate videos.

Examples (the tiny config runs on a laptop CPU; use configs/vidtwin.yaml with the official weights)::

    python inference.py reconstruct --config configs/vidtwin.yaml --ckpt hf://microsoft/vidtwin \\
        --input clip.mp4 --output out/clip_rec.mp4 --side-by-side
    python inference.py reconstruct --config configs/vidtwin.yaml --ckpt vidtwin.ckpt \\
        --input videos/ --output out/ --spatial tile --device cuda --dtype bf16 --batch-clips 8
    python inference.py encode --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --input clip.mp4 --output clip.safetensors
    python inference.py decode --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --latents clip.safetensors \\
        --output clip_structure.mp4 --only structure
    python inference.py cross --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --structure a.mp4 --dynamics b.mp4 \\
        --output a_moves_like_b.mp4
    python inference.py evaluate --config configs/vidtwin.yaml --ckpt vidtwin.ckpt --input videos/ --output eval/ --plots

Errors follow vidtwin/cli_utils.py: a user error (missing or unreadable input, an output that is
an input or exists without --overwrite, config/checkpoint mismatch, unwritable output, latents of
another config) ends with one ``inference.py: error: ...`` line on stderr and exit code 2, before
anything is written (see vidtwin/inference/outputs.py). With a directory of videos, a bad video is
reported and the others are still processed; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from vidtwin.checkpoint import load_model, resolve_checkpoint_path
from vidtwin.cli_utils import PartialFailure, add_debug_flag, one_line, run_main, user_error_types
from vidtwin.data.video_io import probe_video, write_video
from vidtwin.inference.evaluate import evaluate_videos, format_table, list_eval_items, report_paths, write_reports
from vidtwin.inference.latent_file import EncodedVideo, load_latents, save_latents
from vidtwin.inference.outputs import (
    LATENT_SUFFIX,
    check_targets,
    check_video_output,
    check_writable_folder,
    collect_inputs,
    output_paths,
    prepare_output,
    side_by_side_path,
)
from vidtwin.inference.pipeline import (
    DTYPES,
    SPATIAL_MODES,
    InferenceError,
    cross_reenact,
    encode_video,
    iter_decoded,
    iter_reconstruction,
    load_source,
    model_space_frames,
    resolve_device,
    to_uint8_frames,
)
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
    group.add_argument("--dtype", default="fp32", choices=tuple(DTYPES), help="autocast precision; default fp32")
    group.add_argument("--batch-clips", type=int, default=1, metavar="N", help="model inputs (clips or tiles) per forward pass")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--config", default=None,
        help="model YAML (this project's or the official format); not needed for a save_pretrained directory",
    )
    group.add_argument(
        "--ckpt", required=required,
        help="official .ckpt, this project's checkpoint/.safetensors/save_pretrained dir, or hf://microsoft/vidtwin",
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


def _video_kwargs(args: argparse.Namespace) -> dict:
    return dict(sample_fps=args.sample_fps, max_frames=args.max_frames)


def _model_kwargs(args: argparse.Namespace) -> dict:
    return dict(batch_clips=args.batch_clips, dtype=args.dtype, progress=not args.quiet)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.batch_clips < 1:
        raise InferenceError(f"--batch-clips must be >= 1, got {args.batch_clips}")
    if getattr(args, "max_frames", None) is not None and args.max_frames < 1:
        raise InferenceError(f"--max-frames must be >= 1, got {args.max_frames}")
    if getattr(args, "sample_fps", None) is not None and not (math.isfinite(args.sample_fps) and args.sample_fps > 0):
        raise InferenceError(f"--sample-fps must be a positive number, got {args.sample_fps}")


def _load(args: argparse.Namespace) -> torch.nn.Module:
    device = resolve_device(args.device)
    model = load_model(args.config, args.ckpt, device=device, allow_unsafe_pickle=args.allow_unsafe_pickle)
    logger.info("loaded %s on %s (%.1fM parameters)", args.ckpt, device, sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def _plan_outputs(args: argparse.Namespace, suffix: str, tag: str, side_by_side: bool = False) -> tuple[list[Path], list[Path], bool]:
    """``(inputs, outputs, is_directory)`` of reconstruct / encode, checked before any work (see outputs.py)."""
    inputs, is_directory = collect_inputs(args.input, args.recursive, args.output)
    outputs = output_paths(inputs, is_directory, args.output, suffix, tag, Path(args.input) if is_directory else None)
    check_targets(outputs + ([side_by_side_path(o) for o in outputs] if side_by_side else []), inputs, args.overwrite)
    return inputs, outputs, is_directory


def _for_each(inputs: list[Path], outputs: list, work: Callable[[Path, object], None], quiet: bool, is_directory: bool) -> int:
    """Run ``work`` per input. A single input's error propagates (a user error); in directory mode a
    failed video is reported as it happens, the others go on, and a summary ends a partial failure."""
    if not is_directory:
        work(inputs[0], outputs[0])
        return 0
    failures = 0
    videos = tqdm(list(zip(inputs, outputs)), desc="videos", unit="video", disable=quiet or len(inputs) < 2, dynamic_ncols=True)
    for source, target in videos:
        try:
            work(source, target)
        except user_error_types() as error:
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
        source = load_source(path, **_video_kwargs(args))
        outputs_u8, references_u8 = [], []
        for clip in iter_reconstruction(model, source, spatial=args.spatial, tile_overlap=args.tile_overlap, **_model_kwargs(args)):
            outputs_u8.append(to_uint8_frames(clip.output))  # (t, H, W, 3)
            if args.side_by_side:
                references_u8.append(to_uint8_frames(clip.reference))
        video = torch.cat(outputs_u8)  # (N, H, W, 3)
        write_video(target, video, source.fps)
        if args.side_by_side:
            write_video(side_by_side_path(target), torch.cat([torch.cat(references_u8), video], dim=2), source.fps)
        print(f"wrote {target} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]}, {source.fps:.3f} fps)")

    return _for_each(inputs, outputs, work, args.quiet, is_directory)


def run_encode(args: argparse.Namespace) -> int:
    inputs, outputs, is_directory = _plan_outputs(args, LATENT_SUFFIX, "")
    if not is_directory:
        probe_video(inputs[0])
    model = _load(args)

    def work(path: Path, target: Path) -> None:
        encoded = encode_video(
            model, path, spatial=args.spatial, tile_overlap=args.tile_overlap, **_video_kwargs(args), **_model_kwargs(args)
        )
        try:
            save_latents(encoded, target)
        except OSError as error:
            raise InferenceError(f"cannot write output {target}: {error.strerror or error}") from None
        print(f"wrote {target} ({encoded.num_clips} clips x {encoded.num_tiles} tiles, {encoded.num_frames} frames)")

    return _for_each(inputs, outputs, work, args.quiet, is_directory)


def _write_decoded(target: Path, clips, fps: float) -> torch.Tensor:
    video = torch.cat([to_uint8_frames(clip.output) for clip in clips])  # (N, H, W, 3)
    write_video(target, video, fps)
    print(f"wrote {target} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]}, {fps:.3f} fps)")
    return video


def run_decode(args: argparse.Namespace) -> int:
    target = prepare_output(check_video_output(args.output))
    check_targets([target], [args.latents], args.overwrite)
    encoded = load_latents(args.latents)
    model = _load(args)
    encoded.check_config(model.config, what=f"the latents in {args.latents}")
    if not args.allow_other_weights:
        encoded.check_weights(model, what=f"the latents in {args.latents}")
    _write_decoded(target, iter_decoded(model, encoded, only=args.only, **_model_kwargs(args)), encoded.fps)
    return 0


def run_cross(args: argparse.Namespace) -> int:
    def open_source(path: str):
        if path.lower().endswith(LATENT_SUFFIX):
            return load_latents(path)
        probe_video(path)
        return load_source(path, **_video_kwargs(args))

    target = prepare_output(check_video_output(args.output))
    check_targets([target, side_by_side_path(target)] if args.side_by_side else [target],
                  [args.structure, args.dynamics], args.overwrite)
    if args.side_by_side and any(path.lower().endswith(LATENT_SUFFIX) for path in (args.structure, args.dynamics)):
        raise InferenceError("--side-by-side needs --structure and --dynamics to be videos, not latent files")
    structure, dynamics = open_source(args.structure), open_source(args.dynamics)
    model = _load(args)
    for name, item in (("--structure", structure), ("--dynamics", dynamics)):
        if isinstance(item, EncodedVideo):
            item.check_config(model.config, what=f"the {name} latents")
            if not args.allow_other_weights:
                item.check_weights(model, what=f"the {name} latents")
    result = cross_reenact(
        model, structure, dynamics, spatial=args.spatial, tile_overlap=args.tile_overlap, **_model_kwargs(args)
    )
    video = to_uint8_frames(result.video)  # (N, H, W, 3)
    write_video(target, video, result.fps)
    print(f"wrote {target} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]}, {result.fps:.3f} fps)")
    if args.side_by_side:
        panels = [
            model_space_frames(model, item, spatial=args.spatial, tile_overlap=args.tile_overlap)[: video.shape[0]]
            for item in (structure, dynamics)
        ]
        write_video(side_by_side_path(target), torch.cat([*panels, video], dim=2), result.fps)
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
    model = _load(args) if needs_model else None
    lpips_model = _lpips_model(args, device)
    all_scores = evaluate_videos(
        items, model, lpips_model, spatial=args.spatial, tile_overlap=args.tile_overlap, **_video_kwargs(args),
        **_model_kwargs(args),
    )
    for scores in all_scores:
        if scores.error:
            print(f"{PROG}: failed: {one_line(scores.error)}", file=sys.stderr)
    settings = {
        "config": args.config, "ckpt": args.ckpt, "input": args.input, "spatial": args.spatial,
        "tile_overlap": args.tile_overlap, "sample_fps": args.sample_fps, "max_frames": args.max_frames,
        "dtype": args.dtype, "device": str(device), "lpips": args.lpips,
        "definitions": "per-frame PSNR and SSIM (Gaussian window 11, sigma 1.5) on [0, 1]; LPIPS-VGG on [-1, 1]; "
        "reference = model-space input (resized+cropped or native); padding frames not scored",
    }
    if args.lpips == "random":
        settings["lpips_note"] = "random VGG backbone: a code check, not a perceptual metric"
    summary = write_reports(all_scores, output_dir, settings, plots=args.plots)
    print(format_table(all_scores, summary))
    print(f"wrote {output_dir / 'metrics.csv'}, {output_dir / 'per_frame.csv'}, {output_dir / 'summary.json'}")
    if summary["failed"]:
        raise PartialFailure(f"{len(summary['failed'])} of {len(all_scores)} videos failed (listed above); "
                             "the reports hold the others")
    return 0


# ----------------------------------------------------------------------------------------------
# parser and entry point
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="VidTwin inference: reconstruct, encode, decode, cross-reenact, evaluate.",
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
    decode.add_argument("--latents", required=True, help="a .safetensors file written by encode")
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
    evaluate.add_argument("--input", required=True, help="a directory of videos, or a CSV (path[,reconstruction])")
    evaluate.add_argument("--output", required=True, help="directory for metrics.csv, per_frame.csv, summary.json")
    evaluate.add_argument("--data-dir", default=None, help="root for relative paths in the CSV (default: its folder)")
    evaluate.add_argument("--plots", action="store_true", help="also write plots/<video>.png")
    evaluate.add_argument(
        "--lpips", choices=("vgg", "random", "off"), default="vgg",
        help="vgg: real LPIPS (weights from --lpips-weights, the checkpoint, the lpips package, the torch cache); "
        "random: random backbone, for code checks only; off: skip LPIPS",
    )
    evaluate.add_argument("--lpips-weights", default=None, help="file holding loss.perceptual_loss.* (e.g. the official .ckpt)")
    _add_overwrite(evaluate), _add_model(evaluate, required=False), _add_video(evaluate), _add_runtime(evaluate)
    evaluate.set_defaults(run=run_evaluate)
    return parser


def _quiet_native_decoder_logs() -> None:
    """Silence FFmpeg's own log lines inside decord: read failures are reported as our one-line errors."""
    try:
        import decord
    except ImportError:
        return
    decord.logging.set_level(decord.logging.QUIET)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code of the convention in :mod:`vidtwin.cli_utils`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not args.verbose:
        _quiet_native_decoder_logs()

    def run() -> int:
        _check_numbers(args)
        return args.run(args)

    return run_main(PROG, run, debug=args.debug)
