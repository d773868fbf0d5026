"""The packed latent of :class:`AutoencoderVidTwin`: VidTwin's three latents as ONE tensor.

diffusers code expects one latent tensor whose channel axis is dim 1 (``DiagonalGaussianDistribution``
splits mean and log-variance there). VidTwin has three latents of different shapes, so they are
packed with the generator's packing (:class:`vidtwin.generation.packing.LatentPacking`) at patch
size 1, which makes every latent position one token of its latent's channels:

- **structure** ``(B, d_S, Q, h_S, w_S)`` -> ``N_S = Q * h_S * w_S`` tokens of ``d_S`` values, in
  (query, row, column) order;
- **dynamics** ``dynamics_x`` ``(B, d_D, T, w_D)`` and ``dynamics_y`` ``(B, d_D, T, h_D)`` joined
  along their pooled axis (x first) -> ``N_D = T * (w_D + h_D)`` tokens of ``d_D`` values, in
  (frame, position) order: per frame the ``w_D`` columns of ``dynamics_x``, then the ``h_D`` rows
  of ``dynamics_y``.

The token values are zero-padded up to ``C = max(d_S, d_D)`` channels, the two groups are joined
along the tokens (structure first) and the channel axis is put first::

    packed: (B, C, N),  C = max(d_S, d_D),  N = N_S + N_D

The published model (d_S = d_D = 8, Q = 16, h_S = w_S = 7, T = 16, w_D = h_D = 7) packs to
``(B, 8, 1008)``: 784 structure tokens, then 224 dynamics tokens. ``unpack(pack(x)) == x`` exactly;
padded channels (none when d_S == d_D) are dropped by ``unpack``. A spatially tiled encode
(:meth:`AutoencoderVidTwin.enable_tiling`) adds a tile axis: ``(B, C, tiles, N)``, tiles in grid order.

FSQ tokens pack the same way without the channel axis: ``(B, N)`` int64, the first ``N_S``
indexing the structure codebook, the next ``N_D`` the dynamics codebook.

This module needs no diffusers, so that conversion and statistics work without it.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from ..generation.packing import LatentPacking, latent_dict
from ..models.config import LATENT_NAMES, VidTwinConfig

LAYOUT_NAME = "vidtwin-packed"
LAYOUT_VERSION = 1


class PackedLatentLayout:
    """Pack a clip's three latents into ``(B, C, N)`` and back (see the module docstring)."""

    def __init__(self, config: VidTwinConfig):
        shapes = config.latent_shapes()
        self.latent_shapes: Dict[str, tuple] = shapes
        self.packing = LatentPacking(shapes, (1, 1, 1), (1, 1))
        self.structure_channels = shapes["structure"][0]
        self.dynamics_channels = shapes["dynamics_x"][0]
        self.channels = max(self.structure_channels, self.dynamics_channels)
        self.group_tokens = [group.num_tokens for group in self.packing.groups]  # [N_S, N_D]
        self.num_tokens = sum(self.group_tokens)
        # The same packing for integer tokens: a channel axis of 1 (the world model's way).
        token_shapes = {name: (1, *shape[1:]) for name, shape in shapes.items()}
        self.token_packing = LatentPacking(token_shapes, (1, 1, 1), (1, 1))

    @property
    def shape(self) -> tuple:
        """``(C, N)``: the packed latent of one clip."""
        return (self.channels, self.num_tokens)

    def to_dict(self) -> dict:
        """The record of this layout that the diffusers config stores (``latent_layout``)."""
        return {
            "name": LAYOUT_NAME, "version": LAYOUT_VERSION, "packed_shape": list(self.shape),
            "structure_tokens": self.group_tokens[0], "dynamics_tokens": self.group_tokens[1],
            **{f"{name}_shape": list(shape) for name, shape in self.latent_shapes.items()},
        }

    # ------------------------------------------------------------------ float latents
    def pack(self, latents) -> torch.Tensor:
        """Latents (``VidTwinLatents`` or a mapping of the three) -> ``(B, C, N)``."""
        groups = self.packing.pack(latents)  # [(B, N_S, d_S), (B, N_D, d_D)]
        padded = [F.pad(part, (0, self.channels - part.shape[-1])) for part in groups]  # each (B, N_g, C)
        return torch.cat(padded, dim=1).transpose(1, 2).contiguous()  # (B, C, N)

    def unpack(self, packed: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``(B, C, N)`` -> ``{"structure", "dynamics_x", "dynamics_y"}`` (the padding dropped)."""
        self.check_packed(packed, tiled=False)
        structure, dynamics = packed.transpose(1, 2).split(self.group_tokens, dim=1)  # (B, N_S, C), (B, N_D, C)
        return self.packing.unpack([structure[..., :self.structure_channels], dynamics[..., :self.dynamics_channels]])

    def check_packed(self, packed: torch.Tensor, tiled: bool) -> None:
        expected = (self.channels, "tiles", self.num_tokens) if tiled else self.shape
        if packed.dim() != len(expected) + 1 or packed.shape[1] != self.channels or packed.shape[-1] != self.num_tokens:
            raise ValueError(f"packed latents have shape {tuple(packed.shape)}; this model packs to "
                             f"(B, {', '.join(map(str, expected))})")

    # ------------------------------------------------------------------ integer tokens (fsq)
    def pack_tokens(self, tokens) -> torch.Tensor:
        """Integer tokens (``VidTwinTokens`` or a mapping; structure ``(B, Q, h_S, w_S)``, dynamics
        ``(B, T, w_D)`` and ``(B, T, h_D)``) -> ``(B, N)``."""
        with_channel = {name: value.unsqueeze(1) for name, value in latent_dict(tokens).items()}  # (B, 1, ...)
        structure, dynamics = self.token_packing.pack(with_channel)  # (B, N_S, 1), (B, N_D, 1)
        return torch.cat([structure, dynamics], dim=1).squeeze(-1)  # (B, N)

    def unpack_tokens(self, indices: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``(B, N)`` -> the three token tensors without a channel axis."""
        if indices.dim() != 2 or indices.shape[1] != self.num_tokens:
            raise ValueError(f"token indices have shape {tuple(indices.shape)}; this model packs to (B, {self.num_tokens})")
        groups = list(indices.unsqueeze(-1).split(self.group_tokens, dim=1))  # [(B, N_S, 1), (B, N_D, 1)]
        return {name: value.squeeze(1) for name, value in self.token_packing.unpack(groups).items()}

    # ------------------------------------------------------------------ statistics
    def valid_mask(self) -> torch.Tensor:
        """``(C, N)`` bool: True where a packed value is a real latent value, False on channel padding."""
        ones = {name: torch.ones(1, *shape) for name, shape in self.latent_shapes.items()}
        return self.pack(ones)[0] > 0

    def per_latent_map(self, values: Mapping[str, Sequence[float]], fill: float) -> torch.Tensor:
        """Per-channel numbers of each latent (``{"structure": [d_S], "dynamics_x": [d_D], ...}``)
        placed on the packed layout: ``(C, N)`` float64, ``fill`` on padding."""
        volumes = {}
        for name, shape in self.latent_shapes.items():
            column = torch.tensor(list(values[name]), dtype=torch.float64)
            if column.numel() != shape[0]:
                raise ValueError(f"{name} has {shape[0]} channels but the statistics give {column.numel()}")
            volumes[name] = column.reshape(1, -1, *([1] * (len(shape) - 1))).expand(1, *shape)  # (1, C_name, ...)
        placed = self.pack(volumes)[0]  # (C, N)
        return torch.where(self.valid_mask(), placed, torch.full_like(placed, fill))

    def per_channel_map(self, values: Sequence[float]) -> torch.Tensor:
        """Per packed channel numbers (``[C]``) as a ``(C, N)`` float64 map."""
        column = torch.tensor(list(values), dtype=torch.float64)
        if column.numel() != self.channels:
            raise ValueError(f"the packed latent has {self.channels} channels but the statistics give {column.numel()}")
        return column[:, None].expand(self.channels, self.num_tokens)


def packed_channel_sources(config: VidTwinConfig) -> List[List[str]]:
    """For each packed channel ``c``, the latents whose channel ``c`` it holds, e.g.
    ``[["structure", "dynamics_x", "dynamics_y"], ...]``; with d_S != d_D the wider one alone
    fills the last channels."""
    shapes = config.latent_shapes()
    channels = max(shape[0] for shape in shapes.values())
    return [[name for name in LATENT_NAMES if c < shapes[name][0]] for c in range(channels)]


def check_layout_record(record: Optional[dict], layout: PackedLatentLayout) -> None:
    """Refuse a stored ``latent_layout`` that is not the one this code packs for the config."""
    if record is None:
        return
    if dict(record) != layout.to_dict():
        raise ValueError(f"the config's latent_layout {record} is not the layout this code packs for its model "
                         f"settings ({layout.to_dict()}): the folder was written by another version")


__all__ = ["LAYOUT_NAME", "LAYOUT_VERSION", "PackedLatentLayout", "check_layout_record", "packed_channel_sources"]
