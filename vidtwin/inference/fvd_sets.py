"""The clips of a set of videos (a folder or a CSV list) and their I3D statistics.

:func:`list_video_set` lists the videos (every one is an input that no output may replace);
:func:`plan_video_set` probes each one for its frame count, so that a video too short for one
clip, or a set of fewer than two clips, is reported before any feature is computed. A video too
short for ``--clips-per-video`` distinct clips gives the distinct ones only (the same clip counted
twice would shrink the covariance), and the set's count of such videos is warned about and
reported. :func:`video_set_statistics` then decodes the clips one video at a time
(:class:`~vidtwin.data.video_io.FrameReader` reads only the requested frames, walking forward) and
folds their features into running sums: memory depends on the batch size, not on the set.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vidtwin.data.transforms import preprocess_clip
from vidtwin.data.video_io import FrameReader, probe_video
from vidtwin.fvd.features import FeatureAccumulator
from vidtwin.fvd.i3d import NUM_CLASSES
from vidtwin.fvd.protocol import ClipProtocol, FVDError
from vidtwin.fvd.stats import FeatureStats
from vidtwin.inference.dataset_plan import list_sources
from vidtwin.inference.options import InferenceError
from vidtwin.inference.pipeline import to_uint8_frames

logger = logging.getLogger(__name__)


@dataclass
class VideoSet:
    """The videos of one side of an FVD comparison and where each clip starts."""

    option: str  # the command-line option that named it (--real, --fake), for messages
    source: str  # the folder or CSV as given
    paths: list[str] = field(default_factory=list)
    starts: list[list[int]] = field(default_factory=list)  # per video, increasing
    frame_sizes: Counter = field(default_factory=Counter)  # "HxW" -> videos
    fewer_clips: int = 0  # videos too short for --clips-per-video distinct clips

    @property
    def num_clips(self) -> int:
        return sum(len(s) for s in self.starts)

    def describe(self) -> dict:
        sizes = [f"{size} ({count} videos)" for size, count in self.frame_sizes.most_common(5)]
        more = len(self.frame_sizes) - len(sizes)
        described = {"source": self.source, "videos": len(self.paths), "clips": self.num_clips,
                     "decoded_frame_sizes": sizes + ([f"{more} more sizes"] if more > 0 else [])}
        if self.fewer_clips:
            described["videos_with_fewer_distinct_clips"] = self.fewer_clips
        return described


def check_clip_count(count: int, what: str) -> None:
    """Fewer than 2 clips is an error; fewer than the feature dimension a warning (singular covariance)."""
    if count < 2:
        raise FVDError(f"{what} gives {count} clip(s); FVD fits a Gaussian to each set and needs at least 2 clips per set")
    if count < NUM_CLASSES:
        logger.warning("%s gives %d clips, fewer than the %d feature dimensions: the covariance is singular and the "
                       "FVD estimate biased (published numbers use 2,048 or more clips)", what, count, NUM_CLASSES)


def list_video_set(source: str, option: str, data_dir: str | None = None) -> list[str]:
    """The video paths of ``source`` (a folder, searched recursively, or a CSV list); FVDError when there are none."""
    if Path(source).is_file() and Path(source).suffix.lower() != ".csv":
        raise FVDError(f"{option} {source} must be a folder of videos or a .csv list with a 'videos' column")
    try:
        listed = list_sources(source, data_dir if Path(source).is_file() else None)  # --data-dir is the CSVs' root
    except InferenceError as error:
        raise FVDError(f"{option}: {error}") from None
    return [video.path for video in listed]


def plan_video_set(source: str, option: str, protocol: ClipProtocol, data_dir: str | None = None,
                   progress: bool = False, paths: list[str] | None = None) -> VideoSet:
    """Probe the videos of ``source`` (``paths``: its listing by :func:`list_video_set`, listed here when None).

    FVDError for a video shorter than one clip or a set under 2 clips.
    """
    if paths is None:
        paths = list_video_set(source, option, data_dir)
    video_set = VideoSet(option, source)
    for index, path in enumerate(tqdm(paths, desc=f"probe {option}", unit="video", disable=not progress or len(paths) < 2,
                                      leave=False, dynamic_ncols=True)):
        info = probe_video(path)  # VideoReadError names an unreadable file
        try:
            starts = protocol.clip_starts_of(info.num_frames, index)
        except FVDError:
            raise FVDError(f"{option} video {path} {protocol.too_short(info.num_frames)}") from None
        video_set.paths.append(path)
        video_set.starts.append(starts)
        video_set.fewer_clips += len(starts) < protocol.clips_per_video
        size = protocol.resolution
        video_set.frame_sizes[f"{info.height}x{info.width}" if size is None else f"{size}x{size}"] += 1
    if video_set.fewer_clips:
        logger.warning("%s: %d of %d videos are too short for %d distinct clips of %d frames at stride %d; each gives "
                       "its distinct clips only (%d clips in all, not %d)", option, video_set.fewer_clips,
                       len(video_set.paths), protocol.clips_per_video, protocol.frames, protocol.stride,
                       video_set.num_clips, protocol.clips_per_video * len(video_set.paths))
    check_clip_count(video_set.num_clips, f"{option} {source}")
    return video_set


def _prepare(frames: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Decoded uint8 ``(T, H, W, 3)`` -> uint8 frames for I3D, center-cropped to the protocol's resolution if set."""
    if resolution is None:
        return frames
    return to_uint8_frames(preprocess_clip(frames, (resolution, resolution)))  # (T, R, R, 3)


def video_set_statistics(video_set: VideoSet, protocol: ClipProtocol, model: torch.nn.Module,
                         batch_clips: int = 8, progress: bool = False) -> FeatureStats:
    """Decode every clip of the set, run I3D in batches, and return the running statistics."""
    accumulator = FeatureAccumulator(model, batch_clips)
    bar = tqdm(total=video_set.num_clips, desc=f"FVD {video_set.option.lstrip('-')}", unit="clip",
               disable=not progress, dynamic_ncols=True)
    with bar:
        for path, starts in zip(video_set.paths, video_set.starts):
            with FrameReader(path) as reader:
                for start in starts:
                    accumulator.add(_prepare(reader.read(protocol.clip_indices(start)), protocol.resolution))  # (T, H, W, 3)
                    bar.update(accumulator.stats.count - bar.n)  # clips whose features are in the sums
        accumulator.flush()
        bar.update(accumulator.stats.count - bar.n)
    return accumulator.stats
