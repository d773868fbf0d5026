"""`vidtwin demo check-generation`: check that Moving Digits clips show the digit and the direction they were asked for.

    vidtwin demo check-generation samples/ --data data/moving_digits
    vidtwin demo check-generation data/moving_digits/val.csv --data data/moving_digits
    vidtwin demo check-generation samples/ --data data/moving_digits \\
        --config logs/digits_ae/config.yaml --ckpt logs/digits_ae/checkpoints/last.ckpt

CLIPS is a folder of generated mp4 files named ``<digit>-<direction>_<index>.mp4`` (as ``vidtwin
generate`` names them, e.g. ``3-left_000.mp4``) or a Moving Digits CSV (``videos``, ``digit``,
``direction``). Each clip's digit is read by a classifier trained on the data set's training digit
images, its direction from the motion of the ink's centroid (see :mod:`vidtwin.demos.digit_checker`).

The report gives both accuracies against chance (10% and 25%) and, as the ceiling, the same
checker's accuracies on the real validation clips of the data set (digit images it never trained
on). With ``--config`` and ``--ckpt`` (the autoencoder) it also measures the decoupling score on the
clips given: ``--pairs`` seeded pairs of clips that differ in both digit and direction, each
cross-reenacted as ``vidtwin cross`` does (the structure of the first clip with the dynamics of the
second), and the share whose digit follows the structure source and whose direction follows the
dynamics source. ``--json FILE`` also writes the figures (atomically), under the output rules of
every command: an existing file needs ``--overwrite``, and no input (the clips, the data set's
files, the autoencoder) is ever replaced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from ..demos.digit_checker import (CheckGenerationError, Clip, DigitChecker, cross_reenacted, crossing_pairs,
                                   data_settings, decoupling_score, load_clips, real_validation_clips)
from ..demos.moving_digits import SETTINGS_FILE
from ..inference.outputs import InputFiles, claim_file_outputs, write_text_output
from .options import add_model, add_overwrite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clips", type=Path, help="folder of generated clips, or a Moving Digits CSV")
    parser.add_argument("--data", type=Path, default=Path("data/moving_digits"),
                        help="the Moving Digits folder (settings, training digits, val.csv); default data/moving_digits")
    parser.add_argument("--no-ceiling", action="store_true", help="skip scoring the real validation clips")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    add_overwrite(parser)
    add_model(parser, required=False)  # the autoencoder: with --ckpt, also measure the decoupling score
    group = parser.add_argument_group("decoupling score (with --ckpt)")
    group.add_argument("--pairs", type=int, default=80, help="cross-reenacted pairs for the decoupling score (default 80)")
    group.add_argument("--seed", type=int, default=0, help="of the choice of pairs (default 0)")


def input_files(args: argparse.Namespace, clips: List[Clip], real: List[Clip]) -> InputFiles:
    """What the check reads: the clips (and their CSV), the data set's settings and validation clips, the autoencoder."""
    listed = [args.clips, *(clip.path for clip in clips), args.data / SETTINGS_FILE, args.data / "val.csv",
              *(clip.path for clip in real), *(args.config or [])]
    inputs = InputFiles(listed)
    if args.ckpt is not None:
        inputs.add_folder(args.ckpt)  # a save_pretrained folder is read as a whole
    return inputs


def report(figures: dict, ceiling: Optional[dict], decoupling: Optional[dict] = None) -> str:
    lines = [f"{'':<22} {'generated':>10} {'chance':>8} {'real (ceiling)':>15}"]
    for key, name, chance in (("digit_accuracy", "digit accuracy", 0.10), ("direction_accuracy", "direction accuracy", 0.25)):
        real = f"{100 * ceiling[key]:.1f}%" if ceiling else "-"
        lines.append(f"{name:<22} {100 * figures[key]:>9.1f}% {100 * chance:>7.0f}% {real:>15}")
    clips = f"{figures['clips']} clips" + (f"; ceiling on {ceiling['clips']} real validation clips" if ceiling else "")
    lines.append(clips)
    if decoupling is not None:
        lines.append(f"decoupling on {decoupling['pairs']} cross-reenacted pairs: digit from the structure source "
                     f"{100 * decoupling['digit_from_structure']:.1f}%, direction from the dynamics source "
                     f"{100 * decoupling['direction_from_dynamics']:.1f}%, both {100 * decoupling['decoupled']:.1f}%")
        lines.append(f"  the other way round: digit from the dynamics source {100 * decoupling['digit_from_dynamics']:.1f}%, "
                     f"direction from the structure source {100 * decoupling['direction_from_structure']:.1f}%")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.config is not None and args.ckpt is None:
        raise CheckGenerationError("the decoupling score needs both --config and --ckpt of the autoencoder")
    if args.pairs < 1:
        raise CheckGenerationError(f"--pairs must be at least 1, got {args.pairs}")
    clips = load_clips(args.clips)
    data_settings(args.data)  # the data folder first: the ceiling and the checker both need it
    real = None if args.no_ceiling else real_validation_clips(args.data)
    if args.json is not None:
        claim_file_outputs(args.claims, [args.json], input_files(args, clips, real or []), args.overwrite)
    checker = DigitChecker(args.data)
    figures = checker.score(clips)
    ceiling = None if real is None else checker.score(real)
    decoupling = None
    if args.ckpt is not None:
        pairs = crossing_pairs(clips, args.pairs, args.seed)
        crossed = cross_reenacted(args.config, args.ckpt, pairs, allow_unsafe_pickle=args.allow_unsafe_pickle)
        decoupling = decoupling_score(checker, crossed)
    print(report(figures, ceiling, decoupling))
    if args.json is not None:
        write_text_output(args.json, json.dumps({"generated": figures, "real_validation": ceiling,
                                                 "decoupling": decoupling}, indent=2), "--json")
        print(f"wrote {args.json}")
    return 0
