"""`vidtwin encode`: write the latents of videos to .safetensors files (FSQ models: their integer tokens).

    vidtwin encode --config vidtwin --ckpt hf://microsoft/vidtwin --input clip.mp4 --output clip.latents.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.video_io import probe_video
from ..inference.outputs import LATENT_SUFFIX
from ..inference.pipeline import encode_video
from ..latents.latent_file import save_latents
from .options import (add_directory_options, add_model, add_overwrite, add_runtime, add_video, for_each_video,
                      inference_options, load_autoencoder, plan_outputs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a video or a directory of videos")
    parser.add_argument("--output", required=True, help="a .safetensors file (single input) or a directory")
    add_directory_options(parser)
    add_overwrite(parser)
    add_model(parser)
    add_video(parser)
    add_runtime(parser)


def run(args: argparse.Namespace) -> int:
    args.options = inference_options(args)
    inputs, outputs, is_directory = plan_outputs(args, LATENT_SUFFIX, "")
    if not is_directory:
        probe_video(inputs[0])
    model = load_autoencoder(args)

    def work(path: Path, target: Path) -> None:
        encoded = encode_video(model, path, args.options)
        save_latents(encoded, target)  # a failed write (a full disk) is a LatentFileError naming the file
        print(f"wrote {target} ({encoded.num_clips} clips x {encoded.num_tiles} tiles, {encoded.num_frames} frames)")

    return for_each_video(args, inputs, outputs, work, is_directory)
