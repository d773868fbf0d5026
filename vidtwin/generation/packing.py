"""Packing VidTwin's two latent spaces into one token sequence (the paper's section 3.5).

A clip's latents become two groups of 3D patches:

- **structure**: the structure latent ``(d_S, Q, h_S, w_S)`` is a small video of Q frames;
- **dynamics**: the two dynamics latents, ``dynamics_x`` ``(d_D, T, w_D)`` and ``dynamics_y``
  ``(d_D, T, h_D)``, are joined along their pooled axis (x first) into one single-frame image
  ``(d_D, 1, T, w_D + h_D)``.

Each group is padded at its end up to whole patches (odd grids such as 7x7 with patch 2 become
8x8), cut into patches and flattened in (frame, row, column) order. :class:`LatentPacking` does
only this rearrangement, with no parameters, so that ``unpack(pack(x)) == x`` exactly. The
discrete world model reuses it for FSQ tokens: give the integer tokens a channel axis of 1 and use
patch size 1. :class:`PackedTokenEmbedding` adds what a transformer needs on top: a linear map of
each group's patches to the model width, a fixed sin-cos position embedding per group, a learned
type embedding per group, and the output heads that map tokens back to patches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.config import LATENT_NAMES

GROUP_NAMES = ("structure", "dynamics")


def latent_dict(latents) -> Dict[str, torch.Tensor]:
    """``{"structure", "dynamics_x", "dynamics_y"}`` from a mapping or an object with those
    attributes (``VidTwinLatents``, ``VidTwinTokens``)."""
    if isinstance(latents, Mapping):
        return {name: latents[name] for name in LATENT_NAMES}
    return {name: getattr(latents, name) for name in LATENT_NAMES}


@dataclass(frozen=True)
class PatchGroup:
    """One group of patches: a (C, F, H, W) volume per clip cut into (pf, ph, pw) patches."""

    name: str
    volume: Tuple[int, int, int, int]  # (C, F, H, W) before padding
    patch: Tuple[int, int, int]  # (pf, ph, pw)

    @property
    def grid(self) -> Tuple[int, int, int]:
        """Patches along (F, H, W), after padding each axis up to a multiple of its patch size."""
        return tuple(math.ceil(n / p) for n, p in zip(self.volume[1:], self.patch))

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def token_dim(self) -> int:
        """Values per patch: C * pf * ph * pw."""
        return self.volume[0] * math.prod(self.patch)


def _patchify(volume: torch.Tensor, group: PatchGroup) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, N, C*pf*ph*pw), zero-padded at the end of each axis."""
    (pf, ph, pw), (gf, gh, gw) = group.patch, group.grid
    frames, height, width = volume.shape[2:]
    volume = F.pad(volume, (0, gw * pw - width, 0, gh * ph - height, 0, gf * pf - frames))  # (B, C, gf*pf, gh*ph, gw*pw)
    batch, channels = volume.shape[:2]
    patches = volume.reshape(batch, channels, gf, pf, gh, ph, gw, pw)
    patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, gf, gh, gw, C, pf, ph, pw)
    return patches.reshape(batch, gf * gh * gw, group.token_dim)  # (B, N, C*pf*ph*pw)


def _unpatchify(tokens: torch.Tensor, group: PatchGroup) -> torch.Tensor:
    """(B, N, C*pf*ph*pw) -> (B, C, F, H, W), the padding cut off."""
    (pf, ph, pw), (gf, gh, gw) = group.patch, group.grid
    channels, frames, height, width = group.volume
    batch = tokens.shape[0]
    patches = tokens.reshape(batch, gf, gh, gw, channels, pf, ph, pw)
    volume = patches.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, gf, pf, gh, ph, gw, pw)
    volume = volume.reshape(batch, channels, gf * pf, gh * ph, gw * pw)  # (B, C, F', H', W') padded
    return volume[:, :, :frames, :height, :width]


