"""Per-channel mean and std of a latent dataset, for diffusion models (``vidtwin latent-stats``).

    from vidtwin.latents import LatentDataset
    from vidtwin.latents.stats import compute_latent_statistics
    stats = compute_latent_statistics(LatentDataset("latents/"))
    stats["mean"]["structure"]            # d_S floats; also dynamics_x, dynamics_y
    stats["packed"]["mean"]               # C floats: per channel of the packed (B, C, N) latent

One pass over the dataset in clip batches, accumulated in float64 by merging each batch's count,
mean and sum of squared deviations (Chan et al.), so memory does not grow with the dataset and no
large sum loses precision. A pass reads latents only, so it runs at the speed of reading the
shards and needs no resume. FSQ datasets are measured on their codes (the values ``decode`` takes).

The file (:func:`statistics_to_json`) holds ``mean`` and ``std`` per latent at the top level, so it
is what :class:`vidtwin.generation.LatentNormalization` reads (``LatentNormalization.from_dict``;
``model.params.normalization: stats.json`` in a generator config), and the per-channel numbers of
the packed layout under ``packed``, which ``vidtwin convert --format diffusers --latent-stats``
writes into a diffusers config as ``latents_mean`` / ``latents_std``. Stds are population stds.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Dict, Iterable, Optional

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..models.config import LATENT_NAMES, VidTwinConfig

logger = logging.getLogger(__name__)

STATS_FORMAT = "vidtwin-latent-stats"
STATS_VERSION = 1


class LatentStatisticsError(ValueError, UserError):
    """Statistics that cannot be computed or read: an empty dataset, a file of another kind."""


class ChannelMoments:
    """Count, mean and sum of squared deviations per channel, in float64, merged batch by batch."""

    def __init__(self, channels: int = 0):
        self.count = torch.zeros(channels, dtype=torch.float64)
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, values: torch.Tensor) -> None:
        """values: ``(B, C, ...)``, reduced over every axis but the channels."""
        channels = values.shape[1]
        flat = values.detach().to(torch.float64).transpose(0, 1).reshape(channels, -1)  # (C, B * ...)
        if flat.shape[1] == 0:
            return
        batch = ChannelMoments()
        batch.count = torch.full((channels,), float(flat.shape[1]), dtype=torch.float64)
        batch.mean = flat.mean(dim=1)
        batch.m2 = ((flat - batch.mean[:, None]) ** 2).sum(dim=1)
        self.merge(batch)

    def merge(self, other: "ChannelMoments") -> None:
        if self.count.numel() == 0:
            self.count, self.mean, self.m2 = other.count.clone(), other.mean.clone(), other.m2.clone()
            return
        if other.count.numel() != self.count.numel():
            raise LatentStatisticsError(f"latents with {other.count.numel()} channels where earlier ones had {self.count.numel()}")
        total = self.count + other.count
        delta = other.mean - self.mean
        share = torch.where(total > 0, other.count / total.clamp_min(1), torch.zeros_like(total))
        self.m2 = self.m2 + other.m2 + delta ** 2 * self.count * share
        self.mean = self.mean + delta * share
        self.count = total

    def channel(self, index: int) -> "ChannelMoments":
        one = ChannelMoments()
        one.count, one.mean, one.m2 = (t[index:index + 1].clone() for t in (self.count, self.mean, self.m2))
        return one

    def std(self) -> torch.Tensor:
        return (self.m2 / self.count.clamp_min(1)).sqrt()  # population std


def packed_moments(moments: Dict[str, ChannelMoments]) -> ChannelMoments:
    """The moments of each packed channel: channel ``c`` of every latent that has one
    (:func:`vidtwin.diffusers.layout.packed_channel_sources`), merged."""
    channels = max(m.count.numel() for m in moments.values())
    packed = ChannelMoments()
    parts = []
    for c in range(channels):
        merged = ChannelMoments()
        for name in LATENT_NAMES:
            if c < moments[name].count.numel():
                merged.merge(moments[name].channel(c))
        parts.append(merged)
    packed.count, packed.mean, packed.m2 = (torch.cat([getattr(p, f) for p in parts]) for f in ("count", "mean", "m2"))
    return packed


def accumulate(batches: Iterable, progress: Optional[tqdm] = None) -> Dict[str, ChannelMoments]:
    """Moments of each latent over batches of ``VidTwinLatents`` (or mappings of the three tensors)."""
    moments = {name: ChannelMoments() for name in LATENT_NAMES}
    for latents in batches:
        for name in LATENT_NAMES:
            values = latents[name] if isinstance(latents, dict) else getattr(latents, name)
            moments[name].update(values)
        if progress is not None:
            progress.update(1)
    return moments


def _iter_latents(loader) -> Iterable:
    for batch in loader:
        if "latents" not in batch:
            raise LatentStatisticsError("the dataset's tokens have no codebook levels to turn them into codes")
        yield batch["latents"]


def compute_latent_statistics(dataset, batch_size: int = 64, num_workers: int = 0, progress: bool = False) -> dict:
    """The statistics of every clip of a :class:`~vidtwin.latents.LatentDataset` (see the module
    docstring), as the dict that :func:`statistics_to_json` writes."""
    from torch.utils.data import DataLoader

    from .dataset import collate_latents

    if dataset.sequence_length is not None:
        raise LatentStatisticsError("compute statistics over single clips: open the dataset without sequence_length")
    if len(dataset) == 0:
        raise LatentStatisticsError(f"the latent dataset {dataset.root} holds no clips")
    if batch_size < 1:
        raise LatentStatisticsError(f"batch size must be >= 1, got {batch_size}")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=partial(collate_latents, codebook=dataset.codebook))
    bar = tqdm(total=len(loader), desc="latent statistics", unit="batch", disable=not progress)
    try:
        moments = accumulate(_iter_latents(loader), bar)
    finally:
        bar.close()
    manifest = dataset.manifest.get("identity", {})
    return statistics_dict(moments, clips=len(dataset), source=str(dataset.root), model_config=dataset.config,
                           weights_fingerprint=manifest.get("weights_fingerprint"))


def statistics_dict(moments: Dict[str, ChannelMoments], clips: int, source: str, model_config: Optional[dict],
                    weights_fingerprint: Optional[str]) -> dict:
    """The file's contents from the moments of the three latents."""
    packed = packed_moments(moments)
    stats = {
        "format": STATS_FORMAT, "format_version": STATS_VERSION,
        "dataset": source, "clips": clips,
        "weights_fingerprint": weights_fingerprint, "model_config": model_config,
        "mean": {name: moments[name].mean.tolist() for name in LATENT_NAMES},
        "std": {name: moments[name].std().tolist() for name in LATENT_NAMES},
        "values_per_channel": {name: int(moments[name].count[0]) for name in LATENT_NAMES},
        "packed": {"mean": packed.mean.tolist(), "std": packed.std().tolist(),
                   "channels": [[name for name in LATENT_NAMES if c < moments[name].count.numel()]
                                for c in range(packed.count.numel())]},
    }
    flat = [(name, c, s) for name in LATENT_NAMES for c, s in enumerate(stats["std"][name]) if not s > 1e-6]
    if flat:
        logger.warning("%d latent channels barely vary (%s channel %d: std %g); a normalization cannot scale them to std 1",
                       len(flat), *flat[0])
    return stats


