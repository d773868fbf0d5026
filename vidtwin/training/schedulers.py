"""Learning-rate schedules driven by the training module's own update counter.

With manual optimization and two optimizers Lightning's ``global_step`` advances twice per
update, so the schedules here are plain functions ``step -> learning rate`` that the training
module evaluates with its own counter (the number of autoencoder updates applied so far) and
writes into the optimizer's param groups before every update. Because the learning rate is a
pure function of that counter, a resumed run reproduces the schedule exactly once the counter is
restored; there is no scheduler state to save.

Config format (``model.params.lr_scheduler_g`` / ``lr_scheduler_d``)::

    {target: warmup_cosine, params: {lr_start: 0, lr_max: 3e-5, lr_min: 0, warmup_steps: 5000}}
    {target: inverse_sqrt,  params: {num_warmup_steps: 2000}}
    {target: constant,      params: {warmup_steps: 0}}
    null                    # constant learning_rate

The official target names (``vidtok.models.vidtwin_ae.LambdaWarmUpCosineScheduler``,
``inverse_sqrt``) are accepted, so official configs can be pasted unchanged.

Semantics match the official implementation:

* ``warmup_cosine`` returns ABSOLUTE learning rates and ignores ``learning_rate``: a linear ramp
  from ``lr_start`` to ``lr_max`` over ``warmup_steps`` updates, then a half cosine from
  ``lr_max`` down to ``lr_min`` that reaches ``lr_min`` at ``total_steps`` and stays there.
  ``warmup_rate`` (a fraction of ``total_steps``) may replace ``warmup_steps``.
  ``total_steps`` is a number of updates, or ``run`` (the default: the length of this run, so the
  rate reaches ``lr_min`` at its end), or ``official``: what the official training computes,
  ``len(train loader) * max_epochs`` with the loader of a single process. With N processes (DDP)
  each one sees 1/N of the batches, so that cosine spans N times the actual run and its rate has
  only fallen to about ``lr_min + (lr_max - lr_min) * (1 + cos(pi / N)) / 2`` at the end (0.85 of
  ``lr_max`` for N = 4 and ``lr_min = 0``).
* ``inverse_sqrt`` multiplies ``learning_rate`` by the factor of
  ``transformers.get_inverse_sqrt_schedule``: ``step / warmup`` during warm-up, then
  ``1 / sqrt((step + timescale - warmup) / timescale)`` with ``timescale = warmup`` by default.
* ``constant`` multiplies ``learning_rate`` by a linear warm-up factor, then 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..config import CONSTANT_SCHEDULE_NAMES, COSINE_SCHEDULE_NAMES, INVERSE_SQRT_SCHEDULE_NAMES

LRSchedule = Callable[[int], float]


@dataclass(frozen=True)
class WarmupCosine:
    """Absolute learning rate: linear warm-up from ``lr_start`` to ``lr_max``, then cosine to ``lr_min``."""

    lr_max: float
    total_steps: int
    lr_start: float = 0.0
    lr_min: float = 0.0
    warmup_steps: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr_start + (self.lr_max - self.lr_start) * step / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / decay_steps, 1.0)
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class InverseSqrt:
    """``base_lr`` times the inverse-square-root factor of ``transformers.get_inverse_sqrt_schedule``."""

    base_lr: float
    num_warmup_steps: int
    timescale: Optional[int] = None

    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return self.base_lr * step / max(1, self.num_warmup_steps)
        timescale = self.timescale or self.num_warmup_steps or 10_000
        shift = timescale - self.num_warmup_steps
        return self.base_lr / math.sqrt((step + shift) / timescale)


@dataclass(frozen=True)
class ConstantWithWarmup:
    """``base_lr`` after a linear warm-up of ``warmup_steps`` updates (none by default)."""

    base_lr: float
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        return self.base_lr


def _matches(target: str, names: tuple[str, ...]) -> bool:
    """True when ``target`` is one of ``names`` or a dotted path ending in one of them."""
    return any(target == name or target.endswith("." + name) for name in names)


def build_lr_schedule(
    config: Optional[Mapping[str, Any]],
    base_lr: float,
    total_steps: Optional[Callable[[], int]] = None,
    official_total_steps: Optional[Callable[[], int]] = None,
) -> LRSchedule:
    """Build a ``step -> lr`` function from a ``{target, params}`` config.

    ``base_lr`` is the module's ``learning_rate`` (used by ``inverse_sqrt`` and ``constant``).
    ``total_steps`` is called only when a cosine schedule needs the run length (its config has no
    ``total_steps`` or ``total_steps: run``); ``official_total_steps`` when it asks for
    ``total_steps: official``. The training module passes both, in updates.
    Raises ``ValueError`` naming the problem for an unknown target or missing parameter.
    """
    if config is None:
        return ConstantWithWarmup(base_lr=base_lr)
    target = str(config.get("target", ""))
    params = dict(config.get("params") or {})
    # The official configs carry a Lightning `frequency` entry; we step every update.
    params.pop("frequency", None)
    params.pop("verbosity_interval", None)
    try:
        if _matches(target, COSINE_SCHEDULE_NAMES):
            warmup_rate = params.pop("warmup_rate", -1)
            length = params.get("total_steps", "run")
            lengths = {"run": total_steps, "official": official_total_steps}
            if isinstance(length, str):
                if length not in lengths:
                    raise ValueError(f"warmup_cosine total_steps must be a number, run or official, got {length!r}")
                if lengths[length] is None:
                    raise ValueError(f"warmup_cosine needs total_steps (set a number in the scheduler params, not {length})")
                params["total_steps"] = int(lengths[length]())
            if warmup_rate is not None and warmup_rate >= 0:
                params["warmup_steps"] = params["total_steps"] * warmup_rate
            if params.get("warmup_steps", 0) < 0:  # the official "unset" value
                params["warmup_steps"] = 0
            return WarmupCosine(**params)
        if _matches(target, INVERSE_SQRT_SCHEDULE_NAMES):
            return InverseSqrt(base_lr=base_lr, **params)
        if _matches(target, CONSTANT_SCHEDULE_NAMES):
            return ConstantWithWarmup(base_lr=base_lr, **params)
    except TypeError as err:  # unknown or missing parameter names
        raise ValueError(f"learning-rate schedule {target!r}: {err}") from None
    raise ValueError(
        f"unknown learning-rate schedule target {target!r}; use one of warmup_cosine, inverse_sqrt, constant"
    )
