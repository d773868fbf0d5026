"""What the two latent-model training modules share: :class:`LatentModelModule`.

The flow-matching generator (:mod:`.generator_module`) and the world model (:mod:`.world_module`)
train one ``nn.Module`` (named by :attr:`LatentModelModule.model_attribute`) with AdamW, a linear
warmup, optional gradient clipping and an EMA of the weights (the training contract's); draw each
update's randomness from a generator seeded by the run's seed and the update number (so a resume
at an epoch boundary is exact); and decode sample videos with an autoencoder loaded on first use.
They optimize automatically, so Lightning accumulates gradients for them
(``lightning.trainer.accumulate_grad_batches``). Subclasses build their model and write their own
checkpoint entry.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from ..config import ConfigError
from ..latents.dataset import LatentDataset
from ..models.config import VidTwinConfig
from ..pretrained import FINGERPRINT_FIELD, autoencoder_record
from .contract import EMA_STATE_KEY, TRAINING_STATE_KEY, TrainingModule
from .schedulers import WarmupCosine

logger = logging.getLogger(__name__)

# Devices whose torch build has AdamW's fused kernel for float parameters.
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def dataset_model_config(dataset: LatentDataset) -> VidTwinConfig:
    """The autoencoder config that a latent dataset's manifest records."""
    try:
        return VidTwinConfig.from_dict(dataset.config)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the model config recorded in {dataset.root} is not readable: {error}") from None


def dataset_latent_shapes(dataset: LatentDataset) -> dict:
    """Per-clip latent shapes of a latent dataset, from the model config its manifest records."""
    return {name: list(shape) for name, shape in dataset_model_config(dataset).latent_shapes().items()}


def autoencoder_model_config(autoencoder: Mapping) -> VidTwinConfig:
    """The config of the autoencoder that ``{"config": ..., "ckpt": ...}`` names."""
    from ..checkpoint import read_pretrained_config_dict
    from ..config import autoencoder_config_from

    config, ckpt = autoencoder.get("config"), autoencoder.get("ckpt")
    if config is None and ckpt is not None and Path(str(ckpt)).is_dir():
        return VidTwinConfig.from_dict(read_pretrained_config_dict(ckpt))
    if config is not None:
        if not Path(str(config)).is_file():
            raise ConfigError(f"the autoencoder config {config} does not exist; train the autoencoder first "
                              "or point model.params.autoencoder.config at its run's config.yaml")
        return autoencoder_config_from(str(config))
    raise ConfigError("model.params.autoencoder needs config (a YAML) and ckpt, or ckpt as a save_pretrained folder")


def dataset_fingerprint(dataset: LatentDataset) -> Optional[str]:
    """The weights fingerprint of the autoencoder that encoded ``dataset`` (its manifest's identity);
    None for a dataset written before fingerprints were recorded."""
    return dataset.manifest["identity"].get(FINGERPRINT_FIELD)


def checked_autoencoder(autoencoder: Optional[Mapping], dataset: LatentDataset,
                        allow_other_weights: bool = False) -> tuple[dict, Optional[nn.Module]]:
    """``(record, model)`` of the autoencoder that ``model.params.autoencoder`` names for a latent
    model trained on ``dataset``: the record that the model's files keep (:func:`autoencoder_record`:
    its files, the dataset's weights fingerprint, the working folder that relative paths are
    relative to), and the autoencoder loaded on the CPU, or None when none is named.

    The autoencoder must make latents of the dataset's shapes, and hold the weights that encoded it
    (the dataset's fingerprint), unless ``allow_other_weights``: other weights of one config decode
    the model's output into noise. Either refusal is a ConfigError.
    """
    fingerprint = dataset_fingerprint(dataset)
    if autoencoder is None or (autoencoder.get("ckpt") is None and autoencoder.get("config") is None):
        return autoencoder_record(None, None, fingerprint, os.getcwd()), None
    config, ckpt = autoencoder.get("config"), autoencoder.get("ckpt")
    found = {name: list(shape) for name, shape in autoencoder_model_config(autoencoder).latent_shapes().items()}
    shapes = dataset_latent_shapes(dataset)
    if found != shapes:
        raise ConfigError(f"the autoencoder {ckpt} makes latents of shapes {found}, but the dataset "
                          f"{dataset.root} holds {shapes}; name the autoencoder that encoded it")
    from ..checkpoint import load_model
    from ..latents.latent_file import weights_fingerprint

    model = load_model(config, ckpt, device="cpu")
    weights = weights_fingerprint(model)
    if fingerprint is not None and weights != fingerprint and not allow_other_weights:
        raise ConfigError(f"model.params.autoencoder {ckpt} has other weights (fingerprint {weights}) than the ones "
                          f"that encoded the latent dataset {dataset.root} ({fingerprint}); name the checkpoint that "
                          "encoded it, or set model.params.allow_other_weights: true to decode the sample videos "
                          "with these weights anyway")
    return autoencoder_record(config, ckpt, fingerprint, os.getcwd()), model


