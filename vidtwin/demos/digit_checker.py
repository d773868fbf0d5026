"""Read the digit and the direction that Moving Digits clips show, and score clips against what
they were asked to show.

Clips come from a folder of generated mp4 files named ``<digit>-<direction>_<index>.mp4`` (as
``vidtwin generate`` names them, e.g. ``3-left_000.mp4``) or from a Moving Digits CSV
(``videos``, ``digit``, ``direction``). For each clip :class:`DigitChecker` reads:

- **digit**: in every frame, a window of the digit's size around the ink's centroid is averaged
  down to 8x8 and classified by a support-vector classifier trained on the *training* digit images
  of the data set (rendered the same way, with the window also shifted 2 px each way); the clip's digit
  is the majority over its frames;
- **direction**: the slope of the ink's centroid across the frames (least squares), on the axis
  where it moves most; a clip whose digit moves less than 0.25 px per frame has no direction.

:func:`decoupling_score` measures cross-reenacted clips: the share whose digit follows the
structure source and whose direction follows the dynamics source. :func:`crossing_pairs` draws
seeded pairs of clips that differ in both digit and direction, and :func:`cross_reenacted`
cross-reenacts them with an autoencoder as ``vidtwin cross`` does (the structure of the first clip
with the dynamics of the second). ``vidtwin demo check-generation`` reports all of it.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..errors import UserError
from ..hints import command
from ..optional import require
from .moving_digits import DIRECTIONS, SETTINGS_FILE, load_digit_images, render_clip, render_sprite

INK_THRESHOLD = 0.15  # gray level (of 1) below which a pixel is background
MIN_SPEED = 0.25  # px per frame: slower is "no motion"
JITTER = ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2))  # px: window offsets the classifier trains on, for centroids a little off
GENERATED_NAME = re.compile(r"(?P<digit>\d)-(?P<direction>up|down|left|right)_\d+\.mp4")


class CheckGenerationError(ValueError, UserError):
    """Clips or a data set folder that the checker cannot use."""


@dataclass
class Clip:
    path: Path
    digit: int  # what the clip should show
    direction: str


def ink(frames: np.ndarray) -> np.ndarray:
    """uint8 (F, H, W, 3) -> float (F, H, W): gray in [0, 1] minus the background threshold, >= 0."""
    gray = frames.astype(np.float32).mean(axis=-1) / 255.0
    return np.clip(gray - INK_THRESHOLD, 0.0, None)


def centroids(weights: np.ndarray) -> np.ndarray:
    """(F, H, W) non-negative -> (F, 2) centroid (x, y) per frame; NaN for an empty frame."""
    height, width = weights.shape[1:]
    total = weights.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (weights.sum(axis=1) * np.arange(width)).sum(axis=1) / total
        y = (weights.sum(axis=2) * np.arange(height)).sum(axis=1) / total
    return np.stack([x, y], axis=1)


def window_features(weights: np.ndarray, center: Tuple[float, float], size: int) -> np.ndarray:
    """The (size, size) window of one frame centred on `center` (zeros outside the frame),
    averaged down to 8x8 -> (64,) features."""
    height, width = weights.shape
    left, top = int(round(center[0] - (size - 1) / 2)), int(round(center[1] - (size - 1) / 2))
    window = np.zeros((size, size), dtype=np.float32)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + size, width), min(top + size, height)
    if x1 > x0 and y1 > y0:
        window[y0 - top:y1 - top, x0 - left:x1 - left] = weights[y0:y1, x0:x1]
    edges = np.linspace(0, size, 9).round().astype(int)  # 8 blocks per axis, for any size
    blocks = [[window[edges[i]:edges[i + 1], edges[j]:edges[j + 1]].mean() for j in range(8)] for i in range(8)]
    features = np.asarray(blocks, dtype=np.float32).reshape(-1)
    peak = features.max()
    return features / peak if peak > 0 else features  # brightness-independent


def direction_of(points: np.ndarray) -> Optional[str]:
    """(F, 2) centroids -> "up" / "down" / "left" / "right", or None when the digit barely moves."""
    valid = ~np.isnan(points).any(axis=1)
    if valid.sum() < 2:
        return None
    times = np.flatnonzero(valid).astype(np.float64)
    slopes = np.polyfit(times, points[valid], deg=1)[0]  # (2,) px per frame along x and y
    axis = int(np.argmax(np.abs(slopes)))
    if abs(slopes[axis]) < MIN_SPEED:
        return None
    step = [0, 0]
    step[axis] = int(np.sign(slopes[axis]))
    return next(name for name, vector in DIRECTIONS.items() if list(vector) == step)


SETTINGS_KEYS = ("frame_size", "digit_size", "frames", "speed", "images")  # what the checkers read


def read_settings(path: Path) -> dict:
    """The settings that ``vidtwin demo digits`` wrote to ``path``; CheckGenerationError for a damaged file."""
    remake = f"remake the data set with `{command('demo digits')}`"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckGenerationError(f"{path} is not the JSON settings file of a Moving Digits data set ({error}); {remake}") from None
    missing = [key for key in SETTINGS_KEYS if not isinstance(settings, dict) or key not in settings]
    if not missing and not (isinstance(settings["images"], dict) and "train" in settings["images"]):
        missing = ["images.train"]
    if missing:
        raise CheckGenerationError(f"{path} lacks {', '.join(missing)}: it is not the settings file of a Moving Digits "
                                   f"data set, or it is damaged; {remake}")
    return settings


def data_settings(data_dir: Path) -> dict:
    """The settings a Moving Digits data folder was made with (its digits.json), checked."""
    settings_path = Path(data_dir) / SETTINGS_FILE
    if not settings_path.is_file():
        raise CheckGenerationError(f"{data_dir} has no {SETTINGS_FILE}; give the folder that "
                                   f"`{command('demo digits')}` wrote")
    return read_settings(settings_path)


class DigitChecker:
    """Reads the digit and the direction of Moving Digits clips (see the module docstring)."""

    def __init__(self, data_dir: Path):
        self.settings = data_settings(data_dir)
        self.data_dir = Path(data_dir)
        self.classifier = self._train()

    def _train(self):
        svm = require("sklearn.svm", "demo", "the Moving Digits checker's digit classifier")
        images, digits = load_digit_images()
        size, frame_size = self.settings["digit_size"], self.settings["frame_size"]
        start = (frame_size - size) // 2
        features, labels = [], []
        for index in self.settings["images"]["train"]:
            frame = ink(render_clip(render_sprite(images[index], size), np.array([[start, start]]), frame_size))[0]
            (cx, cy), = centroids(frame[None])
            for dx, dy in JITTER:
                features.append(window_features(frame, (cx + dx, cy + dy), size))
                labels.append(int(digits[index]))
        return svm.SVC(C=10.0, gamma="scale").fit(np.stack(features), np.asarray(labels))

    def read(self, frames: np.ndarray) -> Tuple[Optional[int], Optional[str]]:
        """uint8 (F, H, W, 3) -> (digit or None, direction or None)."""
        weights = ink(frames)
        points = centroids(weights)
        size = int(round(self.settings["digit_size"] * frames.shape[2] / self.settings["frame_size"]))
        readable = [i for i in range(len(frames)) if not np.isnan(points[i]).any()]
        if not readable:
            return None, None
        features = np.stack([window_features(weights[i], points[i], size) for i in readable])
        votes = np.bincount(self.classifier.predict(features), minlength=10)
        return int(np.argmax(votes)), direction_of(points)

    def score(self, clips: Sequence[Clip], progress: bool = True) -> dict:
        """{"clips", "digit_accuracy", "direction_accuracy", "both_accuracy"} over `clips`."""
        from ..data.video_io import read_video

        digit_hits = direction_hits = both = 0
        for clip in tqdm(clips, desc="checking clips", unit="clip", disable=not progress):
            frames, _ = read_video(clip.path)
            digit, direction = self.read(frames.numpy())
            digit_hits += digit == clip.digit
            direction_hits += direction == clip.direction
            both += digit == clip.digit and direction == clip.direction
        count = max(len(clips), 1)
        return {"clips": len(clips), "digit_accuracy": digit_hits / count, "direction_accuracy": direction_hits / count,
                "both_accuracy": both / count}


def decoupling_score(checker: DigitChecker, crossed: Sequence[Tuple[np.ndarray, Clip, Clip]]) -> dict:
    """The paper's central claim, measured on cross-reenacted clips.

    crossed: ``(frames, structure_source, dynamics_source)`` per clip, frames uint8 (F, H, W, 3)
    decoded from the structure latent of one clip and the dynamics latents of another.
    Returns {"pairs", "digit_from_structure", "direction_from_dynamics", "decoupled"}: the shares of
    clips whose digit is the structure source's, whose direction is the dynamics source's, and both;
    and, to show where each went otherwise, "digit_from_dynamics" and "direction_from_structure"
    (a model with the paper's split, where a constant movement is the structure's "global
    movement", puts the direction there). Pairs whose two sources share the digit or the direction
    say nothing about it; give pairs that differ in both.
    """
    digit_hits = direction_hits = both = digit_from_dynamics = direction_from_structure = 0
    for frames, structure_source, dynamics_source in crossed:
        digit, direction = checker.read(frames)
        digit_hits += digit == structure_source.digit
        direction_hits += direction == dynamics_source.direction
        both += digit == structure_source.digit and direction == dynamics_source.direction
        digit_from_dynamics += digit == dynamics_source.digit
        direction_from_structure += direction == structure_source.direction
    count = max(len(crossed), 1)
    return {"pairs": len(crossed), "digit_from_structure": digit_hits / count,
            "direction_from_dynamics": direction_hits / count, "decoupled": both / count,
            "digit_from_dynamics": digit_from_dynamics / count,
            "direction_from_structure": direction_from_structure / count}


def crossing_pairs(clips: Sequence[Clip], count: int, seed: int = 0) -> List[Tuple[Clip, Clip]]:
    """``count`` seeded (structure source, dynamics source) pairs that differ in digit and direction."""
    rng = np.random.default_rng(seed)
    candidates = [(a, b) for a in clips for b in clips if a.digit != b.digit and a.direction != b.direction]
    if not candidates:
        raise CheckGenerationError("the decoupling score needs clips that differ in both digit and direction")
    chosen = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(chosen)]


def cross_reenacted(config, ckpt, pairs: Sequence[Tuple[Clip, Clip]], progress: bool = True,
                    allow_unsafe_pickle: bool = False):
    """``(frames, structure_source, dynamics_source)`` per pair, decoded by the autoencoder as
    ``vidtwin cross`` decodes: the structure latents of the first clip with the dynamics
    latents of the second (posterior means, the model's own clip size).

    config: a YAML path, several merged in order, or None for a ``save_pretrained`` folder ``ckpt``.
    """
    import torch

    from ..checkpoint import load_model
    from ..inference import cross_reenact
    from ..inference.pipeline import to_uint8_frames

    configs = None if config is None else [str(path) for path in (config if isinstance(config, (list, tuple)) else [config])]
    model = load_model(configs, str(ckpt), allow_unsafe_pickle=allow_unsafe_pickle)
    crossed = []
    with torch.inference_mode():
        for structure, dynamics in tqdm(pairs, desc="cross-reenacting", unit="pair", disable=not progress):
            video = cross_reenact(model, str(structure.path), str(dynamics.path)).video  # (3, N, H, W)
            crossed.append((to_uint8_frames(video).numpy(), structure, dynamics))  # frames (N, H, W, 3)
    return crossed


def clips_from_folder(folder: Path) -> List[Clip]:
    clips = []
    for path in sorted(folder.glob("*.mp4")):
        match = GENERATED_NAME.fullmatch(path.name)
        if match:
            clips.append(Clip(path, int(match["digit"]), match["direction"]))
    if not clips:
        raise CheckGenerationError(f"{folder} holds no clips named <digit>-<direction>_<index>.mp4 (e.g. 3-left_000.mp4)")
    return clips


def clips_from_csv(path: Path) -> List[Clip]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"videos", "digit", "direction"} <= set(rows[0]):
        raise CheckGenerationError(f"{path} is not a Moving Digits CSV with columns videos, digit, direction")
    return [Clip(path.parent / row["videos"], int(row["digit"]), row["direction"]) for row in rows]


def load_clips(source: Path) -> List[Clip]:
    if source.is_dir():
        return clips_from_folder(source)
    if source.is_file() and source.suffix == ".csv":
        return clips_from_csv(source)
    raise CheckGenerationError(f"{source} is neither a folder of generated clips nor a Moving Digits CSV")


def real_validation_clips(data_dir: Path) -> List[Clip]:
    """The real validation clips of a data set: the checker's ceiling (digit images it never trained on)."""
    val_csv = Path(data_dir) / "val.csv"
    if not val_csv.is_file():
        raise CheckGenerationError(f"{data_dir} has no val.csv for the ceiling; pass --no-ceiling to skip it")
    return clips_from_csv(val_csv)


__all__ = ["Clip", "CheckGenerationError", "DigitChecker", "INK_THRESHOLD", "MIN_SPEED", "centroids", "clips_from_csv",
           "clips_from_folder", "cross_reenacted", "crossing_pairs", "decoupling_score", "direction_of", "ink",
           "load_clips", "real_validation_clips", "window_features"]
