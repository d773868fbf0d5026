"""Spatio-temporal transformer encoder and decoder.

Each block runs spatial attention over the h*w tokens of every frame, then temporal attention over
the t tokens of every spatial position (causal when configured), then an MLP. A learned
`scale_shift_table` of shape (6, C) modulates the layer-normed input of the spatial attention and the
MLP (`x * (1 + scale) + shift`) and gates their outputs; the temporal branch reuses the attention
gate. Parameter names follow the official checkpoint.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention


def sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """Sin-cos embedding of positions (M,) -> (M, embed_dim): [sin(p * w), cos(p * w)]."""
    if embed_dim % 2 != 0:
        raise ValueError(f"sin-cos embeddings need an even width, got {embed_dim}")
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))  # (D/2,)
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)  # (M, D/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (M, D)


def sincos_2d(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Sin-cos embedding of an h x w grid, tokens in row-major order -> (h*w, embed_dim).

    The first half of the channels encodes the column (w) coordinate and the second half the row
    (h) coordinate, which is the layout the published weights were trained with.
    """
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")
    return np.concatenate([sincos_1d(embed_dim // 2, cols), sincos_1d(embed_dim // 2, rows)], axis=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, in one fused pass over x."""
    return torch.addcmul(shift, x, 1 + scale)


class PatchEmbed3D(nn.Module):
    """(B, C_in, T, H, W) video -> (B, C, t, h, w) tokens with one strided Conv3d.

    T, H and W are zero-padded at the end up to whole patches.
    """

    def __init__(self, patch_size: Sequence[int], in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for size, patch in zip(reversed(x.shape[2:]), reversed(self.patch_size)):
            pad += [0, (-size) % patch]  # F.pad order: W, then H, then T
        if any(pad):
            x = F.pad(x, pad)
        return self.proj(x)  # (B, C, t, h, w)


class STBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, temporal_causal: bool, backend: str) -> None:
        super().__init__()
        self.temporal_causal = temporal_causal
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads, backend)
        self.attn_temp = Attention(hidden_size, num_heads, backend)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor, temporal_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, t, s, C) tokens; temporal_pos: (1, t, C) added to the temporal branch's input."""
        frames, positions = x.shape[1], x.shape[2]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.scale_shift_table[None].chunk(6, dim=1)

        x_spatial = rearrange(modulate(self.norm1(x), shift_msa, scale_msa), "B T S C -> (B T) S C")
        x_spatial = self.attn(x_spatial, causal=False)
        x = torch.addcmul(x, gate_msa, rearrange(x_spatial, "(B T) S C -> B T S C", T=frames))

        # The temporal branch reads the residual stream itself, without norm or modulation.
        # contiguous(): with B == 1 the rearrange is a strided view, and CPU bf16 matmuls on such a
        # view copy the weight once per sequence (half of a bf16 round trip's time).
        x_temporal = rearrange(x, "B T S C -> (B S) T C").contiguous()
        if temporal_pos is not None:
            x_temporal = x_temporal + temporal_pos
        x_temporal = self.attn_temp(x_temporal, causal=self.temporal_causal)
        x = torch.addcmul(x, gate_msa, rearrange(x_temporal, "(B S) T C -> B T S C", S=positions))

        return torch.addcmul(x, gate_mlp, self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))


class SpatioTemporalTransformer(nn.Module):
    """The blocks shared by encoder and decoder, with fixed sin-cos position embeddings.

    The position embeddings are recomputed from the grid, not stored in checkpoints.
    """

    def __init__(
        self,
        token_grid: Tuple[int, int, int],
        hidden_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        temporal_causal: bool,
        backend: str,
    ) -> None:
        super().__init__()
        self.token_grid = tuple(token_grid)
        frames, grid_h, grid_w = self.token_grid
        spatial = torch.from_numpy(sincos_2d(hidden_size, grid_h, grid_w)).float()[None]  # (1, h*w, C)
        temporal = torch.from_numpy(sincos_1d(hidden_size, np.arange(frames))).float()[None]  # (1, t, C)
        self.register_buffer("pos_embed", spatial, persistent=False)
        self.register_buffer("pos_embed_temporal", temporal, persistent=False)
        self.blocks = nn.ModuleList(
            STBlock(hidden_size, num_heads, mlp_ratio, temporal_causal, backend) for _ in range(depth)
        )
        self.gradient_checkpointing = False

    def run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, C, t, h, w) -> (B, t, h*w, C) after the spatial embedding and every block."""
        x = rearrange(tokens, "B C T H W -> B T (H W) C") + self.pos_embed
        for index, block in enumerate(self.blocks):
            temporal_pos = self.pos_embed_temporal if index == 0 else None
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, temporal_pos, use_reentrant=False)
            else:
                x = block(x, temporal_pos)
        return x


class STTEncoder(SpatioTemporalTransformer):
    """(B, 3, T, H, W) video in [-1, 1] -> (B, C, t, h, w) tokens."""

    def __init__(self, input_size, patch_size, in_channels, **kwargs) -> None:
        super().__init__(**kwargs)
        self.x_embedder = PatchEmbed3D(patch_size, in_channels, kwargs["hidden_size"])

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        tokens = self.x_embedder(video)  # (B, C, t, h, w)
        frames, grid_h, grid_w = tokens.shape[2:]
        x = self.run_blocks(tokens)  # (B, t, h*w, C)
        return rearrange(x, "B T (H W) C -> B C T H W", H=grid_h, W=grid_w)


class FinalLayer(nn.Module):
    """Modulated LayerNorm and a linear map from C to one patch of pixels."""

    def __init__(self, hidden_size: int, patch_values: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(hidden_size, patch_values)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift, scale = self.scale_shift_table[None].chunk(2, dim=1)  # each (1, 1, C)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class STTDecoder(SpatioTemporalTransformer):
    """(B, C, t, h, w) embeddings -> (B, 3, T, H, W) video, cropped to the configured input size."""

    def __init__(self, input_size, patch_size, in_channels, **kwargs) -> None:
        super().__init__(**kwargs)
        self.input_size = tuple(input_size)
        self.patch_size = tuple(patch_size)
        self.out_channels = in_channels
        self.final_layer = FinalLayer(kwargs["hidden_size"], int(np.prod(patch_size)) * in_channels)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        frames, grid_h, grid_w = embeddings.shape[2:]
        patches = self.final_layer(self.run_blocks(embeddings))  # (B, t, h*w, pt*ph*pw*C_out)
        patch_t, patch_h, patch_w = self.patch_size
        video = rearrange(
            patches,
            "B T (H W) (pt ph pw C) -> B C (T pt) (H ph) (W pw)",
            H=grid_h, W=grid_w, pt=patch_t, ph=patch_h, pw=patch_w,
        )  # (B, C_out, t*pt, h*ph, w*pw)
        out_t, out_h, out_w = self.input_size
        return video[:, :, :out_t, :out_h, :out_w]  # drop the patch padding

    def get_last_layer(self) -> torch.Tensor:
        return self.final_layer.linear.weight
