"""A dataset of fixed-length video clips for training and validating the autoencoder.

Each item is one clip of ``sample_num_frames`` frames, resized to cover ``input_height x input_width``,
cropped and scaled to [-1, 1]. Which source frames a clip uses is ``frame_sampling``:

* ``"stride"`` (default): every ``interval = max(1, round(src_fps / sample_fps))``-th frame from the
  clip start; a video with fewer frames is padded by repeating its last frame.
* ``"official"``: the official VidTok/VidTwin training reader (see :func:`official_clip_indices`):
  ``np.linspace(start, min(total - 1, start + (n - 1) * interval + 1), n)``, so the clip spans one
  source frame more than the stride and its steps are uneven; a video shorter than that span is
  spread over its whole length. The published model was trained on these clips.

Videos are listed by one of:
  * ``meta_path``: a CSV file with a ``videos`` column of paths relative to ``data_dir`` (the
    official VidTok/VidTwin format; ``vidtwin make-meta`` writes one). ``data_dir`` defaults
    to the CSV's folder;
  * ``data_dir`` alone: every video file under it, recursively, in sorted order (each real folder
    once, however many links lead to it; hidden folders are not searched);
  * ``video_paths``: an explicit list (used for the bundled demo videos).

A video that cannot be read never becomes black frames: it is logged once, counted
(``num_bad``, ``bad_files``) and replaced by the next readable video. ``strict=True`` raises on
the first failure instead, and more than ``max_bad_fraction`` unreadable videos stops the run.
"""

from __future__ import annotations

import csv
import ctypes
import logging
import multiprocessing
import multiprocessing.context
import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..hints import Verbatim, command
from .transforms import preprocess_clip
from .folders import list_video_files
from .video_io import VIDEO_EXTENSIONS, VideoInfo, VideoReadError, probe_video, read_frames, sample_indices, sampling_stride

logger = logging.getLogger(__name__)


FRAME_SAMPLINGS = ("stride", "official")


def official_clip_indices(num_frames: int, interval: int, sample_num_frames: int, start: int | None,
                          generator: torch.Generator | None = None) -> list[int]:
    """Source frame indices of one clip as the official training reader picks them.

    n = min(sample_num_frames, num_frames) frames from
    ``np.linspace(start, min(num_frames - 1, start + (n - 1) * interval + 1), n)``, truncated to int.
    ``start=None`` draws it uniformly from [0, num_frames - (n - 1) * interval - 2] (the official
    ``random.randint`` bounds), or uses 0 when the video is shorter than that span, which spreads
    the clip over the whole video. Fewer than ``sample_num_frames`` indices come back only for a
    video with fewer frames; the caller pads those by repeating the last frame, as the official does.
    """
    count = min(sample_num_frames, num_frames)
    span = (count - 1) * interval + 1
    if start is None:
        last_start = num_frames - span - 1
        start = 0 if last_start < 0 else int(torch.randint(0, last_start + 1, (1,), generator=generator))
    stop = min(num_frames - 1, start + span)
    return np.linspace(start, stop, count).astype(int).tolist()


class TooManyBadVideosError(RuntimeError):
    """More of a dataset's videos failed to decode than its ``max_bad_fraction`` allows."""


class _BadVideoTracker:
    """Which videos of a dataset failed to decode, visible to the main process and every loader worker.

    DataLoader workers each hold a copy of the dataset, so a plain Python set filled in a worker
    would be invisible to the main process (where training logs ``num_bad``) and to the other
    workers (each would warn about, and retry, the same broken file). Instead one flag byte per
    video lives in shared memory (``multiprocessing.RawArray``), which workers inherit whether they
    are forked, spawned or started by a forkserver. There is deliberately no lock: a lock made in
    one start context cannot be handed to a worker of another, the count is recomputed from the
    flags (so it is exact), and the only possible race, two workers failing on the same file at
    the same moment, merely logs its warning twice. Pickling or deep-copying outside a worker start
    gives an independent snapshot. With DDP each rank has its own dataset and therefore its own counts.
    """

    def __init__(self, num_videos: int, bad_indices: Sequence[int] = ()):
        self._flags = multiprocessing.RawArray(ctypes.c_uint8, num_videos)  # 1 = failed to decode
        for index in bad_indices:
            self._flags[index] = 1

    def _view(self) -> np.ndarray:
        return np.frombuffer(self._flags, dtype=np.uint8)  # (num_videos,), no copy

    def mark(self, index: int) -> bool:
        """Record video ``index`` as bad; True when it was not known to be bad yet."""
        if self._flags[index]:
            return False
        self._flags[index] = 1
        return True

    def is_bad(self, index: int) -> bool:
        return bool(self._flags[index])

    @property
    def count(self) -> int:
        return int(self._view().sum())

    def bad_indices(self) -> list[int]:
        return np.flatnonzero(self._view()).tolist()

    def __getstate__(self):
        if multiprocessing.context.get_spawning_popen() is not None:  # starting a worker process: share
            return {"shared": self._flags}
        return {"snapshot": (len(self._flags), self.bad_indices())}

    def __setstate__(self, state):
        if "shared" in state:
            self._flags = state["shared"]
        else:
            self.__init__(*state["snapshot"])


