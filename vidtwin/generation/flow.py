"""Flow matching on a linear path, and the ODE sampler with classifier-free guidance.

Convention: time t runs from 0 (pure noise) to 1 (data); ``x_t = (1 - t) * noise + t * data`` and
the model predicts the velocity ``data - noise``, constant along each path. Training times are
logit-normal, ``t = sigmoid(N(mean, std))``, which puts most of the effort on the middle of the path
(Esser et al. 2024). Sampling integrates ``dx/dt = v(x, t)`` from noise at t = 0 to t = 1.

Guidance scale w combines the conditional and unconditional velocities as
``v = v_uncond + w * (v_cond - v_uncond)``: w = 1 is the conditional model alone (one network pass
per step), w = 0 the unconditional model alone, w > 1 pushes samples further towards their class.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import UserError

SAMPLERS = ("euler", "heun")

# velocity(x_groups, t (B,), labels (B,)) -> velocity per group, same shapes as x_groups
VelocityFn = Callable[[List[torch.Tensor], torch.Tensor, torch.Tensor], List[torch.Tensor]]


class SamplerError(ValueError, UserError):
    """Sampler settings that cannot be used."""


def logit_normal_times(batch: int, mean: float = 0.0, std: float = 1.0, device=None, dtype=None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch,) times in (0, 1): sigmoid of a normal sample."""
    return torch.sigmoid(torch.randn(batch, device=device, dtype=dtype, generator=generator) * std + mean)


def flow_matching_loss(velocity: VelocityFn, data: Sequence[torch.Tensor], labels: torch.Tensor, t: torch.Tensor,
                       noise: Sequence[torch.Tensor], masks: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity ``data - noise``.

    data, noise: per group ``(B, N_g, D_g)``; t: ``(B,)`` in [0, 1]; labels: ``(B,)``.
    masks: per group, bool broadcastable to ``(B, N_g, D_g)``; False values (patch padding) are not
    part of the loss, which averages over the real values of all groups.
    """
    x_t = [(1 - t[:, None, None]) * x0 + t[:, None, None] * x1 for x0, x1 in zip(noise, data)]
    predicted = velocity(x_t, t, labels)
    masks = masks or [torch.ones((), dtype=torch.bool, device=t.device)] * len(data)
    squared, counted = 0.0, 0.0
    for prediction, x0, x1, mask in zip(predicted, noise, data, masks):
        weight = mask.expand_as(x1).to(x1.dtype)
        squared = squared + ((prediction - (x1 - x0)) ** 2 * weight).sum()
        counted = counted + weight.sum()
    return squared / counted


def guided_velocity(velocity: VelocityFn, x: List[torch.Tensor], t: torch.Tensor, labels: torch.Tensor,
                    null_label: int, guidance: float) -> List[torch.Tensor]:
    """Classifier-free guidance: ``v_uncond + guidance * (v_cond - v_uncond)``, with one network pass
    when guidance is 0 or 1 (or when every label already is the null label)."""
    unconditional = torch.full_like(labels, null_label)
    if guidance == 1.0 or bool((labels == null_label).all()):
        return velocity(x, t, labels)
    if guidance == 0.0:
        return velocity(x, t, unconditional)
    both = velocity([torch.cat([part, part]) for part in x], torch.cat([t, t]), torch.cat([labels, unconditional]))
    out = []
    for part in both:
        conditional, free = part.chunk(2)
        out.append(free + guidance * (conditional - free))
    return out


def solve_flow(velocity: Callable[[List[torch.Tensor], torch.Tensor], List[torch.Tensor]], noise: List[torch.Tensor],
               steps: int, method: str = "euler", progress: bool = True) -> List[torch.Tensor]:
    """Integrate ``dx/dt = velocity(x, t)`` from ``noise`` at t = 0 to t = 1 in ``steps`` equal steps.

    euler: one velocity per step. heun: Euler, then the average of the velocities at both ends of
    the step (two per step; second order). Returns x at t = 1, same shapes as ``noise``.
    """
    if method not in SAMPLERS:
        raise SamplerError(f"unknown sampler {method!r}; choose one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise SamplerError(f"steps must be >= 1, got {steps}")
    batch = noise[0].shape[0]
    times = torch.linspace(0, 1, steps + 1, dtype=noise[0].dtype, device=noise[0].device)
    x = list(noise)
    for index in tqdm(range(steps), desc=f"sampling ({method})", unit="step", disable=not progress):
        t, t_next = times[index], times[index + 1]
        dt = t_next - t
        v = velocity(x, t.expand(batch))
        x_euler = [part + dt * speed for part, speed in zip(x, v)]
        if method == "euler":
            x = x_euler
            continue
        v_next = velocity(x_euler, t_next.expand(batch))
        x = [part + dt * (a + b) / 2 for part, a, b in zip(x, v, v_next)]
    return x


__all__ = ["SAMPLERS", "SamplerError", "flow_matching_loss", "guided_velocity", "logit_normal_times", "solve_flow"]
