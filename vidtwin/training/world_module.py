"""Training the world model with ``vidtwin train``: :class:`WorldLightningModule`.

    vidtwin train --base world/tiny_digits --name digits_world

The module reads the token dataset's manifest (``vidtwin encode-dataset --actions-column``)
for the token grids, the FSQ levels and the action vocabulary, builds a
:class:`~vidtwin.generation.world.WorldModel` of ``context_clips`` = K, and trains it with the
MaskGIT loss on windows of K + 1 consecutive clips of one video
(``LatentDataModule(sequence_length=K + 1, tokens=True)``; ``start_window`` clips with that set),
with AdamW, a linear warmup, optional gradient clipping and an EMA of the weights (:class:`~vidtwin.training.latent_module.LatentModelModule`).

Checkpoints hold the model's weights (``world.*``), the EMA weights under ``ema_state_dict``, and
under :data:`~vidtwin.generation.world.WORLD_CHECKPOINT_KEY` its config (with the action
vocabulary) and the autoencoder it was trained with, so that ``vidtwin play RUN_DIR`` needs
nothing else. Every ``lightning.callbacks.samples.params.every_n_steps`` updates, the sample
logger shows real windows next to rollouts from their first clip under the same actions, decoded
by that autoencoder (with the EMA weights). Resume is exact at an epoch boundary: each update's
context length and masks come from a generator seeded with the run's seed and the update number.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..config import ConfigError
from ..generation.config import WorldModelConfig
from ..generation.world import WorldModel
from ..generation.world import WORLD_CHECKPOINT_KEY
from ..hints import Verbatim, command
from ..latents.dataset import LatentDataset
from .latent_module import LatentModelModule, autoencoder_model_config, checked_autoencoder, dataset_model_config

logger = logging.getLogger(__name__)

NO_TOKENS = ("holds Gaussian (kl) latents, which have no tokens; the world model needs an FSQ autoencoder "
             f"(regularizer: fsq, e.g. `{command('train', '--base', 'tiny_digits_fsq')}`) and its "
             f"`{command('encode-dataset')}` output")


def token_dataset_settings(dataset: str) -> dict:
    """``token_shapes``, ``structure_levels``, ``dynamics_levels`` and ``actions`` of a token dataset
    with actions, for :class:`~vidtwin.generation.config.WorldModelConfig`; a user error otherwise."""
    data = LatentDataset(dataset)
    if data.codebook is None:
        raise ConfigError(f"the latent dataset {dataset} {NO_TOKENS}")
    actions = getattr(data, "actions", None)
    if not actions:
        raise ConfigError(f"the latent dataset {dataset} has no actions; encode it with "
                          f"`{command('encode-dataset', Verbatim('...'), '--actions-column', Verbatim('COLUMN'))}`")
    shapes = dataset_model_config(data).token_shapes()
    return {"token_shapes": {name: list(shape) for name, shape in shapes.items()},
            "structure_levels": list(data.codebook["structure"]), "dynamics_levels": list(data.codebook["dynamics"]),
            "actions": list(actions)}


class WorldLightningModule(LatentModelModule):
    """Trains a :class:`~vidtwin.generation.world.WorldModel` on a token dataset with actions.

    Args:
        dataset: the token dataset folder (the data section's ``root``); its manifest gives the
            token grids, the FSQ levels and the action vocabulary.
        world: ``size`` (a preset of ``WORLD_SIZES``, default ``tiny``) and any other
            :class:`~vidtwin.generation.config.WorldModelConfig` field except those the dataset
            gives; the data module's ``sequence_length`` must be ``context_clips`` (K) + 1, or
            ``start_window`` when that is set.
        autoencoder: ``{"config": YAML, "ckpt": checkpoint}`` of the FSQ autoencoder that encoded
            the dataset: decodes the sample videos and is recorded for ``vidtwin play``; None: no videos.
            Its weights must be the ones that encoded the dataset (the manifest's weights
            fingerprint, which the world model records either way).
        allow_other_weights: accept an autoencoder with other weights than the dataset's.
        learning_rate, weight_decay, betas: AdamW's; warmup_steps: linear warmup from 0.
        min_learning_rate: after the warmup, a half cosine from learning_rate down to this at the
            run's last update; None: learning_rate throughout.
        grad_clip: max global gradient norm, or None.
        ema_decay: EMA of the weights (e.g. 0.999), used for samples and rollouts; None: off.
        sample_temperature, sample_top_k: of the rollouts in the sample videos.
        seed: of each update's context length and masks; None: the run's seed (``vidtwin train --seed``).
    """

    model_attribute = "world"
    checkpoint_key = WORLD_CHECKPOINT_KEY

    def __init__(self, dataset: str, world: Optional[dict] = None, autoencoder: Optional[dict] = None,
                 learning_rate: float = 1e-3, weight_decay: float = 0.01, betas: tuple = (0.9, 0.95),
                 warmup_steps: int = 0, grad_clip: Optional[float] = 1.0, ema_decay: Optional[float] = 0.999,
                 sample_temperature: float = 1.0, sample_top_k: Optional[int] = None, seed: Optional[int] = None,
                 min_learning_rate: Optional[float] = None, allow_other_weights: bool = False):
        super().__init__()
        settings = dict(world or {})
        size = settings.pop("size", "tiny")
        found = token_dataset_settings(dataset)
        for name in found:
            if name in settings:
                raise ConfigError(f"model.params.world.{name} comes from the latent dataset; remove it")
        if autoencoder is not None and autoencoder_model_config(autoencoder).codebook_sizes is None:
            raise ConfigError(f"the autoencoder {autoencoder.get('ckpt')} {NO_TOKENS}")
        autoencoder, autoencoder_model = checked_autoencoder(autoencoder, LatentDataset(dataset), allow_other_weights)
        self.world = WorldModel(WorldModelConfig.from_preset(size, **found, **settings))
        self.world.autoencoder_files = autoencoder
        self.setup_training(learning_rate, weight_decay, betas, warmup_steps, grad_clip, ema_decay, seed, autoencoder,
                            min_learning_rate, autoencoder_model)
        self.dataset_root = str(dataset)
        self.sample_temperature, self.sample_top_k = float(sample_temperature), sample_top_k

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.check_datamodule(getattr(self.trainer, "datamodule", None))  # for runs started from Python

    def check_datamodule(self, datamodule: Any) -> None:
        length = getattr(datamodule, "sequence_length", None)
        config = self.world.config
        window = config.training_window
        if length is not None and length != window:
            needs = (f"start_window {window}" if config.start_window else f"context_clips {config.context_clips}")
            raise ConfigError(f"data.params.sequence_length is {length}, but the world model's {needs} needs "
                              f"windows of {window} clips; set sequence_length: {window}")

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.world.training_loss(batch, generator=self.update_random())
        self.stop_on_nonfinite_loss(loss, "the world model's loss")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["actions"]))
        return loss

    # ------------------------------------------------------------------ what the run shows
    @torch.no_grad()
    def training_samples(self, batch: Any, max_samples: int) -> Optional[Mapping[str, torch.Tensor]]:
        """Real windows and rollouts from their first clip under the same actions, decoded; each
        ``(b, 3, clips * T, H, W)`` in [-1, 1]."""
        if self._decoder is None:
            return None
        from ..models import VidTwinTokens

        count = min(max_samples, len(batch["actions"]))
        real = {name: batch[name][:count] for name in ("structure", "dynamics_x", "dynamics_y")}  # (b, W, ...)
        was_training = self.world.training
        self.world.eval()
        with self.ema_weights():
            predicted = self.world.rollout({name: value[:, 0] for name, value in real.items()}, batch["actions"][:count, 1:],
                                           seed=0, temperature=self.sample_temperature, top_k=self.sample_top_k)
        self.world.train(was_training)
        predicted = {name: torch.cat([real[name][:, :1], value], dim=1) for name, value in predicted.items()}  # (b, W, ...)
        autoencoder = self._decoder.get(self.device)
        videos = {}
        for label, tokens in (("real", real), ("rollout", predicted)):
            clips = tokens["structure"].shape[1]
            flat = VidTwinTokens(*(tokens[name].flatten(0, 1) for name in ("structure", "dynamics_x", "dynamics_y")))  # (b * n, ...)
            video = autoencoder.decode(autoencoder.detokenize(flat)).clamp(-1, 1)  # (b * n, 3, T, H, W)
            video = video.reshape(count, clips, *video.shape[1:]).permute(0, 2, 1, 3, 4, 5)  # (b, 3, n, T, H, W)
            videos[label] = video.flatten(2, 3)  # (b, 3, n * T, H, W)
        return videos

    def summary_commands(self, run_dir: Path, config_path: Path, checkpoint: Path, datamodule: Any) -> dict[str, str]:
        """A ready ``vidtwin play`` command: a rollout from a video of the run's data under six actions."""
        dataset = getattr(datamodule, "dataset", None)
        # The dataset records videos as its input named them (relative to a meta CSV's folder, for one).
        videos = getattr(dataset, "videos", None) or []
        start = next((video for video in videos if Path(video).is_file()), Verbatim("START.mp4"))
        return {"play": command("play", run_dir, "--start", start, "--actions", "RRUULD",
                                "--output", run_dir / "rollout.mp4")}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # counters, noise seed, EMA weights
        checkpoint[WORLD_CHECKPOINT_KEY] = {"config": self.world.config.to_dict(), "autoencoder": self.autoencoder_files}


__all__ = ["WorldLightningModule", "token_dataset_settings"]
