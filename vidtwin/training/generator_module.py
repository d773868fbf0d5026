"""Training the latent generator with ``vidtwin train``: :class:`GeneratorLightningModule`.

    vidtwin train --base generator/tiny_digits --name digits_gen

The module reads the latent dataset's shapes and classes to build a
:class:`~vidtwin.generation.LatentGenerator`, fits the per-channel latent statistics in one
streaming pass before the first update (or loads them from a JSON file), and trains with the
flow-matching loss, AdamW with a linear warmup, optional gradient clipping, and an EMA of the
weights. Every ``lightning.callbacks.samples.params.every_n_steps`` updates the sample logger shows
generated clips, one row per class, decoded by the autoencoder that ``autoencoder`` names (with
the EMA weights); without an autoencoder there are no sample videos.

Checkpoints hold, besides Lightning's state: the generator's weights (``generator.*``, with the
statistics as buffers), the EMA weights under ``ema_state_dict``, and under
:data:`GENERATOR_CHECKPOINT_KEY` the generator config, the autoencoder it was trained with (and the
weights fingerprint of its training data) and the dataset's label table, so that
``vidtwin generate --generator RUN_DIR`` needs nothing else and a resume on relabelled or
re-encoded data is refused, saying what changed.

Resume is exact at an epoch boundary: the noise, times and dropped classes of each update come
from a generator seeded with the run's seed and the update number, and the data order depends on
the seed and the epoch alone (:class:`~vidtwin.training.latent_data.LatentDataModule`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..generation import GeneratorConfig, LatentGenerator, LatentNormalization
from ..generation.files import CHECKPOINT_KEY
from ..hints import command
from ..latents.dataset import LatentDataset, collate_latents
from .contract import TRAINING_STATE_KEY
from .latent_module import LatentModelModule, checked_autoencoder, dataset_latent_shapes

logger = logging.getLogger(__name__)

#: Checkpoint entry: {"config": GeneratorConfig dict, "autoencoder": the record of
#: vidtwin.pretrained.autoencoder_record (None in older files), "labels": label_table(...) or None},
#: which vidtwin.generation.files reads back; a resume compares "labels" with the dataset's.
GENERATOR_CHECKPOINT_KEY = CHECKPOINT_KEY
NORMALIZATION_CHOICES = ("fit", "none")


def read_normalization(path: str) -> LatentNormalization:
    """Statistics from a JSON file: ``LatentNormalization.to_dict()``, or a generator's ``config.json``;
    refused when a std is not a finite number >= MIN_STD or a mean is not finite."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.params.normalization: cannot read {path} ({error}); give fit, none or a JSON "
                          "file of mean and std lists") from None
    if isinstance(values, dict) and isinstance(values.get("generator"), dict):
        values = values["generator"].get("normalization") or {}
    stats = LatentNormalization.from_dict(values)
    stats.check(f"model.params.normalization {path}")
    return stats


def label_table(labels) -> Optional[dict]:
    """What a generator's class labels mean, as a dataset's manifest records them (a
    :class:`~vidtwin.latents.labels.ClassLabels`): where the names came from, the names in label
    order, and per class a digest of the videos it holds. A resume compares it with the dataset's."""
    if labels is None:
        return None
    members: dict[int, list[str]] = {label: [] for label in range(len(labels.classes))}
    for video, label in labels.videos.items():
        members[label].append(video)
    digests = [hashlib.sha256("\n".join(sorted(members[label])).encode()).hexdigest()[:16] for label in members]
    return {"source": labels.source, "classes": list(labels.classes), "videos": digests}


def _names(names: list, limit: int = 6) -> str:
    return ", ".join(map(str, names[:limit])) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def label_changes(before: Optional[dict], now: Optional[dict]) -> list[str]:
    """What changed between two :func:`label_table` records, in words; [] when nothing did. An
    older checkpoint records only the names (``videos`` and ``source`` absent): those are compared."""
    if before is None or now is None:
        return [] if before is now else [f"it had {'no ' if before is None else ''}class labels then, "
                                         f"{'none' if now is None else len(now['classes'])} now"]
    old, new = list(before["classes"]), list(now["classes"])
    if old != new:
        if len(old) != len(new):
            change = f"{len(old)} classes then, {len(new)} now"
        elif set(old) == set(new):
            change = f"the same {len(new)} class names, numbered in another order"
        else:
            change = f"{len(new)} classes then and now, under other names"
        gone, added = [n for n in old if n not in new], [n for n in new if n not in old]
        details = ([f"gone: {_names(gone)}"] if gone else []) + ([f"new: {_names(added)}"] if added else [])
        return [f"its classes changed ({change}{'; ' if details else ''}{'; '.join(details)})"]
    changes = []
    if before.get("source") is not None and before["source"] != now["source"]:
        changes.append(f"its labels come from {now['source']!r} now, from {before['source']!r} then")
    if before.get("videos") is not None:
        moved = [name for name, a, b in zip(new, before["videos"], now["videos"]) if a != b]
        if moved:
            changes.append(f"the same {len(new)} class names now label other videos ({len(moved)} classes changed: "
                           f"{_names(moved)})")
    return changes


