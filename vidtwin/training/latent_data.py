"""Lightning data module over a latent dataset (``vidtwin encode-dataset``), for the generators.

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

The order is a seeded shuffle per epoch (``seed + epoch``, as ``DistributedSampler`` draws it);
under DDP each process takes its share of that order. :class:`UpdateOrderSampler` serves it as one
endless stream of whole batches that starts at the batch of the module's update counter, so a run
resumed anywhere, in the middle of an epoch too, sees the batches an uninterrupted run sees.
(Lightning restarts an interrupted epoch from its first batch, which replayed part of the epoch.)
"""

from __future__ import annotations

import math
from typing import Iterator

import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler

from ..latents.dataset import LatentDataset, collate_latent_sequences, collate_latents


class UpdateOrderSampler(DistributedSampler):
    """This process's items as an endless stream of whole batches, from batch ``start_batch`` on.

    Epoch ``e`` is ``DistributedSampler``'s order for ``seed + e`` (a permutation, padded to a
    multiple of the processes, every ``world``-th item from ``rank`` on), cut into whole batches:
    with ``drop_last`` the items of a last, partial batch are left out; without it that batch is
    filled up from the start of the same epoch. Batch ``n`` of the stream is therefore a function
    of ``n`` alone, and a resumed run starts at the batch its update counter says.

    A ``DistributedSampler`` subclass, so that Lightning keeps it under DDP instead of wrapping it;
    it has no length, so Lightning runs it as an endless loader stopped by ``max_steps``.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, batch_size: int, drop_last: bool,
                 start_batch: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = int(batch_size)
        share = self.num_samples  # items per process and epoch, after padding
        self.batches_per_epoch = share // self.batch_size if drop_last else math.ceil(share / self.batch_size)
        if self.batches_per_epoch < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the {share} items per process and epoch; "
                             "lower batch_size or set drop_last: false")
        self.start_batch = int(start_batch)

    def epoch_items(self, epoch: int) -> list:
        """This process's items of one epoch, cut or filled up to whole batches."""
        self.epoch = epoch
        items = list(super().__iter__())  # DistributedSampler's order for seed + epoch, this rank's share
        needed = self.batches_per_epoch * self.batch_size
        return (items * math.ceil(needed / len(items)))[:needed]

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the stream's position comes from ``start_batch``, not from Lightning's epoch count."""

    def __len__(self) -> int:
        raise TypeError("an UpdateOrderSampler is endless")

    def __iter__(self) -> Iterator[int]:
        epoch, batch = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            yield from self.epoch_items(epoch)[batch * self.batch_size:]
            epoch, batch = epoch + 1, 0


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
        module = trainer.lightning_module if trainer is not None else None
        # The module's counters (the training contract's), restored from the checkpoint before
        # Lightning asks for the loader on a resume; no module before fit.
        start_batch = module.train_step * module.batches_per_update if module is not None else 0
        sampler = UpdateOrderSampler(self.dataset, num_replicas=world, rank=rank, seed=self.seed,
                                     batch_size=self.batch_size, drop_last=self.drop_last, start_batch=start_batch)
        collate = collate_latents if self.sequence_length is None else collate_latent_sequences
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate, persistent_workers=self.num_workers > 0)


__all__ = ["LatentDataModule", "UpdateOrderSampler"]
