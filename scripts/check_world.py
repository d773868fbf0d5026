"""Score a world model on the Moving Digits game: does each predicted clip follow its action, and
is the digit still the start digit, step after step?

    python -m scripts.check_world logs/digits_world --data data/digit_game --ceiling --json world_check.json

For each held-out video of ``val.csv`` (digit images the autoencoder and the world model never
trained on; ``--num`` of them), the first clip starts a rollout under a random action string of
length ``--length`` (6; drawn with ``--seed``, each action among those that keep the digit
inside the frame, the game's own rule, from where the start clip leaves the digit). Every
predicted clip is read by ``scripts.check_generation``'s checker (the digit classifier and the
motion-direction estimator), and per step the table gives:

- **action following**: the share of predicted clips whose digit moves in the direction of the
  clip's action;
- **digit kept**: the share whose digit is still the start digit (from ``val.csv``).

``--ceiling`` adds the same checker on the real clips 2 to ``1 + length`` of the same videos,
under their real actions (``real``), and on those clips encoded to tokens and decoded by the
autoencoder (``tokens``): what a perfect world model would score, with a perfect and with this
autoencoder. ``--json FILE`` also writes the figures (atomically).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from scripts.check_generation import DigitChecker, centroids, ink
from scripts.make_moving_digits import ACTIONS, DIRECTIONS
from scripts.play import PlayError, WorldPlayer, add_rollout_arguments, read_start_clip
from vidtwin.atomic_io import atomic_write_text
from vidtwin.cli.convention import add_debug_flag, run_cli

PROG = "check_world.py"


class CheckWorldError(PlayError):
    """A data set folder or an option that the checker cannot use."""


def read_game_csv(path: Path) -> List[dict]:
    """Rows of a game CSV (``videos``, ``digit``, ``actions``), with the video paths resolved."""
    if not path.is_file():
        raise CheckWorldError(f"{path} does not exist; give the folder that "
                              "`python -m scripts.make_moving_digits DIR --game` wrote")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"videos", "digit", "actions"} <= set(rows[0]):
        raise CheckWorldError(f"{path} is not a Moving Digits game CSV with columns videos, digit, actions")
    return [{"video": path.parent / row["videos"], "digit": int(row["digit"]), "actions": row["actions"]} for row in rows]


def allowed_actions(position: np.ndarray, settings: dict, letters: Sequence[str]) -> List[str]:
    """The game's rule: actions whose clip (and the next clip's first frame) keep the digit's box,
    top-left at ``position`` (x, y), inside the frame."""
    free = settings["frame_size"] - settings["digit_size"]
    travel = settings["speed"] * settings["frames"]
    return [letter for letter in letters if letter in ACTIONS
            and np.all((0 <= position + np.array(DIRECTIONS[ACTIONS[letter]]) * travel)
                       & (position + np.array(DIRECTIONS[ACTIONS[letter]]) * travel <= free))]


def random_actions(start: np.ndarray, start_action: str, settings: dict, letters: Sequence[str], length: int,
                   random: np.random.Generator) -> str:
    """An action string from where the start clip leaves the digit: the box is placed around the
    ink's centroid in the clip's last frame and moved one frame on by the start clip's action."""
    size, free, speed = settings["digit_size"], settings["frame_size"] - settings["digit_size"], settings["speed"]
    center = centroids(ink(start[-1:]))[0]
    if np.isnan(center).any():
        center = np.array([settings["frame_size"] / 2] * 2)
    position = np.clip(np.round(center - (size - 1) / 2), 0, free)
    if start_action in ACTIONS:
        position = position + np.array(DIRECTIONS[ACTIONS[start_action]]) * speed
    drawn = ""
    for _ in range(length):
        allowed = allowed_actions(position, settings, letters) or [letter for letter in letters if letter in ACTIONS]
        letter = allowed[random.integers(len(allowed))]
        position = position + np.array(DIRECTIONS[ACTIONS[letter]]) * speed * settings["frames"]
        drawn += letter
    return drawn


def step_figures(reads: Sequence[Sequence[tuple]], actions: Sequence[str], digits: Sequence[int]) -> List[dict]:
    """Per step: the shares of clips that follow their action and keep their digit.
    reads[i][s]: (digit, direction) of video i's clip at step s."""
    figures = []
    for step in range(len(actions[0])):
        follows = [read[step][1] == ACTIONS[letters[step]] for read, letters in zip(reads, actions)]
        kept = [read[step][0] == digit for read, digit in zip(reads, digits)]
        figures.append({"step": step + 1, "action_following": float(np.mean(follows)), "digit_kept": float(np.mean(kept))})
    return figures


