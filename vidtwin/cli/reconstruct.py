"""`vidtwin reconstruct`: encode and decode videos of any length and size; writes mp4s.

    vidtwin reconstruct --config vidtwin --ckpt hf://microsoft/vidtwin --input clip.mp4 --output out/clip_rec.mp4 --side-by-side
    vidtwin reconstruct --config vidtwin --ckpt vidtwin.ckpt --input videos/ --output out/ --spatial tile --batch-clips 8
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

import torch

from ..data.video_io import VideoWriter, probe_video
from ..inference.outputs import side_by_side_path
from ..inference.pipeline import iter_reconstruction, opened_source, to_uint8_frames
from .options import (add_directory_options, add_model, add_overwrite, add_runtime, add_video, for_each_video,
                      inference_options, load_autoencoder, plan_outputs, report_written)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a video or a directory of videos")
    parser.add_argument("--output", required=True, help="an .mp4 (single input) or a directory")
    parser.add_argument("--side-by-side", action="store_true", help="also write <output>_side_by_side.mp4: input | output")
    add_directory_options(parser)
    add_overwrite(parser)
    add_model(parser)
    add_video(parser)
    add_runtime(parser)


def run(args: argparse.Namespace) -> int:
    args.options = inference_options(args)
    inputs, outputs, is_directory = plan_outputs(args, ".mp4", "_reconstructed", side_by_side=args.side_by_side)
    if not is_directory:
        probe_video(inputs[0])  # a bad single input fails before the model is loaded
    model = load_autoencoder(args)

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
        report_written(target, writer, side)

    return for_each_video(args, inputs, outputs, work, is_directory, side_by_side=args.side_by_side)
