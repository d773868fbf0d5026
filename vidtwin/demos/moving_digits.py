"""Moving Digits: short clips of one handwritten digit moving steadily in one direction.

The digits are the 1,797 8x8 images written by real people that ship with scikit-learn
(`sklearn.datasets.load_digits`). Each clip shows one light digit on a dark background, scaled up
(bilinear) to half the frame's side, a quarter of its area, moving at a constant speed up, down,
left or right, from a start position that keeps it inside the frame for the whole clip.
Validation clips use digit images that training clips never use (a fifth of each digit's images).
``vidtwin demo digits`` (:mod:`vidtwin.cli.demo_digits`) writes them with :func:`make_moving_digits`.

Layout of the output folder:

    train/00000.mp4 ...      training clips (val/ likewise)
    train.csv, val.csv       columns videos (relative to the folder), digit, direction, label ("3-left": 40 classes)
                             game videos: videos, digit, actions ("RRUULDLL": one letter per clip)
    digits.json              the settings, and which digit images each split uses (for the checkers)

Two-speed clips (:func:`vidtwin.demos.two_speed.make_two_speed_digits`) drift and shake at once; their CSVs have
the columns videos, digit, drift, shake. Game videos (``game=True``) are ``clips_per_video`` clips
long; in each clip the digit moves at constant speed in the direction of that clip's action, drawn
at random among the actions that keep it inside the frame for the whole clip. The same seed gives
the same clips. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from ..atomic_io import atomic_write_text
from ..errors import UserError
from ..optional import require

# Screen axes: x to the right, y downwards.
DIRECTIONS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}
ACTIONS = {"U": "up", "D": "down", "L": "left", "R": "right"}
VAL_FRACTION = 0.2
SETTINGS_FILE = "digits.json"


class MovingDigitsError(ValueError, UserError):
    """Settings that cannot make a data set, or an output folder that is not empty."""


def class_name(digit: int, direction: str) -> str:
    return f"{digit}-{direction}"


def class_names() -> list:
    """The 40 class names in label order: digit-major, directions in DIRECTIONS order."""
    return [class_name(digit, direction) for digit in range(10) for direction in DIRECTIONS]


def load_digit_images():
    """(images (1797, 8, 8) float in [0, 1], digits (1797,) int)."""
    datasets = require("sklearn.datasets", "demo", "Moving Digits (the handwritten digits of scikit-learn)")
    digits = datasets.load_digits()
    return digits.images / 16.0, digits.target.astype(int)


def split_digit_images(digits: np.ndarray, seed: int) -> dict:
    """{"train": indices, "val": indices}: a fifth of each digit's images, at random, for validation."""
    rng = np.random.default_rng(seed)
    split = {"train": [], "val": []}
    for digit in range(10):
        indices = rng.permutation(np.flatnonzero(digits == digit))
        cut = int(round(len(indices) * VAL_FRACTION))
        split["val"] += sorted(indices[:cut].tolist())
        split["train"] += sorted(indices[cut:].tolist())
    return split


