"""Video reading and writing, clip datasets and the Lightning data module.

``LatentDataset``, ``collate_latents`` and ``collate_latent_sequences`` live in :mod:`vidtwin.latents` and are importable from here too.

``VideoDataModule`` and ``collate_clips`` are imported on first use, so that tools which only read
or write videos do not pay for importing pytorch_lightning (several seconds).
"""

from vidtwin.latents import LatentDataset, LatentDatasetError, collate_latent_sequences, collate_latents  # kept here, where users import them

from .dataset import TooManyBadVideosError, VideoDataset
from .demo import demo_train_videos, demo_val_videos
from .video_io import (
    VideoInfo,
    VideoReadError,
    VideoWriteError,
    is_video_file,
    probe_video,
    read_frames,
    read_video,
    sample_indices,
    write_video,
)

__all__ = [
    "LatentDataset",
    "LatentDatasetError",
    "TooManyBadVideosError",
    "VideoDataModule",
    "VideoDataset",
    "VideoInfo",
    "VideoReadError",
    "VideoWriteError",
    "collate_clips",
    "collate_latent_sequences",
    "collate_latents",
    "demo_train_videos",
    "demo_val_videos",
    "is_video_file",
    "probe_video",
    "read_frames",
    "read_video",
    "sample_indices",
    "write_video",
]


def __getattr__(name: str):
    if name in ("VideoDataModule", "collate_clips"):
        from . import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
