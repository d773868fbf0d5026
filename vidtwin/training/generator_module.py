"""Training the latent generator with ``train.py``: :class:`GeneratorLightningModule`.

    python train.py --base configs/generator/tiny_digits.yaml --name digits_gen

The module reads the latent dataset's shapes and classes to build a
:class:`~vidtwin.generation.LatentGenerator`, fits the per-channel latent statistics in one
streaming pass before the first update (or loads them from a JSON file), and trains with the
flow-matching loss, AdamW with a linear warmup, optional gradient clipping, and an EMA of the
weights. Every ``lightning.callbacks.samples.params.every_n_steps`` updates the sample logger shows
generated clips, one row per class, decoded by the autoencoder that ``autoencoder`` names (with
the EMA weights); without an autoencoder there are no sample videos.

Checkpoints hold, besides Lightning's state: the generator's weights (``generator.*``, with the
statistics as buffers), the EMA weights under ``ema_state_dict``, and under
:data:`GENERATOR_CHECKPOINT_KEY` the generator config and the autoencoder it was trained with, so
that ``inference.py generate --generator RUN_DIR`` needs nothing else.

Resume is exact at an epoch boundary: the noise, times and dropped classes of each update come
from a generator seeded with the run's seed and the update number, and the data order depends on
the seed and the epoch alone (:class:`~vidtwin.training.latent_data.LatentDataModule`).
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..generation import GeneratorConfig, LatentGenerator, LatentNormalization
from ..generation.files import CHECKPOINT_KEY
from ..latents.dataset import LatentDataset, collate_latents
from ..models.config import VidTwinConfig
from .contract import TRAINING_STATE_KEY, TrainingModule
from .ema import EMA
from .module import EMA_STATE_KEY, NonFiniteLossError

logger = logging.getLogger(__name__)

#: Checkpoint entry: {"config": GeneratorConfig dict, "autoencoder": {"config", "ckpt"} or None},
#: which vidtwin.generation.files reads back.
GENERATOR_CHECKPOINT_KEY = CHECKPOINT_KEY
NORMALIZATION_CHOICES = ("fit", "none")


def dataset_latent_shapes(dataset: LatentDataset) -> dict:
    """Per-clip latent shapes of a latent dataset, from the model config its manifest records."""
    try:
        return {name: list(shape) for name, shape in VidTwinConfig.from_dict(dataset.config).latent_shapes().items()}
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the model config recorded in {dataset.root} is not readable: {error}") from None


def autoencoder_latent_shapes(autoencoder: Mapping) -> dict:
    """Per-clip latent shapes of the autoencoder that ``{"config": ..., "ckpt": ...}`` names."""
    from ..checkpoint import read_pretrained_config_dict
    from ..config import autoencoder_config_from

    config, ckpt = autoencoder.get("config"), autoencoder.get("ckpt")
    if config is None and ckpt is not None and Path(str(ckpt)).is_dir():
        model_config = VidTwinConfig.from_dict(read_pretrained_config_dict(ckpt))
    elif config is not None:
        if not Path(str(config)).is_file():
            raise ConfigError(f"the autoencoder config {config} does not exist; train the autoencoder first "
                              "or point model.params.autoencoder.config at its run's config.yaml")
        model_config = autoencoder_config_from(str(config))
    else:
        raise ConfigError("model.params.autoencoder needs config (a YAML) and ckpt, or ckpt as a save_pretrained folder")
    return {name: list(shape) for name, shape in model_config.latent_shapes().items()}


def read_normalization(path: str) -> LatentNormalization:
    """Statistics from a JSON file: ``LatentNormalization.to_dict()``, or a generator's ``config.json``."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.params.normalization: cannot read {path} ({error}); give fit, none or a JSON "
                          "file of mean and std lists") from None
    if isinstance(values, dict) and isinstance(values.get("generator"), dict):
        values = values["generator"].get("normalization") or {}
    return LatentNormalization.from_dict(values)


class _Decoder:
    """The autoencoder that decodes sample latents: loaded on first use, never part of the
    module's state dict or optimizer (a plain object, not an ``nn.Module`` attribute)."""

    def __init__(self, config: Optional[str], ckpt: Optional[str]):
        self.config, self.ckpt = config, ckpt
        self.model = None

    def get(self, device: torch.device):
        if self.model is None:
            from ..checkpoint import load_model

            self.model = load_model(self.config, self.ckpt, device=device)
            logger.info("sample videos are decoded by %s", self.ckpt)
        return self.model.to(device)


