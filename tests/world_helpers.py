"""Token windows shaped as ``collate_latent_sequences`` gives them (the data interface of the world
model), built from tensors: the fixtures of the world model's tests."""

from __future__ import annotations

import math

import torch


def random_windows(config, batch: int = 2, clips: int = 3, seed: int = 0) -> dict:
    """``structure`` ``(B, n, Q, h_S, w_S)``, ``dynamics_x`` ``(B, n, T, w_D)``, ``dynamics_y``
    ``(B, n, T, h_D)`` int64 tokens of a ``WorldModelConfig``'s grids and levels, and ``actions`` ``(B, n)``."""
    random = torch.Generator().manual_seed(seed)
    sizes = {"structure": math.prod(config.structure_levels), "dynamics_x": math.prod(config.dynamics_levels),
             "dynamics_y": math.prod(config.dynamics_levels)}
    windows = {name: torch.randint(0, sizes[name], (batch, clips, *shape), generator=random)
               for name, shape in config.token_shapes.items()}
    windows["actions"] = torch.randint(0, len(config.actions), (batch, clips), generator=random)
    return windows