class AutoencoderDecoder:
    """The autoencoder that decodes sample latents: loaded on first use (or given, loaded already),
    never part of the module's state dict or optimizer (a plain object, not an ``nn.Module`` attribute)."""

    def __init__(self, config: Optional[str], ckpt: Optional[str], model: Optional[nn.Module] = None):
        self.config, self.ckpt = config, ckpt
        self.model = model

    def get(self, device: torch.device):
        if self.model is None:
            from ..checkpoint import load_model

            self.model = load_model(self.config, self.ckpt, device=device)
            logger.info("sample videos are decoded by %s", self.ckpt)
        return self.model.to(device)


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, floor_ratio: Optional[float]) -> float:
    """The multiple of the learning rate at update ``step``: a linear warmup over ``warmup_steps``,
    then 1 (``floor_ratio`` None) or a half cosine from 1 down to ``floor_ratio`` at ``total_steps``
    (the autoencoder's ``warmup_cosine``; the warmup is these modules' own, which starts at
    ``1 / warmup_steps`` rather than 0)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if floor_ratio is None:
        return 1.0
    return WarmupCosine(lr_max=1.0, total_steps=total_steps, lr_min=floor_ratio, warmup_steps=warmup_steps)(step)


class LatentModelModule(TrainingModule):
    """AdamW with warmup, clipping, EMA, seeded updates and checkpoints for one trained model.

    Subclasses set :attr:`model_attribute` (the attribute holding the model; its name is the state
    dict prefix) and call :meth:`setup_training` once the model exists.
    """

    model_attribute = "model"
    checkpoint_key = ""  # the checkpoint entry of the model's config and autoencoder record

    def setup_training(self, learning_rate: float, weight_decay: float, betas, warmup_steps: int,
                       grad_clip: Optional[float], ema_decay: Optional[float], seed: Optional[int],
                       autoencoder: dict, min_learning_rate: Optional[float] = None,
                       autoencoder_model: Optional[nn.Module] = None) -> None:
        """``autoencoder``: the record of :func:`checked_autoencoder`, and ``autoencoder_model`` the
        autoencoder it loaded (None: no sample videos)."""
        self.learning_rate, self.weight_decay, self.betas = float(learning_rate), float(weight_decay), tuple(betas)
        self.warmup_steps, self.grad_clip = int(warmup_steps), grad_clip
        if min_learning_rate is not None and not 0 <= float(min_learning_rate) <= self.learning_rate:
            raise ConfigError(f"model.params.min_learning_rate must lie in [0, learning_rate = {self.learning_rate}], "
                              f"got {min_learning_rate}")
        self.min_learning_rate = None if min_learning_rate is None else float(min_learning_rate)
        self.use_ema(self.model_attribute, ema_decay)
        self.noise_seed = seed
        self.autoencoder_files = autoencoder
        self._decoder = (AutoencoderDecoder(autoencoder["config"], autoencoder["ckpt"], autoencoder_model)
                         if autoencoder_model is not None else None)

    @property
    def trained_model(self) -> nn.Module:
        return getattr(self, self.model_attribute)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # after Lightning restored a resumed checkpoint: the EMA
        if self.noise_seed is None:
            self.noise_seed = torch.initial_seed()  # vidtwin train's --seed

    def update_random(self) -> torch.Generator:
        """The random source of this update: the same for an update number, whether resumed or not."""
        random = torch.Generator(device=self.device)
        rank = self.trainer.global_rank if self._trainer is not None else 0
        random.manual_seed((int(self.noise_seed or 0) * 1_000_003 + self.train_step * 1_009 + rank) % (2**63))
        return random

    def configure_optimizers(self):
        # Fused AdamW: one kernel per step instead of a dozen small ops per tensor (the optimizer is a
        # few percent of these models' updates: docs/benchmarks.md). Devices without the fused kernel
        # keep the default, and so does 16-mixed: its scaler must unscale before clipping, which
        # fused AdamW defers to its step.
        fused = True if self.device.type in FUSED_ADAMW_DEVICES and not self.scales_gradients() else None
        optimizer = torch.optim.AdamW(self.trained_model.parameters(), lr=self.learning_rate, betas=self.betas,
                                      weight_decay=self.weight_decay, fused=fused)
        floor = self.min_learning_rate
        # The cosine spans the run (max_steps, or the epochs' updates): a longer run decays more slowly.
        total = self.total_updates() if floor is not None else 0
        floor_ratio = None if floor is None else (floor / self.learning_rate if self.learning_rate > 0 else 1.0)

        def factor(step: int) -> float:
            return learning_rate_factor(step, self.warmup_steps, total, floor_ratio)

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # The module's own setting (lightning.trainer.gradient_clip_val is refused: see below).
        if self.grad_clip:
            self.clip_gradient_norm(optimizer, self.grad_clip)

    def refused_trainer_settings(self) -> dict[str, str]:
        """Clipping is the module's own (``grad_clip``); Lightning accumulates gradients for it."""
        return {"gradient_clip_val": "set model.params.grad_clip instead (the module clips itself)",
                "gradient_clip_algorithm": "model.params.grad_clip always clips the global norm"}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # finite weights, counters, EMA
        checkpoint[TRAINING_STATE_KEY].update(noise_seed=self.noise_seed)

    def resumed_data_changes(self, entry: Mapping) -> list[str]:
        """What changed in the training data since the checkpoint whose model entry (``{"config",
        "autoencoder", ...}``) is ``entry`` was written; [] when nothing did. Here: the autoencoder
        weights that encoded it; subclasses add their own (the generator: its label table)."""
        before = (entry.get("autoencoder") or {}).get(FINGERPRINT_FIELD)
        now = (self.autoencoder_files or {}).get(FINGERPRINT_FIELD)
        if before is not None and before != now:
            return [f"it was encoded again with other autoencoder weights (fingerprint {before} then, {now} now)"]
        return []

    def upgrade_checkpoint(self, checkpoint: dict) -> dict:
        """The trained model's own renames (its ``upgrade_state_dict``, if it has one), applied to its
        weights in ``state_dict`` and to its EMA weights.

        First, a checkpoint of a model trained on other data than the dataset now configured is
        refused (:meth:`resumed_data_changes`): ``vidtwin train --resume`` hands the checkpoint to
        this method before it compares any weight, so the message says what changed in the data
        rather than which weight changed shape, and nothing in the run folder has changed yet.
        """
        entry = checkpoint.get(self.checkpoint_key)
        changes = self.resumed_data_changes(entry) if isinstance(entry, Mapping) else []
        if changes:
            raise ConfigError(f"the checkpoint to resume was trained on other data than the latent dataset "
                              f"{self.dataset_root}: {'; '.join(changes)}; nothing was changed. Resume on the dataset "
                              "the run was trained on, or start a new run (another --name) on this one")
        upgrade = getattr(self.trained_model, "upgrade_state_dict", None)
        if upgrade is not None:
            if "state_dict" in checkpoint:
                upgrade(checkpoint["state_dict"], f"{self.model_attribute}.")
            if EMA_STATE_KEY in checkpoint:
                upgrade(checkpoint[EMA_STATE_KEY])
        return super().upgrade_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)  # counters, EMA
        state = checkpoint.get(TRAINING_STATE_KEY) or {}
        self.noise_seed = state.get("noise_seed", self.noise_seed)


__all__ = ["AutoencoderDecoder", "LatentModelModule", "autoencoder_model_config", "checked_autoencoder",
           "dataset_fingerprint", "dataset_latent_shapes", "dataset_model_config", "learning_rate_factor"]
