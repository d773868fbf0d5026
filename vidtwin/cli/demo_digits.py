"""`vidtwin demo digits`: make Moving Digits, short clips of one handwritten digit moving up, down, left or right.

    vidtwin demo digits data/moving_digits
    vidtwin demo digits data/digit_game --game
    vidtwin demo digits data/two_speed_digits --two-speed

The digits are the handwritten 8x8 images of scikit-learn (the ``demo`` extra), scaled up to half
the frame's side; validation clips use digit images that training clips never use. OUT holds
``train/`` and ``val/`` mp4 files, ``train.csv`` and ``val.csv`` (videos, digit, direction, label:
40 classes such as ``3-left``; with ``--game``: videos, digit, actions, one letter per clip) and
``digits.json`` (the settings, which the checkers read).

With ``--two-speed`` the digit drifts 1 px per frame (``--speed``) up, down, left or right and at the
same time shakes (none, horizontal or vertical: +2 and -2 px on alternate frames); the CSVs have
the columns videos, digit, drift, shake, and ``vidtwin demo check-split`` scores what an
autoencoder's two latents hold on them (:mod:`vidtwin.demos.two_speed`).

With ``--game`` each video is ``--clips-per-video`` clips long; in each clip the digit moves in the
direction of that clip's action, drawn at random among the actions that keep it inside the frame.
The same seed gives the same clips. Every file is written atomically; an OUT that already holds
files needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demos.moving_digits import SETTINGS_FILE, MovingDigitsError, check_output_folder, make_moving_digits
from ..demos.two_speed import make_two_speed_digits
from .options import add_overwrite, positive_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--game", action="store_true", help="videos of several clips, one action per clip")
    parser.add_argument("--two-speed", action="store_true",
                        help="clips that drift slowly and shake fast at once (columns videos, digit, drift, shake)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same data set (default 0)")
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels (default 64)")
    parser.add_argument("--digit-size", type=int, default=None, help="digit side in pixels (default: half the frame)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default 16; 8 with --game)")
    parser.add_argument("--speed", type=int, default=None, help="pixels per frame (default 1; 2 with --game)")
    parser.add_argument("--fps", type=positive_number, default=8.0, help="frame rate of the mp4 files (default 8)")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="training clips per class (default 50; 40 with --two-speed, whose classes are 120)")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="validation clips per class (default 10; 4 with --two-speed)")
    parser.add_argument("--clips-per-video", type=int, default=8, help="--game: clips per video (default 8)")
    parser.add_argument("--train-videos", type=int, default=2000, help="--game: training videos (default 2000)")
    parser.add_argument("--val-videos", type=int, default=100, help="--game: validation videos (default 100)")
    add_overwrite(parser)


def _given_or(value, default):
    """An option's value, or its default when it was not given: a given 0 stays 0, to be refused."""
    return default if value is None else value


def run(args: argparse.Namespace) -> int:
    if args.two_speed and args.game:
        raise MovingDigitsError("--two-speed and --game make different data sets; choose one")
    check_output_folder(args.out, args.overwrite)
    common = dict(seed=args.seed, frame_size=args.size, digit_size=_given_or(args.digit_size, args.size // 2),
                  num_frames=_given_or(args.frames, 8 if args.game else 16),
                  speed=_given_or(args.speed, 2 if args.game else 1), fps=args.fps)
    # Clips per class left out take each maker's own default (50 and 10; 40 and 4 for two-speed sets).
    per_class = {name: value for name, value in (("train_per_class", args.train_per_class),
                                                 ("val_per_class", args.val_per_class)) if value is not None}
    if args.two_speed:
        settings = make_two_speed_digits(args.out, **common, **per_class)
    else:
        settings = make_moving_digits(
            args.out, **common, **per_class, game=args.game, clips_per_video=args.clips_per_video,
            train_videos=args.train_videos, val_videos=args.val_videos)
    kind = "game videos" if args.game else "two-speed clips" if args.two_speed else "clips"
    print(f"wrote Moving Digits {kind} of {settings['frames']} frames of {args.size}x{args.size} to {args.out}: "
          f"train.csv, val.csv, {SETTINGS_FILE}")
    return 0
