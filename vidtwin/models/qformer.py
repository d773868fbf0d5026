"""The structure branch's Q-Former: learned queries that attend over a sequence of tokens.

It wraps `transformers.Blip2QFormerModel` (no vendored copy); the parameter names
(`query_embeds`, `qformer.*`) match the official checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel


class TemporalQFormer(nn.Module):
    """(N, L, C) tokens -> (N, Q, q) query outputs; N is batch x spatial positions, L the frames."""

    def __init__(
        self,
        num_queries: int,
        query_hidden_size: int,
        encoder_hidden_size: int,
        num_layers: int,
        intermediate_size: int,
        num_heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        config = Blip2QFormerConfig(
            hidden_size=query_hidden_size,
            encoder_hidden_size=encoder_hidden_size,
            num_hidden_layers=num_layers,
            intermediate_size=intermediate_size,
            num_attention_heads=num_heads,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
        self.qformer = Blip2QFormerModel(config)
        self.query_embeds = nn.Parameter(torch.randn(num_queries, query_hidden_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        queries = self.query_embeds[None].expand(tokens.shape[0], -1, -1)  # (N, Q, q)
        return self.qformer(query_embeds=queries, encoder_hidden_states=tokens).last_hidden_state  # (N, Q, q)