class GeneratorLightningModule(TrainingModule):
    """Trains a :class:`~vidtwin.generation.LatentGenerator` on a latent dataset.

    Args:
        dataset: the latent dataset folder (the data section's ``root``); its manifest gives the
            latent shapes and, with ``conditional``, the classes.
        generator: ``size`` (a preset of ``GENERATOR_SIZES``, default ``tiny``) and any other
            :class:`~vidtwin.generation.GeneratorConfig` field except the shapes, classes and
            statistics, which come from the dataset.
        conditional: train class-conditionally (the dataset needs labels).
        autoencoder: ``{"config": YAML, "ckpt": checkpoint}`` of the autoencoder that encoded the
            dataset: decodes the sample videos and is recorded for ``generate``; None: no videos.
        normalization: ``fit`` (one pass over the dataset before the first update), ``none``, or
            a JSON file of statistics.
        learning_rate, weight_decay, betas: AdamW's; warmup_steps: linear warmup from 0.
        grad_clip: max global gradient norm, or None.
        ema_decay: EMA of the weights (e.g. 0.999), used for samples and ``generate``; None: off.
        sample_classes: classes shown in the sample videos (evenly spread over all classes).
        sample_steps, sample_guidance: of the sampler for the sample videos.
        seed: of each update's noise; None: the run's seed (``train.py --seed``).
    """

    def __init__(self, dataset: str, generator: Optional[dict] = None, conditional: bool = True,
                 autoencoder: Optional[dict] = None, normalization: str = "fit", learning_rate: float = 3e-4,
                 weight_decay: float = 0.0, betas: tuple = (0.9, 0.999), warmup_steps: int = 0,
                 grad_clip: Optional[float] = 1.0, ema_decay: Optional[float] = 0.999, sample_classes: int = 8,
                 sample_steps: int = 25, sample_guidance: float = 2.0, seed: Optional[int] = None):
        super().__init__()
        data = LatentDataset(dataset)
        shapes = dataset_latent_shapes(data)
        if autoencoder is not None:
            autoencoder = {"config": autoencoder.get("config"), "ckpt": autoencoder.get("ckpt")}
            found = autoencoder_latent_shapes(autoencoder)
            if found != shapes:
                raise ConfigError(f"the autoencoder {autoencoder['ckpt']} makes latents of shapes {found}, but the dataset "
                                  f"{dataset} holds {shapes}; name the autoencoder that encoded it")
        if conditional and data.classes is None:
            raise ConfigError(f"the latent dataset {dataset} has no class labels; encode it with --label-column or "
                              "--labels-from-folders, or train unconditionally with model.params.conditional=false")
        settings = dict(generator or {})
        size = settings.pop("size", "tiny")
        for name in ("latent_shapes", "num_classes", "class_names", "normalization"):
            if name in settings:
                raise ConfigError(f"model.params.generator.{name} comes from the latent dataset; remove it")
        classes = data.classes if conditional else None
        config = GeneratorConfig.from_preset(size, latent_shapes=shapes, num_classes=len(classes or []),
                                             class_names=classes, **settings)
        if normalization not in NORMALIZATION_CHOICES and not Path(str(normalization)).is_file():
            raise ConfigError(f"model.params.normalization must be fit, none or an existing JSON file, got {normalization!r}")
        self.generator = LatentGenerator(config)
        self.dataset_root = str(dataset)
        self.autoencoder_files = autoencoder
        self.normalization_source = str(normalization)
        self.learning_rate, self.weight_decay, self.betas = float(learning_rate), float(weight_decay), tuple(betas)
        self.warmup_steps, self.grad_clip = int(warmup_steps), grad_clip
        self.ema = EMA(self.generator, ema_decay) if ema_decay is not None else None
        self.sample_classes, self.sample_steps, self.sample_guidance = int(sample_classes), int(sample_steps), float(sample_guidance)
        self.noise_seed = seed
        self.statistics_ready = normalization == "none"
        self._decoder = _Decoder(autoencoder["config"], autoencoder["ckpt"]) if autoencoder else None
        self._reset_ema_after_load = False

    # ------------------------------------------------------------------ statistics
    def on_fit_start(self) -> None:
        # After Lightning restored a resumed checkpoint: its statistics are kept, never refitted.
        if self.noise_seed is None:
            self.noise_seed = torch.initial_seed()  # train.py's --seed
        if self._reset_ema_after_load:
            self.ema = EMA(self.generator, self.ema.decay)
            self._reset_ema_after_load = False
        if self.statistics_ready:
            return
        if self.normalization_source == "fit":
            loader = DataLoader(LatentDataset(self.dataset_root), batch_size=256, shuffle=False, collate_fn=collate_latents)
            stats = LatentNormalization.fit((batch["latents"] for batch in loader), progress=self.trainer.is_global_zero)
        else:
            stats = read_normalization(self.normalization_source)
        self.generator.set_normalization(stats)
        self.statistics_ready = True  # buffers, not parameters: the EMA exports them as they are

    # ------------------------------------------------------------------ training
    def _update_random(self) -> torch.Generator:
        """The random source of this update: the same for an update number, whether resumed or not."""
        random = torch.Generator(device=self.device)
        rank = self.trainer.global_rank if self._trainer is not None else 0
        random.manual_seed((int(self.noise_seed or 0) * 1_000_003 + self.train_step * 1_009 + rank) % (2**63))
        return random

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labels = batch.get("label") if self.generator.config.num_classes else None
        loss = self.generator.training_loss(batch["latents"], labels, generator=self._update_random())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"the flow-matching loss is {loss.item()} at update {self.train_step}; "
                                     "lower model.params.learning_rate or set model.params.grad_clip, then resume")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["video"]))
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.generator.parameters(), lr=self.learning_rate, betas=self.betas,
                                      weight_decay=self.weight_decay)
        warmup = self.warmup_steps

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # The module's own setting: train.py refuses lightning.trainer.gradient_clip_val.
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=float(self.grad_clip), gradient_clip_algorithm="norm")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)  # counts the update
        if self.ema is not None:
            self.ema.update(self.generator)

    # ------------------------------------------------------------------ what the run shows
    def sample_labels(self, per_class: int) -> tuple[list[str], list[int]]:
        """(names, labels) of the sample videos: ``sample_classes`` classes evenly spread, ``per_class`` each."""
        config = self.generator.config
        if not config.num_classes:
            return ["samples"], [config.num_classes] * per_class
        count = max(1, min(self.sample_classes, config.num_classes))
        chosen = sorted({round(i * (config.num_classes - 1) / max(count - 1, 1)) for i in range(count)})
        names = [config.class_names[label] if config.class_names else str(label) for label in chosen]
        return names, [label for label in chosen for _ in range(per_class)]

    @torch.no_grad()
    def training_samples(self, batch: Any, max_samples: int) -> Optional[Mapping[str, torch.Tensor]]:
        """Generated clips decoded by the autoencoder, one named video per class (``max_samples`` each)."""
        if self._decoder is None:
            return None
        names, labels = self.sample_labels(max_samples)
        was_training = self.generator.training
        self.generator.eval()
        with self.ema.swapped_in(self.generator) if self.ema is not None else nullcontext():
            latents = self.generator.sample(labels if self.generator.config.num_classes else None, num_samples=len(labels),
                                            steps=self.sample_steps, guidance=self.sample_guidance, seed=0, progress=False)
        self.generator.train(was_training)
        from ..models import VidTwinLatents

        video = self._decoder.get(self.device).decode(VidTwinLatents(**latents)).clamp(-1, 1)  # (C * n, 3, T, H, W)
        per_class = len(labels) // len(names)
        return {name: video[i * per_class:(i + 1) * per_class] for i, name in enumerate(names)}

    def summary_commands(self, run_dir: Path, config_path: Path, checkpoint: Path, datamodule: Any) -> dict[str, str]:
        classes = "--all-classes" if self.generator.config.num_classes else "--unconditional"
        return {"generate": f"python inference.py generate --generator {run_dir} {classes} --num 8 --output {run_dir / 'generated'}"}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint[TRAINING_STATE_KEY]
        state.update(statistics_ready=self.statistics_ready, noise_seed=self.noise_seed)
        if self.ema is not None:
            if self.ema.is_swapped_in:
                raise RuntimeError("a checkpoint was requested while EMA weights were swapped in")
            checkpoint[EMA_STATE_KEY] = self.ema.export_state_dict(self.generator)
            state.update(ema_num_updates=self.ema.num_updates, ema_decay=self.ema.decay)
        self.generator.config.normalization = self.generator.normalization.to_dict()
        checkpoint[GENERATOR_CHECKPOINT_KEY] = {"config": self.generator.config.to_dict(), "autoencoder": self.autoencoder_files}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(TRAINING_STATE_KEY) or {}
        self.statistics_ready = bool(state.get("statistics_ready", True))  # the buffers come with the weights
        self.noise_seed = state.get("noise_seed", self.noise_seed)
        if self.ema is not None:
            self._reset_ema_after_load = not self.ema.load_from_checkpoint(
                checkpoint, EMA_STATE_KEY, state.get("ema_num_updates", 0))


__all__ = ["GeneratorLightningModule", "GENERATOR_CHECKPOINT_KEY", "dataset_latent_shapes", "read_normalization"]
