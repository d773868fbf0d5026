"""Per-latent, per-channel scaling of VidTwin latents for the generator.

Latent generators go wrong when a scale is applied in training but not at sampling. Here the
statistics live in the generator's config (so they travel with its checkpoint), and
:class:`~vidtwin.generation.LatentGenerator` is the one place that applies them: its training loss
normalizes the data, its sampler denormalizes what it generates.

    stats = LatentNormalization.fit(batch["latents"] for batch in loader)   # one streaming pass
    normalized = stats.normalize(latents)      # each channel of each latent: mean 0, std 1
    latents = stats.denormalize(normalized)    # back in the autoencoder's scale
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import UserError
from .packing import LATENT_NAMES, latent_dict

logger = logging.getLogger(__name__)

# The smallest std the statistics may hold. Normalizing divides by it, so a std below the data's
# true spread (0 in a hand-written file, or a channel constant on the fitted data but not on the
# data trained on) blows the targets up: a std of 0 trained a loss of 6e12.
MIN_STD = 1e-6


class NormalizationError(ValueError, UserError):
    """The latent statistics cannot be computed or do not fit the latents."""


@dataclass
class _RunningMoments:
    """Count, mean and sum of squared deviations per channel, merged batch by batch (Chan et al.)."""

    count: int = 0
    mean: Optional[torch.Tensor] = None  # (C,) float64
    m2: Optional[torch.Tensor] = None  # (C,) float64

    def update(self, values: torch.Tensor) -> None:
        """values: (B, C, ...) of any float dtype; reduced over every axis but the channels."""
        channels = values.shape[1]
        flat = values.detach().to(torch.float64).transpose(0, 1).reshape(channels, -1)  # (C, B * ...)
        count = flat.shape[1]
        if count == 0:
            return
        batch_mean = flat.mean(dim=1)
        batch_m2 = ((flat - batch_mean[:, None]) ** 2).sum(dim=1)
        if self.mean is None:
            self.count, self.mean, self.m2 = count, batch_mean, batch_m2
            return
        if self.mean.shape[0] != channels:
            raise NormalizationError(f"a batch has {channels} channels where earlier ones had {self.mean.shape[0]}")
        total = self.count + count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + batch_m2 + delta ** 2 * (self.count * count / total)
        self.count = total

    def std(self) -> torch.Tensor:
        return (self.m2 / self.count).sqrt()  # population std


@dataclass
class LatentNormalization:
    """Mean and std per channel of each latent: ``{"structure": [d_S floats], "dynamics_x": [d_D],
    "dynamics_y": [d_D]}`` in ``mean`` and ``std``. Plain lists, so they sit in a JSON config."""

    mean: Dict[str, List[float]] = field(default_factory=dict)
    std: Dict[str, List[float]] = field(default_factory=dict)

    @classmethod
    def identity(cls, latent_shapes: Dict[str, tuple]) -> "LatentNormalization":
        """Mean 0 and std 1 for every channel: no scaling."""
        return cls(mean={name: [0.0] * shape[0] for name, shape in latent_shapes.items()},
                   std={name: [1.0] * shape[0] for name, shape in latent_shapes.items()})

    @classmethod
    def fit(cls, batches: Iterable, progress: bool = False) -> "LatentNormalization":
        """Statistics of an iterable of latent batches in one pass, accumulated in float64.

        batches: each a mapping (or ``VidTwinLatents``) with ``structure`` ``(B, d_S, Q, h_S, w_S)``,
        ``dynamics_x`` ``(B, d_D, T, w_D)`` and ``dynamics_y`` ``(B, d_D, T, h_D)``: the posterior
        means of a latent dataset. The iterable is consumed once (a generator or a DataLoader works).
        """
        moments = {name: _RunningMoments() for name in LATENT_NAMES}
        # One iterator, made here: tqdm.auto calls iter() on what it wraps as well as iterating it,
        # which would start a DataLoader's workers twice.
        for batch in tqdm(iter(batches), desc="latent statistics", unit="batch", disable=not progress):
            for name, values in latent_dict(batch).items():
                if not values.is_floating_point():
                    raise NormalizationError(f"{name} holds {values.dtype} values; normalization is for continuous latents")
                moments[name].update(values)
        if any(m.count == 0 for m in moments.values()):
            raise NormalizationError("no latents to compute statistics from (the dataset is empty)")
        stats = cls(mean={name: m.mean.tolist() for name, m in moments.items()},
                    std={name: m.std().tolist() for name, m in moments.items()})
        stats.check("the latent statistics fitted on the data")
        logger.info("latent statistics from %d clips' worth of values: %s", moments["structure"].count, stats.summary())
        return stats

    def check(self, where: str = "the latent statistics") -> None:
        """Raise :class:`NormalizationError`, in one line naming the latent and channel, on a mean
        that is not finite or a std that is not a finite number >= :data:`MIN_STD`."""
        for name in LATENT_NAMES:
            for channel, (mean, std) in enumerate(zip(self.mean.get(name, []), self.std.get(name, []))):
                if not math.isfinite(mean):
                    raise NormalizationError(f"{where}: {name} channel {channel} has mean {mean}; every mean must be "
                                             "a finite number")
                if not (math.isfinite(std) and std >= MIN_STD):
                    raise NormalizationError(
                        f"{where}: {name} channel {channel} has std {std}; every std must be a finite number >= "
                        f"{MIN_STD:g} (a channel that does not vary cannot be scaled to std 1): fix the statistics, "
                        "or train without them (model.params.normalization: none)")

    def summary(self) -> str:
        return ", ".join(
            f"{name} mean {sum(self.mean[name]) / len(self.mean[name]):+.3g} std {sum(self.std[name]) / len(self.std[name]):.3g}"
            for name in LATENT_NAMES
        )

    def normalize(self, latents) -> Dict[str, torch.Tensor]:
        """Latents in the autoencoder's scale -> each channel with mean 0 and std 1 (over the data)."""
        return LatentScaler(self).normalize(latents)

    def denormalize(self, latents) -> Dict[str, torch.Tensor]:
        """The inverse of :meth:`normalize`: back to the autoencoder's scale, what ``decode`` takes."""
        return LatentScaler(self).denormalize(latents)

    def to_dict(self) -> dict:
        return {"mean": {k: list(v) for k, v in self.mean.items()}, "std": {k: list(v) for k, v in self.std.items()}}

    @classmethod
    def from_dict(cls, values: dict) -> "LatentNormalization":
        try:
            stats = cls(mean={k: [float(x) for x in values["mean"][k]] for k in LATENT_NAMES},
                        std={k: [float(x) for x in values["std"][k]] for k in LATENT_NAMES})
        except (KeyError, TypeError, ValueError) as error:
            raise NormalizationError(f"latent statistics need mean and std lists for {', '.join(LATENT_NAMES)}: {error}") from None
        return stats


