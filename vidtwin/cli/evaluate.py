"""`vidtwin evaluate`: PSNR, SSIM and LPIPS of reconstructions per video and overall (``--fvd``: rFVD too).

    vidtwin evaluate --config vidtwin --ckpt vidtwin.ckpt --input videos/ --output eval/ --plots
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from ..checkpoint import resolve_checkpoint_path
from ..errors import PartialFailure
from ..inference.evaluate import evaluate_videos, format_table, list_eval_items, report_paths, write_reports
from ..inference.fvd_command import prepare_reconstruction_fvd
from ..inference.fvd_reconstruction import ReconstructionFVDFailed
from ..inference.options import InferenceError, resolve_device
from ..inference.outputs import check_targets, check_writable_folder
from ..losses.lpips import LPIPS, VGG16_FILENAME, LPIPSWeightsUnavailable, read_lpips_state_dict
from .convention import one_line
from .fvd import add_evaluate_fvd_arguments
from .options import add_model, add_overwrite, add_runtime, add_video, inference_options, load_autoencoder

logger = logging.getLogger("vidtwin.inference")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a video, a directory of videos, or a CSV (path[,reconstruction])")
    parser.add_argument("--output", required=True, help="directory for metrics.csv, per_frame.csv, summary.json")
    parser.add_argument("--data-dir", default=None, help="root for relative paths in the CSV (default: its folder)")
    parser.add_argument("--plots", action="store_true", help="also write plots/<video>.png")
    parser.add_argument(
        "--lpips", choices=("vgg", "random", "off"), default="vgg",
        help="vgg: real LPIPS (weights from --lpips-weights, the checkpoint, the lpips package, the torch cache); "
        "random: random backbone, for code checks only; off: skip LPIPS",
    )
    parser.add_argument("--lpips-weights", default=None, help="file holding loss.perceptual_loss.* (e.g. the official .ckpt)")
    add_evaluate_fvd_arguments(parser)
    add_overwrite(parser)
    add_model(parser, required=False)
    add_video(parser)
    add_runtime(parser)


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


def run(args: argparse.Namespace) -> int:
    args.options = inference_options(args)
    items = list_eval_items(args.input, args.data_dir)
    output_dir = Path(args.output)
    check_writable_folder(output_dir)
    inputs = [args.input, *(item.path for item in items), *(item.reconstruction for item in items if item.reconstruction)]
    check_targets(report_paths(output_dir, items, args.plots), inputs, args.overwrite)
    needs_model = any(item.reconstruction is None for item in items)
    if needs_model and not args.ckpt:
        raise InferenceError("evaluate reconstructs the videos, so it needs --config and --ckpt (or a CSV with a reconstruction column)")
    device = resolve_device(args.device)
    fvd = prepare_reconstruction_fvd(args, [item.path for item in items], args.options, device)  # checked before any work
    model = load_autoencoder(args) if needs_model else None
    lpips_model = _lpips_model(args, device)
    all_scores = evaluate_videos(items, model, lpips_model, args.options, fvd)
    fvd_result, fvd_failure = None, None
    if fvd is not None:
        try:
            fvd_result = fvd.result(args.input)
        except ReconstructionFVDFailed as error:  # the finished PSNR/SSIM reports are written first
            fvd_failure = error
    for scores in all_scores:
        if scores.error:
            print(f"{args.prog}: failed: {one_line(scores.error)}", file=sys.stderr)
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
    failed = (f"{len(summary['failed'])} of {len(all_scores)} videos failed (listed above); "
              if summary["failed"] else "")
    if fvd_failure is not None:
        raise PartialFailure(f"{failed}the reconstruction FVD failed ({fvd_failure}); the per-video metrics "
                             f"were written to {output_dir} without it") from fvd_failure
    if failed:
        raise PartialFailure(f"{failed}the reports hold the others")
    return 0