class LatentPacking:
    """Pack the three latents of a batch of clips into two groups of patch tokens, and back.

    latent_shapes: per-clip shapes ``{"structure": (d_S, Q, h_S, w_S), "dynamics_x": (d_D, T, w_D),
        "dynamics_y": (d_D, T, h_D)}`` (``VidTwinConfig.latent_shapes()``).
    structure_patch: patch size over (Q, h_S, w_S).
    dynamics_patch: patch size over (T, w_D + h_D) of the joined dynamics image.

    ``pack`` returns ``[structure_tokens, dynamics_tokens]``, each ``(B, N_g, D_g)`` with
    ``D_g = channels * patch volume``; ``unpack`` inverts it exactly. Values pass through unchanged
    (any dtype, integer tokens included); padded positions hold zeros, and :meth:`valid_mask`
    marks the real ones.
    """

    def __init__(self, latent_shapes: Mapping[str, Sequence[int]], structure_patch: Sequence[int],
                 dynamics_patch: Sequence[int]):
        structure = tuple(latent_shapes["structure"])
        dynamics_x, dynamics_y = tuple(latent_shapes["dynamics_x"]), tuple(latent_shapes["dynamics_y"])
        if len(structure) != 4 or len(dynamics_x) != 3 or len(dynamics_y) != 3:
            raise ValueError(f"latent shapes must be (C, Q, h, w), (C, T, w), (C, T, h) per clip; got {dict(latent_shapes)}")
        if dynamics_x[:2] != dynamics_y[:2]:
            raise ValueError(f"dynamics_x {dynamics_x} and dynamics_y {dynamics_y} differ in channels or frames")
        if len(structure_patch) != 3 or len(dynamics_patch) != 2 or min(*structure_patch, *dynamics_patch) < 1:
            raise ValueError(f"patch sizes must be 3 and 2 positive integers; got {structure_patch}, {dynamics_patch}")
        self.latent_shapes = {"structure": structure, "dynamics_x": dynamics_x, "dynamics_y": dynamics_y}
        channels, frames, width = dynamics_x
        self.groups = (
            PatchGroup("structure", structure, tuple(structure_patch)),
            PatchGroup("dynamics", (channels, 1, frames, width + dynamics_y[2]), (1, *dynamics_patch)),
        )

    @property
    def num_tokens(self) -> int:
        return sum(group.num_tokens for group in self.groups)

    def pack(self, latents) -> List[torch.Tensor]:
        """Latents (a mapping or ``VidTwinLatents``; structure ``(B, d_S, Q, h_S, w_S)``, dynamics
        ``(B, d_D, T, w_D)`` and ``(B, d_D, T, h_D)``) -> ``[(B, N_S, D_S), (B, N_D, D_D)]``."""
        latents = latent_dict(latents)
        for name, shape in self.latent_shapes.items():
            if tuple(latents[name].shape[1:]) != shape:
                raise ValueError(f"{name} has shape {tuple(latents[name].shape)}, expected (B, {', '.join(map(str, shape))})")
        dynamics = torch.cat([latents["dynamics_x"], latents["dynamics_y"]], dim=-1)  # (B, d_D, T, w_D + h_D)
        volumes = (latents["structure"], dynamics.unsqueeze(2))  # (B, d_S, Q, h_S, w_S), (B, d_D, 1, T, w_D + h_D)
        return [_patchify(volume, group) for volume, group in zip(volumes, self.groups)]

    def unpack(self, tokens: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``[(B, N_S, D_S), (B, N_D, D_D)]`` -> ``{"structure", "dynamics_x", "dynamics_y"}``."""
        structure, dynamics = (_unpatchify(part, group) for part, group in zip(tokens, self.groups))
        width = self.latent_shapes["dynamics_x"][2]
        dynamics = dynamics.squeeze(2)  # (B, d_D, T, w_D + h_D)
        return {"structure": structure, "dynamics_x": dynamics[..., :width], "dynamics_y": dynamics[..., width:]}

    def split(self, sequence: torch.Tensor) -> List[torch.Tensor]:
        """One sequence ``(B, N_S + N_D, ...)`` -> its groups ``[(B, N_S, ...), (B, N_D, ...)]``."""
        return list(sequence.split([group.num_tokens for group in self.groups], dim=1))

    def valid_mask(self, device=None) -> List[torch.Tensor]:
        """Per group, a bool ``(1, N_g, D_g)``: True where a token value is real, False on padding."""
        ones = {name: torch.ones(1, *shape, device=device) for name, shape in self.latent_shapes.items()}
        return [part > 0 for part in self.pack(ones)]


def sincos_position_embedding(grid: Sequence[int], dim: int) -> torch.Tensor:
    """Fixed 3D sin-cos embedding ``(prod(grid), dim)`` for a (F, H, W) grid in row-major order.

    Each axis gets an equal, even share of the channels (sines then cosines over geometrically
    spaced frequencies); channels left over are zero.
    """
    per_axis = (dim // len(grid)) // 2 * 2
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    parts = []
    if per_axis:
        frequencies = 1.0 / 10_000 ** (torch.arange(per_axis // 2, dtype=torch.float64) / max(per_axis // 2, 1))
        for positions in axes:
            angles = positions.reshape(-1, 1) * frequencies  # (N, per_axis / 2)
            parts += [angles.sin(), angles.cos()]
    embedding = torch.cat(parts, dim=1) if parts else torch.zeros(math.prod(grid), 0, dtype=torch.float64)
    return F.pad(embedding, (0, dim - embedding.shape[1])).float()  # (N, dim)


class PackedTokenEmbedding(nn.Module):
    """Patch tokens of each group -> one sequence of width ``hidden_size``, and back.

    ``embed([(B, N_S, D_S), (B, N_D, D_D)])`` -> ``(B, N_S + N_D, hidden)``: a linear map per group,
    plus the group's fixed position embedding and learned type embedding.
    ``project(sequence)`` -> ``[(B, N_S, D_S), (B, N_D, D_D)]``: one linear head per group,
    zero-initialized (an untrained model predicts zeros, as in DiT's adaLN-Zero).
    """

    def __init__(self, packing: LatentPacking, hidden_size: int):
        super().__init__()
        self.packing = packing
        self.inputs = nn.ModuleList(nn.Linear(group.token_dim, hidden_size) for group in packing.groups)
        self.outputs = nn.ModuleList(nn.Linear(hidden_size, group.token_dim) for group in packing.groups)
        self.type_embedding = nn.Parameter(torch.zeros(len(packing.groups), hidden_size))
        nn.init.normal_(self.type_embedding, std=0.02)
        positions = torch.cat([sincos_position_embedding(group.grid, hidden_size) for group in packing.groups])
        # Recomputed from the config at build time, so not part of the checkpoint.
        self.register_buffer("position_embedding", positions, persistent=False)  # (N_S + N_D, hidden)
        for head in self.outputs:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def embed(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        parts = [layer(part) + self.type_embedding[index] for index, (layer, part) in enumerate(zip(self.inputs, tokens))]
        return torch.cat(parts, dim=1) + self.position_embedding  # (B, N_S + N_D, hidden)

    def project(self, sequence: torch.Tensor) -> List[torch.Tensor]:
        return [head(part) for head, part in zip(self.outputs, self.packing.split(sequence))]


__all__ = ["LATENT_NAMES", "GROUP_NAMES", "LatentPacking", "PackedTokenEmbedding", "PatchGroup", "latent_dict",
           "sincos_position_embedding"]
