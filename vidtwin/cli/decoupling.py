"""`vidtwin decoupling`: what the structure and dynamics latents hold, scored on videos, with pictures.

    vidtwin decoupling --config vidtwin --ckpt hf://microsoft/vidtwin --input a.mp4 b.mp4 --output decoupling/

Writes decoupling/report.json (per video and overall: the PSNR of the full, structure-only and
dynamics-only decodes, the share of the slow and the fast change each reproduces, how far the
structure latent moves when the frames are shuffled, and cross-reenactment), decoupling/report.png
and decoupling/videos/<name>.png. Definitions: docs/inference.md, "Decoupling report".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.video_io import probe_video
from ..inference.decoupling import (
    DEFAULT_BAND_CUTOFF, decoupling_report, format_summary, report_paths, unique_names, write_decoupling_report,
)
from ..inference.options import InferenceError
from ..inference.outputs import InputFiles, claim_file_outputs, collect_inputs
from .options import add_model, add_overwrite, add_runtime, add_video, inference_options, load_autoencoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, nargs="+", metavar="VIDEO",
                        help="videos (or folders of videos); two or more give the order ratio and cross-reenactment")
    parser.add_argument("--output", required=True, help="folder for report.json, report.png and videos/<name>.png")
    parser.add_argument("--clips", type=int, default=1, metavar="N",
                        help="clips of each video to score, from its start (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the frame shuffles of the order score (default 0)")
    parser.add_argument("--band-cutoff", type=float, default=DEFAULT_BAND_CUTOFF, metavar="CYCLES",
                        help="border between slow and fast change, in cycles per frame, in (0, 0.5) "
                             f"(default {DEFAULT_BAND_CUTOFF:g}: periods of 8 frames and longer are slow)")
    parser.add_argument("--picture-frames", type=int, default=4, metavar="N", help="frames per row of the pictures (default 4)")
    add_overwrite(parser)
    add_model(parser)
    add_video(parser, spatial=False)
    add_runtime(parser)


def _videos(inputs: list[str]) -> list[Path]:
    """The video files named by ``--input``: files as given, folders' videos (top level) in name order."""
    videos: list[Path] = []
    for item in inputs:
        videos += collect_inputs(item)[0]
    return videos


def run(args: argparse.Namespace) -> int:
    if args.clips < 1:
        raise InferenceError(f"--clips must be >= 1, got {args.clips}")
    if args.picture_frames < 1:
        raise InferenceError(f"--picture-frames must be >= 1, got {args.picture_frames}")
    if not 0.0 < args.band_cutoff < 0.5:
        raise InferenceError(f"--band-cutoff must lie between 0 and 0.5 cycles per frame, got {args.band_cutoff}")
    args.options = inference_options(args)
    videos = _videos(args.input)
    output_dir = Path(args.output)
    if output_dir.exists() and not output_dir.is_dir():
        raise InferenceError(f"--output {output_dir} is a file; give a folder for the report")
    names = unique_names([str(video) for video in videos])
    inputs = InputFiles([*args.input, *videos, *(args.config or [])])
    if Path(args.ckpt).exists():
        inputs.add_folder(args.ckpt)
    for video in videos:
        probe_video(video)  # an unreadable video stops the command before any output folder is made
    claim_file_outputs(args.claims, report_paths(output_dir, names), inputs, args.overwrite)
    model = load_autoencoder(args)
    report = decoupling_report(model, [str(video) for video in videos], args.options, clips=args.clips, seed=args.seed,
                               band_cutoff=args.band_cutoff, names=names, picture_frames=args.picture_frames)
    paths = write_decoupling_report(report, output_dir, settings={"config": args.config, "ckpt": args.ckpt})
    print(format_summary(report.summary))
    print(f"wrote {paths[0]}, {paths[1]} and {len(paths) - 2} picture(s) in {output_dir / 'videos'}")
    return 0
