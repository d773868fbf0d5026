"""`vidtwin cross`: cross-reenactment, the structure of one video moved by the dynamics of another.

    vidtwin cross --config vidtwin --ckpt vidtwin.ckpt --structure a.mp4 --dynamics b.mp4 --output a_moves_like_b.mp4
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

import torch

from ..data.video_io import VideoWriter, probe_video
from ..inference.options import InferenceError
from ..inference.outputs import LATENT_SUFFIX, check_video_output, claim_outputs, prepare_output, side_by_side_path
from ..inference.pipeline import cross_latents, iter_decoded, iter_model_space_frames, to_uint8_frames
from ..inference.sources import load_source
from ..latents.latent_file import EncodedVideo, load_latents
from .options import (add_allow_other_weights, add_model, add_overwrite, add_runtime, add_video, inference_options,
                      load_autoencoder, report_written, with_side_by_side)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--structure", required=True, help="video or latent file giving the structure")
    parser.add_argument("--dynamics", required=True, help="video or latent file giving the dynamics")
    parser.add_argument("--output", required=True, help="the .mp4 to write")
    parser.add_argument("--side-by-side", action="store_true", help="also write structure | dynamics | output")
    add_overwrite(parser)
    add_allow_other_weights(parser)
    add_model(parser)
    add_video(parser)
    add_runtime(parser)


def run(args: argparse.Namespace) -> int:
    args.options = inference_options(args)
    def open_source(path: str):
        if path.lower().endswith(LATENT_SUFFIX):
            return load_latents(path)
        probe_video(path)
        return load_source(path, sample_fps=args.options.sample_fps, max_frames=args.options.max_frames)

    target = prepare_output(check_video_output(args.output))
    claim_outputs(args.claims, with_side_by_side([target], args.side_by_side), [args.structure, args.dynamics],
                  args.overwrite)
    if args.side_by_side and any(path.lower().endswith(LATENT_SUFFIX) for path in (args.structure, args.dynamics)):
        raise InferenceError("--side-by-side needs --structure and --dynamics to be videos, not latent files")
    structure, dynamics = open_source(args.structure), open_source(args.dynamics)
    model = load_autoencoder(args)
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
    report_written(target, writer, side)
    return 0
