"""`vidtwin decode`: rebuild a video from a latent file or one video of a latent dataset.

    vidtwin decode --config vidtwin --ckpt vidtwin.ckpt --latents clip.safetensors --output clip_structure.mp4 --only structure
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.video_io import VideoWriter
from ..inference.options import InferenceError
from ..inference.outputs import check_video_output, claim_outputs, prepare_output
from ..inference.pipeline import iter_decoded, to_uint8_frames
from ..latents.latent_file import EncodedVideo, load_latents
from .options import add_allow_other_weights, add_model, add_overwrite, add_runtime, inference_options, load_autoencoder, report_written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latents", required=True, help="a .safetensors file written by encode, or an encode-dataset folder")
    parser.add_argument("--video", default=None, help="with an encode-dataset folder: the source video to rebuild, as listed in its index.csv")
    parser.add_argument("--output", required=True, help="the .mp4 to write")
    parser.add_argument("--only", choices=("structure", "dynamics"), default=None, help="decode one latent alone")
    add_overwrite(parser)
    add_allow_other_weights(parser)
    add_model(parser)
    add_runtime(parser)


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
                             "file written by `vidtwin encode`, or a folder written by `vidtwin encode-dataset`")
    dataset = LatentDataset(path)
    if video is None:
        raise InferenceError(f"--latents {path} is a latent dataset of {len(dataset.videos)} videos; pick one with --video (e.g. --video {dataset.videos[0]!r})")
    return dataset.encoded_video(video)


def run(args: argparse.Namespace) -> int:
    args.options = inference_options(args)
    target = prepare_output(check_video_output(args.output))
    claim_outputs(args.claims, [target], [args.latents], args.overwrite)
    encoded = open_latents(args.latents, args.video)
    model = load_autoencoder(args)
    encoded.check_config(model.config, what=f"the latents in {args.latents}")
    if not args.allow_other_weights:
        encoded.check_weights(model, what=f"the latents in {args.latents}")
    with VideoWriter(target, encoded.fps) as writer:
        for clip in iter_decoded(model, encoded, args.options, only=args.only):
            writer.write(to_uint8_frames(clip.output))  # (t, H, W, 3)
    report_written(target, writer)
    return 0
