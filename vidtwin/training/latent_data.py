"""Lightning data module over a latent dataset (``inference.py encode-dataset``), for the generator.

    data:
      target: vidtwin.training.LatentDataModule
      params: {root: data/moving_digits_latents, batch_size: 64, num_workers: 2}

Batches are :func:`~vidtwin.latents.collate_latents` dicts: ``latents`` (a ``VidTwinLatents`` of
float32 posterior means), ``label`` ``(B,)`` int64 when the dataset has labels, and where each clip
came from. The order is a seeded shuffle per epoch (``seed + epoch``, as ``DistributedSampler``
draws it), the same on every run, so a resume at an epoch boundary sees the batches that an
uninterrupted run sees; under DDP each process takes its share of that order.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler

from ..latents.dataset import LatentDataset, collate_latents


class LatentDataModule(pl.LightningDataModule):
    """Training batches of a latent dataset of Gaussian (KL) latents.

    Args:
        root: the dataset folder written by ``encode-dataset``; opened here, so that a missing or
            unfinished dataset stops the run before any model is built.
        batch_size: clips per batch and process.
        num_workers: DataLoader worker processes.
        seed: of the shuffle (each epoch adds its number).
        drop_last: leave out a last, smaller batch of an epoch.
    """

    def __init__(self, root: str, batch_size: int = 64, num_workers: int = 0, seed: int = 0, drop_last: bool = True):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.root = str(root)
        self.dataset = LatentDataset(self.root)
        if self.dataset.codebook is not None:
            raise ValueError(f"{self.root} holds FSQ tokens; the flow-matching generator trains on Gaussian (kl) latents")
        if len(self.dataset) == 0:
            raise ValueError(f"the latent dataset {self.root} holds no clips")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.drop_last = bool(drop_last) and len(self.dataset) >= self.batch_size

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        # DistributedSampler also with one process: its order depends on seed + epoch alone.
        sampler = DistributedSampler(self.dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                                     drop_last=False)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate_latents, drop_last=self.drop_last, persistent_workers=self.num_workers > 0)


__all__ = ["LatentDataModule"]
