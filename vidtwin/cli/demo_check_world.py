"""`vidtwin demo check-world`: score a Moving Digits world model's rollouts step by step.

    vidtwin demo check-world logs/digits_world --data data/digit_game --ceiling --json world_check.json

For each held-out video of ``val.csv`` (digit images the autoencoder and the world model never
trained on; ``--num`` of them), the first clip starts a rollout under a random action string of
length ``--length`` (drawn with ``--seed``, each action among those that keep the digit inside the
frame, the game's own rule). Every predicted clip is read by the digit checker of ``vidtwin demo
check-generation``, and per step the table gives:

- **following**: the share of predicted clips whose digit moves in the direction of the clip's action;
- **kept**: the share whose digit is still the start digit (from ``val.csv``).

``--ceiling`` adds the same checker on the real clips 2 to ``1 + length`` of the same videos, under
their real actions (``real``), and on those clips encoded to tokens and decoded by the autoencoder
(``tokens``): what a perfect world model would score, with a perfect and with this autoencoder.
``--json FILE`` also writes the figures (atomically), under the output rules of every command: an
existing file needs ``--overwrite``, and no input (the game's files and videos, the models) is ever
replaced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..demos.digit_checker import DigitChecker
from ..demos.moving_digits import SETTINGS_FILE
from ..demos.world_check import (CheckWorldError, ceiling_figures, random_actions, read_game_csv, rollout_reads,
                                 start_clips, step_figures)
from ..inference.outputs import InputFiles, claim_file_outputs, write_text_output
from .options import add_overwrite
from .play import add_rollout_arguments, check_sampling, load_player


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("world", help="the world model: a `vidtwin train` run directory, checkpoint or saved folder")
    parser.add_argument("--data", type=Path, default=Path("data/digit_game"),
                        help="the game folder (digits.json, val.csv); default data/digit_game")
    parser.add_argument("--num", type=int, default=100, help="held-out start videos (default 100: all of them)")
    parser.add_argument("--length", type=int, default=6, help="actions per rollout (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="of the action strings and the sampling (default 0)")
    parser.add_argument("--batch", type=int, default=16, help="rollouts at once (default 16)")
    parser.add_argument("--ceiling", action="store_true", help="also score the real clips under their real actions")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    add_overwrite(parser)
    add_rollout_arguments(parser)


def input_files(args: argparse.Namespace, csv_path: Path, rows: List[dict]) -> InputFiles:
    """What the check reads: the game's settings, list and videos, the world model and the autoencoder."""
    inputs = InputFiles([args.data / SETTINGS_FILE, csv_path, *(row["video"] for row in rows), *(args.config or [])])
    for model in (args.world, args.ckpt):
        if model is not None:
            inputs.add_folder(model)  # a run or save_pretrained folder is read as a whole
    return inputs


def report(figures: List[dict], ceilings: Optional[dict], clips: int) -> str:
    """The per-step table: predicted clips, then each ceiling (``{"real": rows, "tokens": rows}``)."""
    columns = [("", figures)] + [(f"{name}: ", rows) for name, rows in (ceilings or {}).items()]
    lines = [f"{'step':>4}" + "".join(f" {prefix + 'following':>17} {prefix + 'kept':>12}" for prefix, _ in columns)]
    for index, row in enumerate(figures):
        lines.append(f"{row['step']:>4}" + "".join(f" {100 * rows[index]['action_following']:>16.1f}% "
                                                   f"{100 * rows[index]['digit_kept']:>11.1f}%" for _, rows in columns))
    return "\n".join(lines + [f"{clips} rollouts; chance: 25% following, 10% digit"])


def run(args: argparse.Namespace) -> int:
    if min(args.num, args.length, args.batch) < 1:
        raise CheckWorldError("--num, --length and --batch must be >= 1")
    check_sampling(args, lowest_seed=0)  # the action strings' numpy generator takes no negative seed
    csv_path = args.data / "val.csv"
    all_rows = read_game_csv(csv_path)
    rows = all_rows[:args.num]
    if args.json is not None:
        claim_file_outputs(args.claims, [args.json], input_files(args, csv_path, all_rows), args.overwrite)
    checker = DigitChecker(args.data)
    player = load_player(args)
    letters = player.world.config.actions
    random = np.random.default_rng(args.seed)
    starts = start_clips(player, rows)  # each (T, H, W, 3)
    actions = [random_actions(start.numpy(), row["actions"][0], checker.settings, letters, args.length, random)
               for start, row in zip(starts, rows)]
    reads = rollout_reads(player, checker, starts, actions, seed=args.seed, temperature=args.temperature,
                          top_k=args.top_k, batch=args.batch)
    figures = step_figures(reads, actions, [row["digit"] for row in rows])
    ceilings = ceiling_figures(player, checker, csv_path, rows, args.length) if args.ceiling else None
    print(report(figures, ceilings, len(rows)))
    if args.json is not None:
        write_text_output(args.json, json.dumps({"world": str(args.world), "rollouts": len(rows), "length": args.length,
                                                 "seed": args.seed, "temperature": args.temperature, "top_k": args.top_k,
                                                 "steps": figures, "ceiling": ceilings}, indent=2), "--json")
        print(f"wrote {args.json}")
    return 0