def report(figures: List[dict], ceilings: Optional[dict], clips: int) -> str:
    """The per-step table: predicted clips, then each ceiling (``{"real": rows, "tokens": rows}``)."""
    columns = [("", figures)] + [(f"{name}: ", rows) for name, rows in (ceilings or {}).items()]
    lines = [f"{'step':>4}" + "".join(f" {prefix + 'following':>17} {prefix + 'kept':>12}" for prefix, _ in columns)]
    for index, row in enumerate(figures):
        lines.append(f"{row['step']:>4}" + "".join(f" {100 * rows[index]['action_following']:>16.1f}% "
                                                   f"{100 * rows[index]['digit_kept']:>11.1f}%" for _, rows in columns))
    return "\n".join(lines + [f"{clips} rollouts; chance: 25% following, 10% digit"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", help="the world model: a train.py run directory, checkpoint or saved folder")
    parser.add_argument("--data", type=Path, default=Path("data/digit_game"),
                        help="the game folder (digits.json, val.csv); default data/digit_game")
    parser.add_argument("--num", type=int, default=100, help="held-out start videos (default 100: all of them)")
    parser.add_argument("--length", type=int, default=6, help="actions per rollout (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="of the action strings and the sampling (default 0)")
    add_rollout_arguments(parser)
    parser.add_argument("--batch", type=int, default=16, help="rollouts at once (default 16)")
    parser.add_argument("--ceiling", action="store_true", help="also score the real clips under their real actions")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if min(args.num, args.length, args.batch) < 1:
        raise CheckWorldError("--num, --length and --batch must be >= 1")
    rows = read_game_csv(args.data / "val.csv")[:args.num]
    checker = DigitChecker(args.data)
    from vidtwin.inference.options import resolve_device

    player = WorldPlayer(args.world, args.config, args.ckpt, device=resolve_device(args.device))
    letters = player.world.config.actions
    random = np.random.default_rng(args.seed)
    starts = [read_start_clip(row["video"], player.clip_size)[0] for row in rows]  # each (T, H, W, 3)
    actions = [random_actions(start.numpy(), row["actions"][0], checker.settings, letters, args.length, random)
               for start, row in zip(starts, rows)]
    reads = []
    for first in tqdm(range(0, len(rows), args.batch), desc="rollouts", unit="batch"):
        chunk = slice(first, first + args.batch)
        start = player.encode(torch.stack(starts[chunk]))
        indices = torch.tensor([player.world.action_indices(string) for string in actions[chunk]])
        predicted = player.world.rollout(start, indices, seed=args.seed + first, temperature=args.temperature,
                                         top_k=args.top_k)  # each (b, length, ...)
        steps = [player.decode({name: value[:, step] for name, value in predicted.items()}).numpy()
                 for step in range(args.length)]  # each (b, T, H, W, 3)
        reads += [[checker.read(steps[step][index]) for step in range(args.length)] for index in range(len(steps[0]))]
    digits = [row["digit"] for row in rows]
    figures = step_figures(reads, actions, digits)
    ceilings = None
    if args.ceiling:
        from vidtwin.data.video_io import read_video

        frames_per_clip = player.clip_size[0]
        usable = [row for row in rows if len(row["actions"]) > args.length]
        if not usable:
            raise CheckWorldError(f"the videos of {args.data / 'val.csv'} have no {args.length + 1} clips for --ceiling")
        real_reads, token_reads = [], []
        for row in tqdm(usable, desc="real clips", unit="video"):
            frames = read_video(row["video"])[0][frames_per_clip:(args.length + 1) * frames_per_clip]  # (L * T, H, W, 3)
            clips = frames.reshape(args.length, frames_per_clip, *frames.shape[1:])  # (L, T, H, W, 3)
            decoded = player.decode(player.encode(clips)).numpy()  # (L, T, H, W, 3)
            real_reads.append([checker.read(clip) for clip in clips.numpy()])
            token_reads.append([checker.read(clip) for clip in decoded])
        real_actions, real_digits = [row["actions"][1:args.length + 1] for row in usable], [row["digit"] for row in usable]
        ceilings = {"real": step_figures(real_reads, real_actions, real_digits),
                    "tokens": step_figures(token_reads, real_actions, real_digits)}
    print(report(figures, ceilings, len(rows)))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"world": str(args.world), "rollouts": len(rows), "length": args.length,
                                                 "seed": args.seed, "temperature": args.temperature, "top_k": args.top_k,
                                                 "steps": figures, "ceiling": ceilings}, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