def statistics_to_json(stats: dict) -> str:
    return json.dumps(stats, indent=2) + "\n"


def read_latent_statistics(path) -> dict:
    """A file written by ``vidtwin latent-stats``, checked to be one, in a version this code reads."""
    try:
        values = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as error:
        raise LatentStatisticsError(f"cannot read the latent statistics {path}: {error}") from None
    if not isinstance(values, dict) or values.get("format") != STATS_FORMAT:
        raise LatentStatisticsError(f"{path} is not a file of `vidtwin latent-stats` (its format is "
                                    f"{values.get('format') if isinstance(values, dict) else None!r})")
    version = values.get("format_version")
    if not isinstance(version, int) or version > STATS_VERSION:
        raise LatentStatisticsError(f"{path} has format_version {version!r}; this code reads up to {STATS_VERSION}")
    return values


def check_statistics_fit(stats: dict, config: VidTwinConfig, fingerprint: Optional[str], where: str) -> None:
    """Refuse statistics of latents of another shape, or, where both are known, of other weights."""
    shapes = config.latent_shapes()
    for name in LATENT_NAMES:
        for kind in ("mean", "std"):
            found = len(stats[kind][name])
            if found != shapes[name][0]:
                raise LatentStatisticsError(f"{where}: {name} {kind} has {found} channels; this model's {name} has {shapes[name][0]}")
    recorded = stats.get("weights_fingerprint")
    if recorded and fingerprint and recorded != fingerprint:
        raise LatentStatisticsError(f"{where} was computed on latents of other weights (fingerprint {recorded}, this "
                                    f"model's {fingerprint}): compute them on a dataset this model encoded")


__all__ = ["STATS_FORMAT", "STATS_VERSION", "ChannelMoments", "LatentStatisticsError", "accumulate",
           "check_statistics_fit", "compute_latent_statistics", "packed_moments", "read_latent_statistics",
           "statistics_dict", "statistics_to_json"]
