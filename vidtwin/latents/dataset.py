"""Reading a latent dataset (``inference.py encode-dataset``) back for downstream training.

Example::

    from torch.utils.data import DataLoader
    from vidtwin.data import LatentDataset, collate_latents

    dataset = LatentDataset("latents/")                 # opens the index; no shard is read yet
    item = dataset[0]                                    # one clip
    item["structure"]                                    # (d_S, Q, h_S, w_S) float32
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=4, collate_fn=collate_latents)
    for batch in loader:
        batch["latents"]                                 # VidTwinLatents, ready for model.decode
        batch["video"], batch["clip"]                    # where each clip came from

A dataset of an FSQ model (``regularizer: fsq``) stores integer tokens: ``item["structure"]`` is then
``(Q, h_S, w_S)`` int64, ``dataset.codebook`` names the levels of both latents, and a collated batch
has ``batch["tokens"]`` (:class:`~vidtwin.models.VidTwinTokens`) besides ``batch["latents"]`` (the codes).

Shards are opened lazily, memory-mapped, once per process (DataLoader workers open their own),
and only the requested clip is copied out of a shard, so opening a dataset of a million clips
costs reading its index, and memory does not grow with the number of shards read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from vidtwin.latents.latent_file import (
    WEIGHTS_FINGERPRINT_KEY,
    codebook_levels,
    stored_tokens_to_codes,
    unpack_tokens,
)

from .shards import (
    SHARD_DIR,
    TENSOR_NAMES,
    LatentDatasetError,
    read_failures,
    read_index,
    read_manifest,
)


class LatentDataset(Dataset):
    """The clips of a latent dataset directory, in index order (input order, then clip order).

    ``ds[i]`` is a dict: ``structure`` ``(d_S, Q, h_S, w_S)``, ``dynamics_x`` ``(d_D, T, w_D)`` and
    ``dynamics_y`` ``(d_D, T, h_D)`` float32 tensors (posterior means); ``video`` (the source as
    given), ``clip`` (the clip number in that video), ``first_frame``, ``num_frames`` (real frames
    of the clip) and ``fps``. For an FSQ model the three latents are int64 tokens instead, without
    the channel axis: ``(Q, h_S, w_S)``, ``(T, w_D)`` and ``(T, h_D)``.

    Attributes:
        config: the model config (a dict for ``VidTwinConfig(**config)``), to decode the latents.
        codebook: ``{"structure": levels, "dynamics": levels}`` of an FSQ model's tokens; None for
            Gaussian latents.
        manifest: the whole manifest (weights fingerprint, sampling settings, version).
        index: the index as columns (:class:`~vidtwin.latents.shards.IndexColumns`).
        videos: the encoded sources, in input order.
        failures: source -> reason, for the videos that could not be read.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            raise LatentDatasetError(f"{self.root} is not a latent dataset (no manifest.json); write one with `inference.py encode-dataset`")
        if manifest.get("status") != "complete":
            raise LatentDatasetError(
                f"{self.root} is an unfinished latent dataset (status {manifest.get('status')!r}); run the same encode-dataset command again to finish it"
            )
        self.manifest = manifest
        self.config: dict = manifest["identity"]["model_config"]
        self.codebook: dict | None = codebook_levels(self.config)
        self.index = read_index(self.root)
        self.failures = read_failures(self.root)
        self._shards: dict[int, object] = {}  # shard position -> open safe_open handle, per process

    @property
    def videos(self) -> list[str]:
        return self.index.videos

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a latent dataset of {len(self)} clips")
        columns = self.index.columns
        shard, row = int(columns["shard"][index]), int(columns["row"][index])
        handle = self._open(shard)
        item = {name: handle.get_slice(name)[row : row + 1][0] for name in TENSOR_NAMES}  # each without the clip axis
        if self.codebook is not None:  # stored in the smallest dtype that holds the codebook
            item = {name: unpack_tokens(tokens) for name, tokens in item.items()}
        item["video"] = self.index.videos[columns["video"][index]]
        for name in ("clip", "first_frame", "num_frames", "fps"):
            item[name] = columns[name][index].item()
        return item

    def _open(self, shard: int):
        handle = self._shards.get(shard)
        if handle is None:
            path = self.root / SHARD_DIR / self.index.shards[shard]
            if not path.is_file():
                raise LatentDatasetError(f"{path} is listed in the index but missing; run encode-dataset again to rebuild it")
            try:
                handle = self._shards[shard] = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError) as error:
                raise LatentDatasetError(
                    f"shard {path} is unreadable ({error}); delete it and run the same encode-dataset command again"
                ) from None
        return handle

    def __getstate__(self) -> dict:
        # Open shard handles belong to one process: a DataLoader worker opens its own.
        return {**self.__dict__, "_shards": {}}

    def clips_of(self, video: str) -> list[int]:
        """Dataset indices of the clips of one source video, in clip order."""
        position = self.index.videos.index(video) if video in self.index.videos else -1
        indices = np.flatnonzero(self.index.columns["video"] == position)
        if position < 0 or not len(indices):
            known = f"; it failed: {self.failures[video]}" if video in self.failures else ""
            raise LatentDatasetError(f"{video} is not a video of the latent dataset {self.root}{known}")
        return sorted(indices.tolist(), key=lambda i: self.index.columns["clip"][i])

    def encoded_video(self, video: str):
        """All clips of one source video as an :class:`~vidtwin.latents.latent_file.EncodedVideo`,
        which ``decode_latents`` (and ``inference.py decode``) turns back into the video."""
        from vidtwin.latents.latent_file import EncodedVideo

        indices = self.clips_of(video)
        first = self.index.row(indices[0])
        if len(indices) != first["video_clips"]:
            raise LatentDatasetError(f"the latent dataset {self.root} holds {len(indices)} of the {first['video_clips']} clips of {video}")
        items = [self[i] for i in indices]
        tensors = {name: torch.stack([item[name] for item in items]) for name in TENSOR_NAMES}  # each (clips, ...)
        if self.codebook is not None:
            tensors = {name: stored_tokens_to_codes(name, tokens, self.codebook) for name, tokens in tensors.items()}
        # Each tensor gets a tile axis of length 1: (clips, 1, C, ...), the layout of a --spatial resize latent file.
        tensors = {name: tensor.unsqueeze(1) for name, tensor in tensors.items()}
        identity = self.manifest["identity"]
        sampling = identity["sampling"]
        fingerprint = identity.get("weights_fingerprint")
        return EncodedVideo(
            **tensors, fps=first["fps"], num_frames=first["video_frames"], clip_len=sampling["input_size"][0],
            original_size=(first["height"], first["width"]), output_size=tuple(sampling["input_size"][1:]),
            spatial="resize", config=self.config, source=video,
            extra={WEIGHTS_FINGERPRINT_KEY: fingerprint} if fingerprint else {},
        )