class GeneratorLightningModule(LatentModelModule):
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
            Its weights must be the ones that encoded the dataset (the manifest's weights
            fingerprint, which the generator records either way).
        allow_other_weights: accept an autoencoder with other weights than the dataset's.
        normalization: ``fit`` (one pass over the dataset before the first update), ``none``, or
            a JSON file of statistics.
        learning_rate, weight_decay, betas: AdamW's; warmup_steps: linear warmup from 0.
        min_learning_rate: after the warmup, a half cosine from learning_rate down to this at the
            run's last update; None: learning_rate throughout.
        grad_clip: max global gradient norm, or None.
        ema_decay: EMA of the weights (e.g. 0.999), used for samples and ``generate``; None: off.
        sample_classes: classes shown in the sample videos (evenly spread over all classes).
        sample_steps, sample_guidance: of the sampler for the sample videos.
        seed: of each update's noise; None: the run's seed (``vidtwin train --seed``).
    """

    model_attribute = "generator"
    checkpoint_key = GENERATOR_CHECKPOINT_KEY

    def __init__(self, dataset: str, generator: Optional[dict] = None, conditional: bool = True,
                 autoencoder: Optional[dict] = None, normalization: str = "fit", learning_rate: float = 3e-4,
                 weight_decay: float = 0.0, betas: tuple = (0.9, 0.999), warmup_steps: int = 0,
                 grad_clip: Optional[float] = 1.0, ema_decay: Optional[float] = 0.999, sample_classes: int = 8,
                 sample_steps: int = 25, sample_guidance: float = 2.0, seed: Optional[int] = None,
                 min_learning_rate: Optional[float] = None, allow_other_weights: bool = False):
        super().__init__()
        data = LatentDataset(dataset)
        shapes = dataset_latent_shapes(data)
        autoencoder, autoencoder_model = checked_autoencoder(autoencoder, data, allow_other_weights)
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
        # Statistics of a file are read and checked now, before the run folder is claimed.
        self.file_statistics = (read_normalization(str(normalization)) if normalization not in NORMALIZATION_CHOICES
                                else None)
        self.generator = LatentGenerator(config)
        self.generator.autoencoder_files = autoencoder
        self.setup_training(learning_rate, weight_decay, betas, warmup_steps, grad_clip, ema_decay, seed, autoencoder,
                            min_learning_rate, autoencoder_model)
        self.dataset_root = str(dataset)
        self.labels = label_table(data.labels) if conditional else None
        self.normalization_source = str(normalization)
        self.sample_classes, self.sample_steps, self.sample_guidance = int(sample_classes), int(sample_steps), float(sample_guidance)
        self.statistics_ready = normalization == "none"

    # ------------------------------------------------------------------ statistics
    def on_fit_start(self) -> None:
        super().on_fit_start()
        # After Lightning restored a resumed checkpoint: its statistics are kept, never refitted.
        if self.statistics_ready:
            return
        if self.normalization_source == "fit":
            loader = DataLoader(LatentDataset(self.dataset_root), batch_size=256, shuffle=False, collate_fn=collate_latents)
            # A constant channel is refused here, in one line naming it (LatentNormalization.check).
            stats = LatentNormalization.fit((batch["latents"] for batch in loader), progress=self.trainer.is_global_zero)
        else:
            stats = self.file_statistics
        self.generator.set_normalization(stats)
        self.statistics_ready = True  # buffers, not parameters: the EMA exports them as they are

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labels = batch.get("label") if self.generator.config.num_classes else None
        loss = self.generator.training_loss(batch["latents"], labels, generator=self.update_random())
        self.stop_on_nonfinite_loss(loss, "the flow-matching loss")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["video"]))
        return loss

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
        with self.ema_weights():
            latents = self.generator.sample(labels if self.generator.config.num_classes else None, num_samples=len(labels),
                                            steps=self.sample_steps, guidance=self.sample_guidance, seed=0, progress=False)
        self.generator.train(was_training)
        from ..models import VidTwinLatents

        video = self._decoder.get(self.device).decode(VidTwinLatents(**latents)).clamp(-1, 1)  # (C * n, 3, T, H, W)
        per_class = len(labels) // len(names)
        return {name: video[i * per_class:(i + 1) * per_class] for i, name in enumerate(names)}

    def summary_commands(self, run_dir: Path, config_path: Path, checkpoint: Path, datamodule: Any) -> dict[str, str]:
        """A ready ``vidtwin generate`` command: 8 clips of every class (or unconditional ones) from the run."""
        classes = "--all-classes" if self.generator.config.num_classes else "--unconditional"
        return {"generate": command("generate", "--generator", run_dir, classes, "--num", 8,
                                    "--output", run_dir / "generated")}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # counters, noise seed, EMA weights
        checkpoint[TRAINING_STATE_KEY].update(statistics_ready=self.statistics_ready)
        self.generator.config.normalization = self.generator.normalization.to_dict()
        checkpoint[GENERATOR_CHECKPOINT_KEY] = {"config": self.generator.config.to_dict(), "autoencoder": self.autoencoder_files,
                                                "labels": self.labels}

    def resumed_data_changes(self, entry: Mapping) -> list[str]:
        """The autoencoder weights (:class:`LatentModelModule`'s check) and the label table: names,
        their order and count, where they came from and which videos each holds."""
        before = entry.get("labels")
        config = entry.get("config") or {}
        if before is None and config.get("num_classes"):  # written before the table was recorded: its names
            names = config.get("class_names") or [str(label) for label in range(int(config["num_classes"]))]
            before = {"classes": names}
        now = self.labels
        if before is not None and now is not None and "videos" not in before:
            now = {"classes": now["classes"]}  # compare what the older checkpoint records
        return super().resumed_data_changes(entry) + label_changes(before, now)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(TRAINING_STATE_KEY) or {}
        self.statistics_ready = bool(state.get("statistics_ready", True))  # the buffers come with the weights


__all__ = ["GeneratorLightningModule", "GENERATOR_CHECKPOINT_KEY", "dataset_latent_shapes", "read_normalization"]