def read_meta_videos(meta_path: str) -> list[str]:
    """The non-empty entries of a meta CSV's ``videos`` column, as written (relative to its data_dir)."""
    with open(meta_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in (reader.fieldnames or [])]
        if "videos" not in columns:
            raise ValueError(f"meta file {meta_path} has no 'videos' column (columns: {columns}); write one with `{command('make-meta', Verbatim('DIR'))}`")
        reader.fieldnames = columns
        relative = [(row.get("videos") or "").strip() for row in reader]
    return [path for path in relative if path]


def _list_from_meta(meta_path: str, data_dir: str) -> list[str]:
    return [os.path.join(data_dir, path) for path in read_meta_videos(meta_path)]


def list_folder_videos(data_dir: str) -> list[str]:
    """Every video file under ``data_dir``, sorted (see :func:`~vidtwin.data.folders.list_video_files`:
    linked folders are followed, each real folder once; hidden folders are not searched)."""
    return list_video_files(data_dir)


def list_videos(meta_path: str | None = None, data_dir: str | None = None, video_paths: Sequence[str] | None = None) -> list[str]:
    """Resolve the video list of a dataset (see the module docstring); raise ValueError with what to fix."""
    if meta_path is not None and video_paths is not None:
        raise ValueError("give either meta_path or video_paths for a video dataset, not both")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir} does not exist or is not a folder; fix data_dir in the data config")
    if meta_path is not None:
        if not os.path.isfile(meta_path):
            raise ValueError(f"meta file {meta_path} not found; fix meta_path in the data config or create it with `{command('make-meta', Verbatim('DIR'))}`")
        paths = _list_from_meta(meta_path, data_dir if data_dir is not None else os.path.dirname(os.path.abspath(meta_path)))
        source = f"meta file {meta_path}"
    elif video_paths is not None:
        paths = [str(path) if data_dir is None else os.path.join(data_dir, str(path)) for path in video_paths]
        source = "video_paths"
    elif data_dir is not None:
        paths = list_folder_videos(data_dir)
        source = f"folder {data_dir} (video extensions: {' '.join(VIDEO_EXTENSIONS)})"
    else:
        raise ValueError("a video dataset needs meta_path, data_dir or video_paths; none was given")
    if not paths:
        raise ValueError(f"no videos found in {source}; point the data config at a folder or meta file that lists videos")
    return paths