def collate_latents(items: list[dict], codebook: dict | None = None) -> dict:
    """Stack dataset items into ``{"latents": VidTwinLatents, "video": [...], "clip": (B,) ...}``.

    ``batch["latents"]`` holds ``structure`` ``(B, d_S, Q, h_S, w_S)``, ``dynamics_x``
    ``(B, d_D, T, w_D)`` and ``dynamics_y`` ``(B, d_D, T, h_D)``: pass it to ``model.decode``.
    Items of an FSQ dataset (integer tokens) also give ``batch["tokens"]``, a ``VidTwinTokens`` of
    int64 ``(B, Q, h_S, w_S)``, ``(B, T, w_D)``, ``(B, T, h_D)``; their codes, for ``batch["latents"]``,
    need the levels: pass ``codebook=dataset.codebook`` (with ``functools.partial``), or leave it
    out to get the tokens alone.
    """
    from vidtwin.models import VidTwinLatents, VidTwinTokens

    stacked = {name: torch.stack([item[name] for item in items]) for name in TENSOR_NAMES}  # each (B, ...)
    batch: dict = {}
    if stacked["structure"].is_floating_point():
        batch["latents"] = VidTwinLatents(*stacked.values())
    else:
        batch["tokens"] = VidTwinTokens(*stacked.values())
        if codebook is not None:
            batch["latents"] = VidTwinLatents(*(stored_tokens_to_codes(name, tokens, codebook)
                                                for name, tokens in stacked.items()))
    return {
        **batch,
        "video": [item["video"] for item in items],
        "clip": torch.tensor([item["clip"] for item in items]),
        "first_frame": torch.tensor([item["first_frame"] for item in items]),
        "num_frames": torch.tensor([item["num_frames"] for item in items]),
        "fps": torch.tensor([item["fps"] for item in items], dtype=torch.float64),
    }
