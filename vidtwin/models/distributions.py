"""Diagonal Gaussian posterior used by both latents."""

from __future__ import annotations

from typing import Optional

import torch


class DiagonalGaussian:
    """A Gaussian whose mean and log-variance are the two halves of `moments` along dim 1.

    moments: (B, 2*C, ...). The log-variance is clamped to [-30, 20] as in the published model.
    """

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)  # each (B, C, ...)
        self.logvar = logvar.clamp(-30.0, 20.0)

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl_sum(self) -> torch.Tensor:
        """KL to the standard normal, summed over every element of the batch (a scalar)."""
        return 0.5 * torch.sum(self.mean.pow(2) + torch.exp(self.logvar) - 1.0 - self.logvar)