class VideoDataset(Dataset):
    """Fixed-length clips from a list of videos.

    Args:
        meta_path: CSV with a ``videos`` column of paths relative to ``data_dir``.
        data_dir: base folder of the CSV paths; alone, every video under it (recursively).
        video_paths: explicit list of video paths (relative ones are joined to ``data_dir`` when given).
        sample_num_frames: T, frames per clip. Videos with fewer sampled frames are padded by
            repeating their last frame.
        sample_fps: target frame rate; the frame step is max(1, round(src_fps / sample_fps)). None keeps every frame.
        frame_sampling: "stride" or "official" (see the module docstring): which source frames a clip uses.
        input_height, input_width: output frame size (h, w).
        train: random clip start (and random crop when ``random_crop``); otherwise the clip starts at
            frame 0 and is center-cropped, so validation is deterministic.
        random_crop: random crop position in training (center crop otherwise).
        strict: raise VideoReadError on the first unreadable video instead of skipping it.
        max_bad_fraction: raise TooManyBadVideosError once more than this fraction of the videos
            failed (1.0 never stops).
        clips_per_video: how often each video appears per epoch (different random clips in training);
            useful for tiny datasets such as the demo videos.
        seed: when given, every item's clip start and crop are a fixed function of (seed, index),
            the same in every epoch; None uses the global torch RNG (seeded per worker by DataLoader).
        backend: video reading backend ("decord", "pyav"); None chooses automatically.

    Items are dicts: ``video`` float32 (3, T, h, w) in [-1, 1], ``path`` str, ``fps`` float (the
    frame rate of the sampled clip).
    """

    def __init__(
        self,
        meta_path: str | None = None,
        data_dir: str | None = None,
        video_paths: Sequence[str] | None = None,
        sample_num_frames: int = 16,
        sample_fps: float | None = 8,
        input_height: int = 224,
        input_width: int = 224,
        train: bool = True,
        random_crop: bool = False,
        strict: bool = False,
        max_bad_fraction: float = 0.1,
        clips_per_video: int = 1,
        seed: int | None = None,
        backend: str | None = None,
        frame_sampling: str = "stride",
    ):
        super().__init__()
        if frame_sampling not in FRAME_SAMPLINGS:
            raise ValueError(f"frame_sampling must be one of {', '.join(FRAME_SAMPLINGS)}, got {frame_sampling!r}")
        for name, value in [("sample_num_frames", sample_num_frames), ("input_height", input_height),
                            ("input_width", input_width), ("clips_per_video", clips_per_video)]:
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.paths = list_videos(meta_path, data_dir, video_paths)
        self.sample_num_frames = int(sample_num_frames)
        self.sample_fps = sample_fps
        self.size = (int(input_height), int(input_width))
        self.train = train
        self.random_crop = random_crop
        self.strict = strict
        self.max_bad_fraction = max_bad_fraction
        self.clips_per_video = int(clips_per_video)
        self.seed = seed
        self.backend = backend
        self.frame_sampling = frame_sampling
        self._bad = _BadVideoTracker(len(self.paths))
        self._info: dict[int, VideoInfo] = {}  # probe results, cached per process

    @property
    def num_videos(self) -> int:
        return len(self.paths)

    @property
    def num_bad(self) -> int:
        """Number of distinct videos that failed to decode so far (all loader workers included)."""
        return self._bad.count

    @property
    def bad_files(self) -> list[str]:
        """Paths of the videos that failed to decode so far (all loader workers included)."""
        return [self.paths[index] for index in self._bad.bad_indices()]

    def __len__(self) -> int:
        return self.num_videos * self.clips_per_video

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        first = index % self.num_videos
        # Deterministic replacement: the next video (cyclically) that is not known to be bad.
        for offset in range(self.num_videos):
            video = (first + offset) % self.num_videos
            if self._bad.is_bad(video):
                continue
            try:
                return self._load(video, generator)
            except VideoReadError as error:
                self._record_failure(video, error)
        raise TooManyBadVideosError(self._too_many_message(f"all {self.num_videos} videos failed to decode"))

    def _load(self, video: int, generator: torch.Generator | None) -> dict:
        path = self.paths[video]
        info = self._info.get(video)
        if info is None:
            info = self._info[video] = probe_video(path, backend=self.backend)
        stride = sampling_stride(info.fps, self.sample_fps)
        if self.frame_sampling == "official":
            start = None if self.train else 0  # validation: the first clip, deterministic
            indices = official_clip_indices(info.num_frames, stride, self.sample_num_frames, start, generator)
        else:
            span = (self.sample_num_frames - 1) * stride + 1  # source frames covered by a full clip
            start = 0
            if self.train and info.num_frames > span:
                start = int(torch.randint(0, info.num_frames - span + 1, (1,), generator=generator))
            indices = sample_indices(info.num_frames, info.fps, self.sample_fps, self.sample_num_frames, start)
        frames = read_frames(path, indices, backend=self.backend)  # (N, H, W, 3) uint8, N <= T
        clip = preprocess_clip(frames, self.size, random_crop=self.train and self.random_crop, generator=generator)  # (3, N, h, w)
        missing = self.sample_num_frames - clip.shape[1]
        if missing > 0:  # short video: repeat the last frame
            clip = torch.cat([clip, clip[:, -1:].expand(-1, missing, -1, -1)], dim=1)  # (3, T, h, w)
        return {"video": clip, "path": path, "fps": info.fps / stride}

    def _record_failure(self, video: int, error: VideoReadError) -> None:
        if self.strict:
            raise error
        if self._bad.mark(video):
            logger.warning("skipping unreadable video (%d of %d bad so far): %s", self.num_bad, self.num_videos, error)
        if self.num_bad > self.max_bad_fraction * self.num_videos:
            raise TooManyBadVideosError(self._too_many_message(
                f"{self.num_bad} of {self.num_videos} videos failed to decode, more than max_bad_fraction={self.max_bad_fraction}"))

    def _too_many_message(self, headline: str) -> str:
        files = self.bad_files
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        return f"{headline}: {shown}; check the files (`{command('make-meta', Verbatim('DIR'), '--check')}` drops unreadable ones)"