def render_sprite(image: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 digit image in [0, 1] -> (size, size) float32, bilinear, values in [0, 1]."""
    import torch
    import torch.nn.functional as F

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]  # (1, 1, 8, 8)
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


def render_clip(sprite: np.ndarray, positions: np.ndarray, frame_size: int) -> np.ndarray:
    """The sprite pasted at each (x, y) top-left position -> uint8 (F, H, W, 3) RGB, gray."""
    size = sprite.shape[0]
    frames = np.zeros((len(positions), frame_size, frame_size), dtype=np.float32)
    for frame, (x, y) in zip(frames, positions):
        frame[y:y + size, x:x + size] = sprite
    gray = np.round(frames * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)  # (F, H, W, 3)


def straight_positions(rng, direction: str, num_frames: int, speed: int, free: int) -> np.ndarray:
    """(F, 2) integer top-left positions of a sprite moving `speed` px per frame in `direction`,
    inside [0, free] on both axes for every frame."""
    travel = speed * (num_frames - 1)
    if travel > free:
        raise MovingDigitsError(f"a digit moving {speed} px per frame for {num_frames} frames travels {travel} px, "
                                f"more than the {free} px the frame leaves it; lower --speed or --digit-size")
    step = np.array(DIRECTIONS[direction])
    start = rng.integers(0, free + 1, size=2)
    for axis in (0, 1):  # along the motion, start where the whole path fits
        if step[axis] > 0:
            start[axis] = rng.integers(0, free - travel + 1)
        elif step[axis] < 0:
            start[axis] = rng.integers(travel, free + 1)
    return start[None] + step[None] * speed * np.arange(num_frames)[:, None]  # (F, 2)


def game_positions(rng, num_clips: int, num_frames: int, speed: int, free: int):
    """Positions (clips * F, 2) and action letters of a game video. Each clip moves in the
    direction of its action; an action is allowed when the clip and the next clip's first frame
    stay inside the frame, so that the reverse action is always possible next."""
    position = rng.integers(0, free + 1, size=2)
    positions, actions = [], []
    for _ in range(num_clips):
        allowed = [letter for letter, name in ACTIONS.items()
                   if np.all((0 <= position + np.array(DIRECTIONS[name]) * speed * num_frames)
                             & (position + np.array(DIRECTIONS[name]) * speed * num_frames <= free))]
        if not allowed:
            raise MovingDigitsError(f"a clip of {num_frames} frames at {speed} px per frame does not fit in the frame; "
                                    "lower --speed, --frames or --digit-size")
        letter = allowed[rng.integers(len(allowed))]
        step = np.array(DIRECTIONS[ACTIONS[letter]]) * speed
        positions.append(position[None] + step[None] * np.arange(num_frames)[:, None])  # (F, 2)
        position = position + step * num_frames
        actions.append(letter)
    return np.concatenate(positions), "".join(actions)


def write_csv(path: Path, columns: list, rows: list) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def check_sizes(frame_size: int, digit_size: int, *counts: int) -> None:
    """Refuse a digit that does not fit the frame, or a frame, speed, clip or video count below 1."""
    if digit_size < 8 or digit_size > frame_size:
        raise MovingDigitsError(f"--digit-size must be between 8 and the frame size {frame_size}, got {digit_size}")
    if min(counts) < 1:
        raise MovingDigitsError("frames, speed, clip counts and video counts must all be >= 1")


def make_moving_digits(out: Path, seed: int = 0, frame_size: int = 64, digit_size: int = 32, num_frames: int = 16,
                       speed: int = 1, fps: float = 8.0, train_per_class: Optional[int] = None,
                       val_per_class: Optional[int] = None, game: bool = False, clips_per_video: int = 8,
                       train_videos: int = 2000, val_videos: int = 100, progress: bool = True) -> dict:
    """Write the data set into `out` (see the module docstring); returns the settings written to digits.json.

    train_per_class, val_per_class: clips per class; None: 50 and 10. The two-speed set (a drift and a
    shake at once) is :func:`vidtwin.demos.two_speed.make_two_speed_digits`.
    Options are named as ``vidtwin demo digits`` names them in messages (``--digit-size``, ``--speed``).
    """
    from ..data.video_io import write_video

    train_per_class = 50 if train_per_class is None else train_per_class
    val_per_class = 10 if val_per_class is None else val_per_class
    check_sizes(frame_size, digit_size, num_frames, speed, train_per_class, val_per_class, clips_per_video,
                train_videos, val_videos)
    free = frame_size - digit_size
    images, digits = load_digit_images()
    split = split_digit_images(digits, seed)
    rng = np.random.default_rng(seed + 1)
    settings = dict(seed=seed, frame_size=frame_size, digit_size=digit_size, frames=num_frames, speed=speed, fps=fps,
                    game=game, classes=None if game else class_names(), images=split)
    if game:
        settings["clips_per_video"] = clips_per_video
    for name, per_class, videos in (("train", train_per_class, train_videos), ("val", val_per_class, val_videos)):
        pool = np.array(split[name])
        if game:
            jobs = [(int(digits[index]), None, index) for index in rng.choice(pool, size=videos)]
        else:
            jobs = [(digit, direction, int(rng.choice(pool[digits[pool] == digit])))
                    for digit in range(10) for direction in DIRECTIONS for _ in range(per_class)]
        rows = []
        for number, (digit, direction, index) in enumerate(tqdm(jobs, desc=f"{name} clips", unit="video", disable=not progress)):
            sprite = render_sprite(images[index], digit_size)
            video = f"{name}/{number:05d}.mp4"
            if game:
                positions, actions = game_positions(rng, clips_per_video, num_frames, speed, free)
                rows.append([video, digit, actions])
            else:
                positions = straight_positions(rng, direction, num_frames, speed, free)
                rows.append([video, digit, direction, class_name(digit, direction)])
            write_video(out / video, render_clip(sprite, positions, frame_size), fps=fps, crf=10)
        columns = ["videos", "digit", "actions"] if game else ["videos", "digit", "direction", "label"]
        write_csv(out / f"{name}.csv", columns, rows)
    atomic_write_text(out / SETTINGS_FILE, json.dumps(settings, indent=1))
    return settings


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or a folder that already holds files (unless ``overwrite``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MovingDigitsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MovingDigitsError(f"{out} already holds files; pass --overwrite to replace them, or choose another folder")


__all__ = ["ACTIONS", "DIRECTIONS", "SETTINGS_FILE", "VAL_FRACTION", "MovingDigitsError", "check_output_folder", "check_sizes",
           "class_name", "class_names", "game_positions", "load_digit_images", "make_moving_digits", "render_clip",
           "render_sprite", "split_digit_images", "straight_positions"]
