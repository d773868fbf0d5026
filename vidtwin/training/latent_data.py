"""Lightning data module over a latent dataset (``inference.py encode-dataset``), for the generators.

    data:
      target: vidtwin.training.LatentDataModule
      params: {root: data/moving_digits_latents, batch_size: 64, num_workers: 2}

Batches are :func:`~vidtwin.latents.collate_latents` dicts: ``latents`` (a ``VidTwinLatents`` of
float32 posterior means), ``label`` ``(B,)`` int64 when the dataset has labels, and where each clip
came from. A world model trains on windows of consecutive clips of FSQ tokens instead::

    params: {root: data/digit_game_tokens, batch_size: 16, sequence_length: 4, tokens: true}

whose batches are :func:`~vidtwin.latents.collate_latent_sequences` dicts: ``structure``
``(B, N, Q, h_S, w_S)``, ``dynamics_x`` ``(B, N, T, w_D)``, ``dynamics_y`` ``(B, N, T, h_D)`` int64
tokens and ``actions`` ``(B, N)`` int64 when the dataset has actions.

The order is a seeded shuffle per epoch (``seed + epoch``, as ``DistributedSampler`` draws it), the
same on every run, so a resume at an epoch boundary sees the batches that an uninterrupted run
sees; under DDP each process takes its share of that order.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler

from ..latents.dataset import LatentDataset, collate_latent_sequences, collate_latents


class LatentDataModule(pl.LightningDataModule):
    """Training batches of a latent dataset: clips of Gaussian (KL) latents, or windows of clips.

    Args:
        root: the dataset folder written by ``encode-dataset``; opened here, so that a missing or
            unfinished dataset stops the run before any model is built.
        batch_size: items (clips, or windows) per batch and process.
        num_workers: DataLoader worker processes.
        seed: of the shuffle (each epoch adds its number).
        drop_last: leave out a last, smaller batch of an epoch.
        sequence_length: give windows of this many consecutive clips of one video (see
            :class:`~vidtwin.latents.LatentDataset`), collated by ``collate_latent_sequences``;
            None (default): single clips, collated by ``collate_latents``.
        tokens: the dataset must hold FSQ tokens (a world model's data); False (default): it must
            hold Gaussian latents (the flow-matching generator's).
    """

    def __init__(self, root: str, batch_size: int = 64, num_workers: int = 0, seed: int = 0, drop_last: bool = True,
                 sequence_length: int | None = None, tokens: bool = False):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.root = str(root)
        self.dataset = LatentDataset(self.root, sequence_length=sequence_length)
        if tokens and self.dataset.codebook is None:
            raise ValueError(f"{self.root} holds Gaussian (kl) latents, and tokens: true needs the FSQ tokens of an "
                             "autoencoder trained with regularizer: fsq; encode the dataset with such a model")
        if not tokens and self.dataset.codebook is not None:
            raise ValueError(f"{self.root} holds FSQ tokens; the flow-matching generator trains on Gaussian (kl) latents")
        if len(self.dataset) == 0:
            if sequence_length is not None and len(self.dataset.index):
                raise ValueError(f"no video of the latent dataset {self.root} has {sequence_length} clips, so it holds "
                                 "no window of sequence_length clips; lower sequence_length or encode longer videos")
            raise ValueError(f"the latent dataset {self.root} holds no clips")
        self.sequence_length = sequence_length
        self.tokens = bool(tokens)
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
        collate = collate_latents if self.sequence_length is None else collate_latent_sequences
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate, drop_last=self.drop_last, persistent_workers=self.num_workers > 0)


__all__ = ["LatentDataModule"]
