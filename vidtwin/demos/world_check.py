"""Score a world model on the Moving Digits game: does each predicted clip follow its action, and
is the digit still the start digit, step after step? (``vidtwin demo check-world``)

For each held-out video of ``val.csv`` (digit images the autoencoder and the world model never
trained on), the first clip starts a rollout under a random action string (:func:`random_actions`:
each action among those that keep the digit inside the frame, the game's own rule, from where the
start clip leaves the digit). Every predicted clip is read by the digit checker
(:class:`~vidtwin.demos.digit_checker.DigitChecker`: the digit classifier and the motion-direction
estimator), and per step :func:`step_figures` gives:

- **action following**: the share of predicted clips whose digit moves in the direction of the
  clip's action;
- **digit kept**: the share whose digit is still the start digit (from ``val.csv``).

:func:`ceiling_reads` reads the real clips 2 to ``1 + length`` of the same videos, under their
real actions (``real``), and those clips encoded to tokens and decoded by the autoencoder
(``tokens``): what a perfect world model would score, with a perfect and with this autoencoder.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..generation.player import PlayError, WorldPlayer, read_start_clip
from ..hints import Verbatim, command
from .digit_checker import DigitChecker, centroids, ink
from .moving_digits import ACTIONS, DIRECTIONS


class CheckWorldError(PlayError):
    """A data set folder or an option that the checker cannot use."""


def read_game_csv(path: Path) -> List[dict]:
    """Rows of a game CSV (``videos``, ``digit``, ``actions``), with the video paths resolved."""
    if not path.is_file():
        raise CheckWorldError(f"{path} does not exist; give the folder that "
                              f"`{command('demo digits', Verbatim('DIR'), '--game')}` wrote")
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


def rollout_reads(player: WorldPlayer, checker: DigitChecker, starts: Sequence[torch.Tensor], actions: Sequence[str],
                  seed: int = 0, temperature: float = 1.0, top_k: Optional[int] = None, batch: int = 16,
                  progress: bool = True) -> List[List[tuple]]:
    """Roll each start clip out under its action string and read every predicted clip.

    starts: uint8 ``(T, H, W, 3)`` per video; actions: one string per video, all of one length L.
    Returns reads[i][s]: the checker's (digit, direction) of video i's predicted clip at step s.
    Batch ``b`` of ``batch`` rollouts samples with the seed ``seed + b * batch``.
    """
    length = len(actions[0])
    reads = []
    for first in tqdm(range(0, len(starts), batch), desc="rollouts", unit="batch", disable=not progress):
        chunk = slice(first, first + batch)
        start = player.encode(torch.stack(list(starts[chunk])))
        indices = torch.tensor([player.world.action_indices(string) for string in actions[chunk]])
        predicted = player.world.rollout(start, indices, seed=seed + first, temperature=temperature,
                                         top_k=top_k)  # each (b, L, ...)
        steps = [player.decode({name: value[:, step] for name, value in predicted.items()}).numpy()
                 for step in range(length)]  # each (b, T, H, W, 3)
        reads += [[checker.read(steps[step][index]) for step in range(length)] for index in range(len(steps[0]))]
    return reads


def ceiling_figures(player: WorldPlayer, checker: DigitChecker, csv_path: Path, rows: Sequence[dict], length: int,
                    progress: bool = True) -> dict:
    """``{"real": rows, "tokens": rows}`` of :func:`step_figures` on the real clips 2 to ``1 + length``
    of the videos in ``rows`` (read from ``csv_path`` by :func:`read_game_csv`), under their real
    actions, as they are and after the autoencoder's tokens."""
    from ..data.video_io import read_video

    frames_per_clip = player.clip_size[0]
    usable = [row for row in rows if len(row["actions"]) > length]
    if not usable:
        raise CheckWorldError(f"the videos of {csv_path} have no {length + 1} clips for --ceiling")
    real_reads, token_reads = [], []
    for row in tqdm(usable, desc="real clips", unit="video", disable=not progress):
        frames = read_video(row["video"])[0][frames_per_clip:(length + 1) * frames_per_clip]  # (L * T, H, W, 3)
        clips = frames.reshape(length, frames_per_clip, *frames.shape[1:])  # (L, T, H, W, 3)
        decoded = player.decode(player.encode(clips)).numpy()  # (L, T, H, W, 3)
        real_reads.append([checker.read(clip) for clip in clips.numpy()])
        token_reads.append([checker.read(clip) for clip in decoded])
    real_actions, real_digits = [row["actions"][1:length + 1] for row in usable], [row["digit"] for row in usable]
    return {"real": step_figures(real_reads, real_actions, real_digits),
            "tokens": step_figures(token_reads, real_actions, real_digits)}


def start_clips(player: WorldPlayer, rows: Sequence[dict]) -> List[torch.Tensor]:
    """The first clip of each video of ``rows``, uint8 ``(T, H, W, 3)``."""
    return [read_start_clip(row["video"], player.clip_size)[0] for row in rows]


__all__ = ["CheckWorldError", "allowed_actions", "ceiling_figures", "random_actions", "read_game_csv", "rollout_reads",
           "start_clips", "step_figures"]
