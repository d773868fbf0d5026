"""`vidtwin generate`: sample videos from a trained latent generator and decode them with its autoencoder.

    vidtwin generate --generator logs/digits_gen --all-classes --num 8 --output samples/
    vidtwin generate --generator logs/digits_gen --class 3-left --class 7 --num 4 --output samples/ --seed 1 --save-latents

The generator is a ``vidtwin train`` run folder (its newest readable checkpoint, EMA weights when
stored), one of its checkpoints, a ``save_pretrained`` folder or a Hub repo id. The autoencoder is
``--config``/``--ckpt`` when given, else the one the generator records; its weights must be the ones
that encoded the generator's training data (``--allow-other-weights`` to decode with others).
"""

from __future__ import annotations

import argparse

from ..inference.generate import run_generate
from .options import add_allow_other_weights, add_model, add_overwrite, add_runtime, inference_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", required=True,
                        help="a `vidtwin train` run folder, one of its checkpoints, a save_pretrained folder or a Hub repo id")
    parser.add_argument("--output", required=True, help="folder for <class>_<index>.mp4 (created)")
    group = parser.add_argument_group("what to generate")
    group.add_argument("--class", dest="classes", action="append", default=None, metavar="NAME_OR_INDEX",
                       help="a class name or index (repeatable)")
    group.add_argument("--all-classes", action="store_true", help="every class of the generator")
    group.add_argument("--unconditional", action="store_true", help="samples without a class")
    group.add_argument("--num", type=int, default=1, help="videos per class (default 1)")
    group = parser.add_argument_group("sampler")
    group.add_argument("--steps", type=int, default=None, help="ODE steps (default 50)")
    group.add_argument("--guidance", type=float, default=None,
                       help="classifier-free guidance scale: 1 the conditional model, 0 the unconditional one (default 2)")
    group.add_argument("--sampler", choices=("euler", "heun"), default="euler", help="ODE solver (default euler)")
    group.add_argument("--seed", type=int, default=0, help="the same seed gives the same videos (default 0)")
    group.add_argument("--fps", type=float, default=8.0, help="frame rate of the written videos (default 8)")
    parser.add_argument("--save-latents", action="store_true",
                        help="also write <class>_<index>.safetensors, which vidtwin decode reads")
    add_overwrite(parser)
    add_model(parser, required=False)
    add_allow_other_weights(parser, encoded="the generator's training data")
    add_runtime(parser, batch_clips=16, batch_clips_help="samples per batch (small latents)", with_compile=False)


def run(args: argparse.Namespace) -> int:
    args.options = inference_options(args)
    return run_generate(args)  # checks, sampling, decoding, files: vidtwin/inference/generate.py
