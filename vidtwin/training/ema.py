"""Exponential moving average of a module's parameters, kept outside the module's state_dict.

The average lives in plain fp32 tensors so that it neither appears among the LightningModule's
keys (which must stay the official names under ``autoencoder.`` / ``loss.``) nor is touched by
the optimizers. The training contract (:class:`vidtwin.training.contract.TrainingModule`) saves it
in the Lightning checkpoint under the top-level key :data:`vidtwin.pretrained.EMA_STATE_KEY` as a complete state_dict
of the averaged model (its own key names, no prefix, EMA values for parameters and the live values
for buffers), which loads like any weights of that model.

With ``warmup=True`` the decay ramps up so that the average is not dominated by the random
initialisation: the k-th update (k = 1, 2, ...) uses ``min(decay, k / (9 + k))``, i.e.
``(1 + n) / (10 + n)`` with ``n = k - 1`` the number of earlier updates (0.1 for the first update).
This is the ramp of LitEma (taming-transformers / VidTok) shifted by one update: LitEma counts the
current update in ``n`` and starts at 2/11. Both reach ``decay`` after a few hundred updates for the
usual 0.999; the shift only changes the first updates' weights, and it is kept so that resumed runs
of earlier versions continue with the same averages.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)



class EMA:
    """Moving average of ``module``'s floating-point parameters.

    Args:
        module: the module whose parameters are averaged (the autoencoder).
        decay: the target decay in [0, 1).
        warmup: use the ``(1 + n) / (10 + n)`` ramp, n = earlier updates, for the first updates.
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone() for name, p in module.named_parameters() if p.is_floating_point()
        }
        self._stored: dict[str, torch.Tensor] | None = None

    def current_decay(self) -> float:
        """Decay applied by the next ``update``."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards the current parameters (call once per optimizer update)."""
        decay = self.current_decay()
        self.num_updates += 1
        shadows, params = [], []
        for name, p in module.named_parameters():
            if name not in self.shadow:
                continue
            shadow = self.shadow[name]
            if shadow.device != p.device:  # the module moved (e.g. to the GPU after construction)
                shadow = self.shadow[name] = shadow.to(p.device)
            shadows.append(shadow)
            params.append(p.detach().float())
        # shadow <- shadow + (1 - decay) * (param - shadow)
        torch._foreach_lerp_(shadows, params, 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite ``module``'s parameters with the average."""
        for name, p in module.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name].to(device=p.device, dtype=p.dtype))

    @contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[None]:
        """Run a block with the averaged weights in ``module``; the training weights come back after."""
        if self._stored is not None:
            raise RuntimeError("EMA weights are already swapped in")
        self._stored = {name: p.detach().clone() for name, p in module.named_parameters() if name in self.shadow}
        try:
            self.copy_to(module)
            yield
        finally:
            with torch.no_grad():
                for name, p in module.named_parameters():
                    if name in self._stored:
                        p.copy_(self._stored[name])
            self._stored = None

    @property
    def is_swapped_in(self) -> bool:
        return self._stored is not None

    def export_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """A complete state_dict of ``module`` with averaged parameters (CPU tensors, module dtypes).

        Buffers and any parameter not averaged keep their current values, so the result loads
        strictly into a fresh copy of the module.
        """
        out = {}
        for name, tensor in module.state_dict().items():
            value = self.shadow.get(name, tensor)
            out[name] = value.detach().to(device="cpu", dtype=tensor.dtype).clone()
        return out

    def load_from_checkpoint(self, checkpoint: dict, key: str, num_updates: int) -> bool:
        """Restore the average saved under ``checkpoint[key]``; False (with a warning) when the
        checkpoint has none, and the caller restarts the average from the loaded weights."""
        if key not in checkpoint:
            logger.warning("checkpoint has no EMA weights: the EMA restarts from the current weights")
            return False
        self.load_shadow(checkpoint[key], num_updates)
        return True

    def load_shadow(self, state_dict: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore the average from an ``export_state_dict`` result (as saved in a checkpoint)."""
        missing = sorted(set(self.shadow) - set(state_dict))
        if missing:
            raise KeyError(f"EMA state is missing {len(missing)} parameters, e.g. {missing[:3]}")
        for name in self.shadow:
            self.shadow[name] = state_dict[name].detach().float().to(self.shadow[name].device).clone()
        self.num_updates = int(num_updates)
