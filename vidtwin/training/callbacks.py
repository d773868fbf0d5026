"""Training callbacks: sample-video logging, the periodic / final checkpoints, checkpoint safety.

All step intervals here count updates (``pl_module.train_step``), not Lightning's
``global_step`` (which advances once per optimizer stepped: twice per update of the autoencoder
with its discriminator).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

logger = logging.getLogger(__name__)


class NonFiniteStateError(RuntimeError):
    """A checkpoint was about to store NaN or infinite weights."""


def assert_finite_state(state_dict: Mapping[str, torch.Tensor], step: int) -> None:
    """Raise ``NonFiniteStateError`` naming the first floating tensor that holds NaN or inf."""
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteStateError(
                f"refusing to save a checkpoint at update {step}: {name} holds NaN or inf values; "
                "the last saved checkpoint is kept. Lower the learning rate or set grad_clip, then resume"
            )


def _frames_grid(videos: Sequence[torch.Tensor]) -> torch.Tensor:
    """The K videos one above the other for each clip, one column per frame.

    videos: K tensors (B, 3, T, H, W) in [-1, 1]. Returns (3, B*K*H, T*W) float in [0, 1].
    """
    rows = torch.stack(list(videos), dim=1)  # (B, K, 3, T, H, W)
    b, k, c, t, h, w = rows.shape
    grid = rows.permute(2, 0, 1, 4, 3, 5).reshape(c, b * k * h, t * w)  # (3, B*K*H, T*W)
    return ((grid.float() + 1) / 2).clamp(0, 1)


def _side_by_side_video(videos: Sequence[torch.Tensor]) -> torch.Tensor:
    """The K videos side by side, clips stacked vertically, as uint8 (T, B*H, K*W, 3).

    videos: K tensors (B, 3, T, H, W) in [-1, 1].
    """
    columns = torch.stack(list(videos), dim=1)  # (B, K, 3, T, H, W)
    b, k, c, t, h, w = columns.shape
    frames = columns.permute(3, 0, 4, 1, 5, 2).reshape(t, b * h, k * w, c)  # (T, B*H, K*W, 3)
    return (((frames.float() + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8)


class VideoGridLogger(pl.Callback):
    """Every ``every_n_steps`` updates, log the videos that the module shows for the training batch.

    The module names them (:meth:`TrainingModule.training_samples`; the autoencoder gives
    input and reconstruction, with the EMA weights when EMA is on). Writes a frame grid (the
    videos one above the other) to TensorBoard as the image ``samples/train`` and, with
    ``save_videos``, an mp4 (the videos side by side) to
    ``<default_root_dir>/samples/step_XXXXXXXX.mp4``. Runs on the global-rank-zero process only.
    """

    def __init__(self, every_n_steps: int = 500, max_samples: int = 2, save_videos: bool = True,
                 log_first_step: bool = False, fps: float = 8.0) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.max_samples = int(max_samples)
        self.save_videos = save_videos
        self.log_first_step = log_first_step
        self.fps = float(fps)
        self._last_logged = -1

    def _due(self, step: int) -> bool:
        if step == self._last_logged:
            return False
        return step % self.every_n_steps == 0 and (step > 0 or self.log_first_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = pl_module.train_step
        if not trainer.is_global_zero or not self._due(step):
            return
        self._last_logged = step
        with torch.no_grad():
            samples = pl_module.training_samples(batch, self.max_samples)
        if not samples:
            return
        videos = [video.detach().cpu().float() for video in samples.values()]  # K x (b, 3, T, H, W)
        for lg in trainer.loggers:
            experiment = getattr(lg, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("samples/train", _frames_grid(videos), global_step=step)
        if self.save_videos:
            from ..data.video_io import VideoWriteError, write_video

            path = Path(trainer.default_root_dir) / "samples" / f"step_{step:08d}.mp4"
            try:
                write_video(path, _side_by_side_video(videos), fps=self.fps)
            except VideoWriteError as error:  # a sample video is not worth stopping the run for
                logger.warning("could not write the sample video %s: %s", path, error)


class FinalCheckpoint(pl.Callback):
    """Save ``last.ckpt`` when training ends normally (not after an exception).

    ModelCheckpoint only saves on its interval, so a run whose length is not a multiple of it would
    otherwise end with a stale ``last.ckpt``.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        super().__init__()
        self.path = os.path.join(dirpath, filename)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.state.stage is not None and trainer.interrupted:
            return
        trainer.save_checkpoint(self.path, weights_only=False)


class UpdateCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose file names can use ``{train/step}``: the module's update counter
    (``train_step`` of the training contract), whether or not the module logs it."""

    def _monitor_candidates(self, trainer: pl.Trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["train/step"] = torch.tensor(float(trainer.lightning_module.train_step))
        return candidates


def best_checkpoint(dirpath: str, monitor: str = "val/rec_loss", top_k: int = 3, mode: str = "min") -> ModelCheckpoint:
    """A ModelCheckpoint that runs after every validation and keeps the ``top_k`` best checkpoints
    by ``monitor`` (the official policy: the best 3 by ``val/rec_loss``), named
    ``best_step_XXXXXXXX.ckpt`` after the update count."""
    if top_k < 1:
        raise ValueError(f"checkpoint top_k must be >= 1, got {top_k}")
    return UpdateCheckpoint(
        dirpath=dirpath,
        filename="best_step_{train/step:08.0f}",
        auto_insert_metric_name=False,
        monitor=monitor,
        mode=mode,
        save_top_k=top_k,
        save_last=False,
        every_n_epochs=1,  # with no step interval: after each validation (mid-epoch ones included)
        save_on_train_epoch_end=False,
        enable_version_counter=False,  # a name is replaced, never versioned (see step_checkpoint)
    )


def step_checkpoint(dirpath: str, every_n_steps: int, lightning_steps_per_update: int,
                    save_top_k: int = -1, extra: Optional[dict] = None) -> ModelCheckpoint:
    """A ModelCheckpoint writing ``step_XXXXXXXX.ckpt`` and ``last.ckpt`` every ``every_n_steps`` updates.

    The interval is translated to Lightning's ``global_step`` (``lightning_steps_per_update`` per
    update); the file name carries the update count ``train/step``. An existing file of the same
    name is replaced, never versioned: there is one ``last.ckpt`` and it is always the newest
    (Lightning would otherwise write ``last-v1.ckpt`` beside a ``last.ckpt`` of FinalCheckpoint).
    """
    if every_n_steps < 1:
        raise ValueError(f"checkpoint every_n_steps must be >= 1, got {every_n_steps}")
    return UpdateCheckpoint(
        dirpath=dirpath,
        filename="step_{train/step:08.0f}",
        auto_insert_metric_name=False,
        every_n_train_steps=every_n_steps * lightning_steps_per_update,
        save_top_k=save_top_k,
        save_last=True,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
        **(extra or {}),
    )
