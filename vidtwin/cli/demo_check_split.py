"""`vidtwin demo check-split`: score what an autoencoder's two latents hold, on two-speed Moving Digits.

    vidtwin demo digits data/two_speed_digits --two-speed
    vidtwin train --base tiny_digits_twin --name twin_ae
    vidtwin demo check-split data/two_speed_digits --config logs/twin_ae/config.yaml \\
        --ckpt logs/twin_ae/checkpoints/last.ckpt --json twin_split.json

DATA is a folder that ``vidtwin demo digits --two-speed`` wrote: its held-out validation clips show a
digit that drifts 1 px per frame (the global movement) and shakes +-2 px on alternate frames (the
rapid movement). ``--pairs`` seeded pairs (A, B) of those clips that differ in digit, drift and
shake are cross-reenacted as ``vidtwin cross`` does, the structure latents of A with the dynamics
latents of B, and a checker reads each crossed clip's digit (the Moving Digits classifier), drift
(a linear fit of the digit's centroid track) and shake (the amplitude of the track's alternating
part, per axis); see :mod:`vidtwin.demos.split_checker`.

The table gives the share of crossed clips that show A's (structure) and B's (dynamics) digit,
drift and shake, beside the same checker's reading of the plain reconstructions of the same clips
(the ceiling) and of the real clips (the checker's own accuracy). Two splits are scored against
the targets: the paper's (the digit and the drift from the structure, the shake from the
dynamics) and the content/motion split (the digit from the structure, both motions from the
dynamics). ``--json FILE`` also writes the figures (atomically), under the output rules of every
command: an existing file needs ``--overwrite``, and no input is ever replaced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..demos.moving_digits import SETTINGS_FILE
from ..demos.split_checker import (TARGETS, CheckSplitError, SplitChecker, clips_from_csv, split_score,
                                   two_speed_settings)
from ..hints import command
from ..inference.outputs import InputFiles, claim_file_outputs, write_text_output
from .options import add_device, add_model, add_overwrite, load_autoencoder

PARTS = ("digit", "drift", "shake")
SPLIT_NAMES = {"paper_split": "the paper's split", "content_motion_split": "the content/motion split"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="the two-speed Moving Digits folder (`vidtwin demo digits --two-speed`)")
    parser.add_argument("--pairs", type=int, default=200, help="cross-reenacted pairs of validation clips (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="of the choice of pairs (default 0)")
    parser.add_argument("--no-real", action="store_true", help="skip the checker's accuracy on the real clips")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    add_overwrite(parser)
    add_model(parser)  # the autoencoder
    add_device(parser)


def percent(share) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def report(figures: dict) -> str:
    """The figures as a small table, and each split's targets beside the shares it promises."""
    crossed, reconstructed, real = figures["crossed"], figures["reconstructed"], figures["real"]
    lines = [f"{'':<7} {'A (structure)':>14} {'B (dynamics)':>13} {'reconstructed':>14} {'real':>7}"]
    for part in PARTS:
        lines.append(f"{part:<7} {percent(crossed[f'{part}_from_structure']):>14} "
                     f"{percent(crossed[f'{part}_from_dynamics']):>13} "
                     f"{percent(reconstructed[f'{part}_accuracy']):>14} "
                     f"{percent(real and real[f'{part}_accuracy']):>7}")
    real_clips = f", checker on {real['clips']} real clips" if real else ""
    lines.append(f"shares of {crossed['pairs']} crossed clips (structure of A, dynamics of B; pairs differ in "
                 f"digit, drift and shake); ceiling: {reconstructed['clips']} reconstructions{real_clips}")
    for split, parts in TARGETS.items():
        wanted = ", ".join(f"{key.replace('_from_', ' from ')} >= {100 * target:.0f}%" for key, target in parts.items())
        met = "met" if figures["targets_met"][split] else "not met"
        lines.append(f"{SPLIT_NAMES[split]}: {percent(crossed[split])} of crossed clips show all of it; "
                     f"targets {wanted}: {met}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.pairs < 1:
        raise CheckSplitError(f"--pairs must be at least 1, got {args.pairs}")
    two_speed_settings(args.data)  # a two-speed set, before anything is loaded
    val_csv = args.data / "val.csv"
    if not val_csv.is_file():
        raise CheckSplitError(f"{args.data} has no val.csv; remake the set with "
                              f"`{command('demo digits', args.data, '--two-speed', '--overwrite')}`")
    clips = clips_from_csv(val_csv)
    if args.json is not None:
        inputs = InputFiles([args.data / SETTINGS_FILE, val_csv, *(clip.path for clip in clips), *(args.config or [])])
        claim_file_outputs(args.claims, [args.json], inputs.add_folder(args.ckpt), args.overwrite)
    checker = SplitChecker(args.data)
    model = load_autoencoder(args)
    figures = split_score(checker, model, clips, pairs=args.pairs, seed=args.seed, real=not args.no_real)
    print(report(figures))
    if args.json is not None:
        write_text_output(args.json, json.dumps(figures, indent=2), "--json")
        print(f"wrote {args.json}")
    return 0
