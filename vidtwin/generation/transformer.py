"""The generator's backbone: transformer blocks with adaLN-Zero conditioning on time and class.

Each block modulates its two LayerNorms (attention, MLP) with a shift and a scale, and gates each
residual branch, all six vectors regressed from the sum of the time and class embeddings by a
zero-initialized linear layer, so every block starts as the identity (adaLN-Zero). Attention is
one ``F.scaled_dot_product_attention`` call over the whole packed sequence: the generator needs
no mask (the sequence has no padding tokens; padded values inside a patch are left out of the
loss), and a model that does (a causal world model) passes ``attention_mask``. No dtype casts:
precision belongs to the caller (autocast or ``model.to(dtype)``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..models.attention import scaled_dot_product_attention


TIME_FREQUENCY_CHANNELS = 256


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), shift and scale (B, C)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedding(nn.Module):
    """Flow time t in [0, 1], (B,) -> (B, hidden): sinusoidal features of 1000 t, then an MLP."""

    def __init__(self, hidden_size: int, frequency_channels: int = TIME_FREQUENCY_CHANNELS):
        super().__init__()
        self.frequency_channels = frequency_channels
        self.mlp = nn.Sequential(nn.Linear(frequency_channels, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_channels // 2
        frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=t.dtype) / half)  # (half,)
        angles = 1000 * t[:, None] * frequencies[None]  # (B, half); 1000 spreads [0, 1] over the frequencies
        features = torch.cat([angles.cos(), angles.sin()], dim=-1)  # (B, frequency_channels)
        return self.mlp(features)


class ClassEmbedding(nn.Module):
    """Class labels (B,) int64 in [0, num_classes] -> (B, hidden). Label ``num_classes`` is "no
    class": the unconditional model of classifier-free guidance (the only label when num_classes is 0)."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.null_label = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden_size)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                queries: Optional[int] = None) -> torch.Tensor:
        """x (B, N, C); attention_mask: bool (N, N) or (B, 1, N, N), True where a query may attend.
        queries: the output of the last ``queries`` positions alone, ``(B, queries, C)``; every
        position is still a key (None: all N)."""
        batch, tokens, channels = x.shape
        head_size = channels // self.num_heads
        if queries is None:
            qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, head_size)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, C / heads)
        else:
            # The query rows of the fused projection on the kept positions alone, the key and value
            # rows on all: the same numbers as slicing the full projection, without the unused queries.
            q_weight, kv_weight = self.qkv.weight.split([channels, 2 * channels])
            q_bias, kv_bias = self.qkv.bias.split([channels, 2 * channels])
            q = F.linear(x[:, -queries:], q_weight, q_bias).reshape(batch, queries, self.num_heads, head_size)
            q = q.transpose(1, 2)  # (B, heads, queries, C / heads)
            kv = F.linear(x, kv_weight, kv_bias).reshape(batch, tokens, 2, self.num_heads, head_size)
            k, v = kv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, C / heads)
            if attention_mask is not None:
                attention_mask = attention_mask[..., -queries:, :]  # (queries, N) or (B, 1, queries, N)
            tokens = queries
        out = scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)  # (B, heads, tokens, C / heads)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))  # (B, tokens, C)


class ModulatedBlock(nn.Module):
    """x + gate * Attention(modulate(LN(x))), then the same with an MLP (tanh GELU)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        mlp_size = int(hidden_size * mlp_ratio)
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_size), nn.GELU(approximate="tanh"), nn.Linear(mlp_size, hidden_size))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                queries: Optional[int] = None) -> torch.Tensor:
        """x (B, N, C), condition (B, C) -> (B, N, C) (``(B, queries, C)``: the last positions alone);
        attention_mask and queries as in :class:`Attention`."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(condition).chunk(6, dim=-1)  # each (B, C)
        attended = self.attn(modulate(self.norm1(x), shift_a, scale_a), attention_mask, queries)
        if queries is not None:
            x = x[:, -queries:]  # (B, queries, C)
        x = x + gate_a[:, None] * attended
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class ModulatedTransformer(nn.Module):
    """A stack of :class:`ModulatedBlock` s and a final adaLN-modulated LayerNorm, under one
    condition vector per sample.

    forward(x (B, N, hidden), condition (B, hidden), attention_mask as in :class:`Attention`) -> (B, N, hidden).
    Linear layers start Xavier-uniform with zero biases, the modulations at zero (adaLN-Zero).
    """

    def __init__(self, hidden_size: int, depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(ModulatedBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and "modulation" not in name:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.final_modulation[1].weight)
        nn.init.zeros_(self.final_modulation[1].bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                queries: Optional[int] = None) -> torch.Tensor:
        """queries: the output of the last ``queries`` positions alone, ``(B, queries, hidden)``.
        Only the last block can skip the other positions: earlier blocks' outputs are its keys."""
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            x = block(x, condition, attention_mask, queries if index == last else None)
        shift, scale = self.final_modulation(condition).chunk(2, dim=-1)  # each (B, hidden)
        return modulate(self.final_norm(x), shift, scale)


class ConditionedTransformer(ModulatedTransformer):
    """:class:`ModulatedTransformer` conditioned on the flow time and the class.

    forward(x (B, N, hidden), t (B,) in [0, 1], labels (B,) int64 in [0, num_classes]) -> (B, N, hidden).
    """

    def __init__(self, hidden_size: int, depth: int, num_heads: int, mlp_ratio: float, num_classes: int):
        super().__init__(hidden_size, depth, num_heads, mlp_ratio)
        self.time_embedding = TimestepEmbedding(hidden_size)
        self.class_embedding = ClassEmbedding(num_classes, hidden_size)
        for layer in (self.time_embedding.mlp[0], self.time_embedding.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        condition = self.time_embedding(t) + self.class_embedding(labels)  # (B, hidden)
        return super().forward(x, condition)


def transformer_flops(num_tokens: int, token_dims, hidden_size: int, depth: int, mlp_size: int) -> int:
    """Forward FLOPs of one clip (a multiply-add counts 2) through the packed-token transformer:
    patch embeddings, ``depth`` blocks (qkv, attention scores and values, projection, MLP) and the
    output heads. token_dims: ``[(tokens, values per token)]`` per group. The per-clip conditioning
    (time and class embeddings, modulation vectors) is independent of the token count and counted too.
    """
    n = num_tokens
    embed = sum(2 * tokens * dim * hidden_size for tokens, dim in token_dims)
    heads = embed  # the output heads mirror the input maps
    attention = 2 * n * hidden_size * 3 * hidden_size + 2 * 2 * n * n * hidden_size + 2 * n * hidden_size * hidden_size
    mlp = 2 * 2 * n * hidden_size * mlp_size
    conditioning = (2 * TIME_FREQUENCY_CHANNELS * hidden_size + 2 * hidden_size * hidden_size
                    + depth * 2 * hidden_size * 6 * hidden_size + 2 * hidden_size * 2 * hidden_size)
    return embed + heads + depth * (attention + mlp) + conditioning


# The name of 640498a, when only the generator used these blocks; the world model shares them.
GeneratorBlock = ModulatedBlock

__all__ = ["ConditionedTransformer", "ModulatedTransformer", "ModulatedBlock", "TimestepEmbedding", "ClassEmbedding",
           "transformer_flops"]
