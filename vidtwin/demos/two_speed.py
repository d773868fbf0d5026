"""Two-speed Moving Digits: one handwritten digit that drifts slowly and shakes fast at the same time.

The paper's twin latents split a video into "overall content and global movement" (Structure) and
"fine-grained details and rapid movements" (Dynamics). These clips hold one of each, with labels:

- **global movement**, the drift: a constant ``speed`` px per frame (1 by default) up, down, left
  or right, as in Moving Digits;
- **rapid movement**, the shake: none, horizontal or vertical; on top of the drift the digit is
  offset by +``SHAKE_AMPLITUDE`` and -``SHAKE_AMPLITUDE`` px (2) on alternate frames along that
  axis, starting with either sign at random.

Everything else is Moving Digits' (:mod:`.moving_digits`): 16 frames of 64x64 at 8 fps, one
scikit-learn digit scaled bilinear to half the frame's side, light on dark, a start position that
keeps the whole digit inside the frame on every frame, validation clips from digit images that
training never uses. ``vidtwin demo digits OUT --two-speed`` writes the set through
:func:`make_two_speed_digits`; ``train.csv`` and ``val.csv`` have the columns ``videos, digit, drift,
shake``, every digit x drift x shake class (120) ``per_class`` times, in a seeded random order (so
that a validation run limited to its first batches still sees every kind of clip). ``digits.json``
records ``two_speed: true``. :mod:`.split_checker` reads the three labels back from clips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic_io import atomic_write_text
from .moving_digits import (DIRECTIONS, SETTINGS_FILE, MovingDigitsError, check_sizes, load_digit_images,
                            render_clip, render_sprite, split_digit_images, write_csv)

DRIFTS = tuple(DIRECTIONS)  # up, down, left, right: the global movement
SHAKES = {"none": None, "horizontal": 0, "vertical": 1}  # shake name -> the screen axis it moves along (x, y)
SHAKE_AMPLITUDE = 2  # px: the offset of alternate frames, +2 then -2 (or -2 then +2)
COLUMNS = ["videos", "digit", "drift", "shake"]
# Clips per class by default: 4,800 training clips over the 120 classes (varied digit images and
# start positions for a model that must generalise to held-out digits; the set still writes in
# under a minute on 2 cores), and 480 validation clips, enough for the checker's accuracy.
TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 4


def class_name(digit: int, drift: str, shake: str) -> str:
    return f"{digit}-{drift}-{shake}"


def class_names() -> list:
    """The 120 class names: digit-major, then drifts in DIRECTIONS order, then shakes in SHAKES order."""
    return [class_name(digit, drift, shake) for digit in range(10) for drift in DRIFTS for shake in SHAKES]


def shake_offsets(shake: str, num_frames: int, sign: int, amplitude: int = SHAKE_AMPLITUDE) -> np.ndarray:
    """(F, 2) integer offsets (x, y) of the shake alone: sign * amplitude * (-1)^t on the shake's axis."""
    offsets = np.zeros((num_frames, 2), dtype=np.int64)
    axis = SHAKES[shake]
    if axis is not None:
        offsets[:, axis] = sign * amplitude * (-1) ** np.arange(num_frames)
    return offsets


def two_speed_positions(rng, drift: str, shake: str, num_frames: int, free: int, speed: int = 1,
                        amplitude: int = SHAKE_AMPLITUDE) -> np.ndarray:
    """(F, 2) integer top-left positions (x, y) of a digit drifting `speed` px per frame in `drift`
    and shaking along `shake` (random starting sign), inside [0, free] on both axes for every frame."""
    times = np.arange(num_frames)
    offsets = np.array(DIRECTIONS[drift])[None] * speed * times[:, None]  # (F, 2): the drift from the start
    offsets = offsets + shake_offsets(shake, num_frames, int(rng.choice((-1, 1))), amplitude)
    low, high = -offsets.min(axis=0), free - offsets.max(axis=0)  # (2,): where the start may lie, per axis
    if np.any(high < low):
        raise MovingDigitsError(f"a digit drifting {speed} px per frame for {num_frames} frames and shaking "
                                f"{amplitude} px each way needs {int(np.max(offsets.max(0) - offsets.min(0)))} px, "
                                f"more than the {free} px the frame leaves it; lower --speed, --frames or --digit-size")
    start = rng.integers(low, high + 1)  # (2,)
    return start[None] + offsets  # (F, 2)


def make_two_speed_digits(out: Path, seed: int = 0, frame_size: int = 64, digit_size: int = 32, num_frames: int = 16,
                          speed: int = 1, fps: float = 8.0, train_per_class: int = TRAIN_PER_CLASS,
                          val_per_class: int = VAL_PER_CLASS, progress: bool = True) -> dict:
    """Write the two-speed set into `out` (see the module docstring); returns the settings written to
    digits.json. ``vidtwin demo digits OUT --two-speed`` calls this."""
    from ..data.video_io import write_video

    check_sizes(frame_size, digit_size, num_frames, speed, train_per_class, val_per_class)
    out = Path(out)
    free = frame_size - digit_size
    images, digits = load_digit_images()
    split = split_digit_images(digits, seed)
    rng = np.random.default_rng(seed + 1)
    settings = dict(seed=seed, frame_size=frame_size, digit_size=digit_size, frames=num_frames, speed=speed, fps=fps,
                    game=False, two_speed=True, shake_amplitude=SHAKE_AMPLITUDE, drifts=list(DRIFTS),
                    shakes=list(SHAKES), classes=class_names(), images=split)
    for name, per_class in (("train", train_per_class), ("val", val_per_class)):
        pool = np.array(split[name])
        jobs = [(digit, drift, shake, int(rng.choice(pool[digits[pool] == digit])))
                for digit in range(10) for drift in DRIFTS for shake in SHAKES for _ in range(per_class)]
        jobs = [jobs[i] for i in rng.permutation(len(jobs))]  # mixed classes in any prefix of the CSV
        rows = []
        for number, (digit, drift, shake, index) in enumerate(tqdm(jobs, desc=f"{name} clips", unit="video",
                                                                   disable=not progress)):
            positions = two_speed_positions(rng, drift, shake, num_frames, free, speed)
            video = f"{name}/{number:05d}.mp4"
            frames = render_clip(render_sprite(images[index], digit_size), positions, frame_size)
            write_video(out / video, frames, fps=fps, crf=10)
            rows.append([video, digit, drift, shake])
        write_csv(out / f"{name}.csv", COLUMNS, rows)
    atomic_write_text(out / SETTINGS_FILE, json.dumps(settings, indent=1))
    return settings


__all__ = ["COLUMNS", "DRIFTS", "SHAKES", "SHAKE_AMPLITUDE", "TRAIN_PER_CLASS", "VAL_PER_CLASS", "class_name",
           "class_names", "make_two_speed_digits", "shake_offsets", "two_speed_positions"]