class LatentScaler(nn.Module):
    """The statistics as buffers (``structure_mean``, ``structure_std``, ... float64, one value per
    channel), so that every state dict (a Lightning checkpoint too) carries them with the weights.

    ``normalize`` / ``denormalize`` return latents of the input's dtype.
    """

    def __init__(self, stats: LatentNormalization):
        super().__init__()
        for name in LATENT_NAMES:
            self.register_buffer(f"{name}_mean", torch.tensor(stats.mean[name], dtype=torch.float64))
            self.register_buffer(f"{name}_std", torch.tensor(stats.std[name], dtype=torch.float64))

    @property
    def stats(self) -> LatentNormalization:
        """The current statistics, as plain lists."""
        return LatentNormalization(mean={name: getattr(self, f"{name}_mean").tolist() for name in LATENT_NAMES},
                                   std={name: getattr(self, f"{name}_std").tolist() for name in LATENT_NAMES})

    def set(self, stats: LatentNormalization, where: str = "the latent statistics") -> None:
        """Use ``stats`` from now on; statistics that :meth:`LatentNormalization.check` refuses are
        refused here (``where`` names them in the message), before any buffer changes."""
        stats.check(where)
        for name in LATENT_NAMES:
            for kind, values in (("mean", stats.mean[name]), ("std", stats.std[name])):
                buffer = getattr(self, f"{name}_{kind}")
                if len(values) != buffer.numel():
                    raise NormalizationError(f"{name} has {buffer.numel()} channels but the new statistics have {len(values)}")
                buffer.copy_(torch.tensor(values, dtype=buffer.dtype))

    def _per_channel(self, name: str, kind: str, values: torch.Tensor) -> torch.Tensor:
        buffer = getattr(self, f"{name}_{kind}")
        if buffer.numel() != values.shape[1]:
            raise NormalizationError(f"{name} has {values.shape[1]} channels but its statistics have {buffer.numel()}")
        # In the latents' dtype: the statistics follow the data, they do not set the precision.
        return buffer.to(values.dtype).reshape((1, -1) + (1,) * (values.dim() - 2))  # (1, C, 1, ...)

    def normalize(self, latents) -> Dict[str, torch.Tensor]:
        """Latents in the autoencoder's scale -> each channel with mean 0 and std 1 (over the data)."""
        return {name: (values - self._per_channel(name, "mean", values)) / self._per_channel(name, "std", values).clamp_min(MIN_STD)
                for name, values in latent_dict(latents).items()}

    def denormalize(self, latents) -> Dict[str, torch.Tensor]:
        """The inverse of :meth:`normalize`: back to the autoencoder's scale, what ``decode`` takes."""
        return {name: values * self._per_channel(name, "std", values).clamp_min(MIN_STD) + self._per_channel(name, "mean", values)
                for name, values in latent_dict(latents).items()}


__all__ = ["LatentNormalization", "LatentScaler", "NormalizationError", "MIN_STD"]
