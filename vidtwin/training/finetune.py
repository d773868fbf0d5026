"""Initialising a training run from existing weights, and freezing parameters by name.

``model.params.ckpt_path`` may name an official VidTwin ``.ckpt``, a checkpoint written by
``vidtwin train``, a bare state_dict, a ``.safetensors`` file or a ``save_pretrained`` directory. What
the file holds is loaded; what it lacks keeps its fresh initialisation and is reported:

* the autoencoder, strictly (every key must be present unless dropped by ``ignore_keys``);
* the discriminator, strictly, when the file has ``loss.discriminator.*``;
* ``loss.logvar``, and the LPIPS weights (``loss.perceptual_loss.*``) when the loss uses LPIPS.

A tensor whose shape differs from the model's is an error that lists the ``ignore_keys`` which
re-initialise those layers: this is how a KL checkpoint initialises an FSQ model, whose bottleneck
layers (``bottle_down``, ``motion_head``, and ``bottle_up`` / ``motion_emb.0`` when the channel
count changes) have other shapes while every other weight loads.

``ignore_keys`` and ``freeze`` are regular expressions applied with ``re.match`` (anchored at the
start of the name). ``ignore_keys`` sees the official key names: autoencoder keys bare
(``encoder.blocks.0...``, ``decoder.final_layer...``) and loss keys with their ``loss.`` prefix
(``loss.discriminator.main.0.weight``, ``loss.logvar``). ``freeze`` sees the autoencoder's
parameter names (``decoder.blocks.0.attn.qkv.weight``); ``^(?!decoder\\.)`` trains only the decoder.
The discriminator and the learnable log-variance are never frozen by these patterns.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
from torch import nn

from ..state_dict_io import CheckpointError, load_autoencoder_state_dict, read_checkpoint_state_dict, split_state_dict

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


@dataclass
class InitReport:
    """What ``initialise_from_checkpoint`` loaded from ``path``."""

    path: str
    autoencoder_keys: int = 0
    ignored_keys: list[str] = field(default_factory=list)
    kept_initialisation: list[str] = field(default_factory=list)  # autoencoder keys dropped by ignore_keys
    loss_groups: list[str] = field(default_factory=list)  # e.g. ["discriminator", "logvar", "perceptual_net"]

    def summary(self) -> str:
        parts = [f"{self.autoencoder_keys} autoencoder tensors"]
        parts.append("loss: " + (", ".join(self.loss_groups) if self.loss_groups else "nothing (fresh discriminator)"))
        if self.ignored_keys:
            parts.append(f"{len(self.ignored_keys)} keys dropped by ignore_keys")
        if self.kept_initialisation:
            parts.append(f"{len(self.kept_initialisation)} autoencoder tensors keep their fresh initialisation")
        return f"initialised from {self.path}: " + "; ".join(parts)


def _compile(patterns: Iterable[str], what: str) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"{what} pattern {pattern!r} is not a valid regular expression: {error}") from None
    return compiled


def _matches_any(name: str, patterns: Sequence[re.Pattern]) -> bool:
    return any(p.match(name) for p in patterns)


def read_init_state_dict(path: Union[str, Path], allow_unsafe_pickle: bool = False) -> StateDict:
    """All tensors of an initialisation checkpoint (training weights, not EMA), official key names.

    Autoencoder keys come back bare and loss keys under ``loss.``, whichever format the file has.
    """
    state = read_checkpoint_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle, use_ema=False)
    autoencoder, loss, _ = split_state_dict(state)
    return {**autoencoder, **{f"loss.{k}": v for k, v in loss.items()}}


def perceptual_state_dict(state: StateDict) -> StateDict:
    """The ``loss.perceptual_loss.*`` tensors of ``state`` (prefix kept), possibly empty."""
    return {k: v for k, v in state.items() if k.startswith("loss.perceptual_loss.")}


def drop_ignored(state: StateDict, ignore_keys: Sequence[str]) -> tuple[StateDict, list[str]]:
    """Remove the keys matched by any ``ignore_keys`` regex; return (kept, dropped names)."""
    patterns = _compile(ignore_keys, "ignore_keys")
    dropped = sorted(k for k in state if _matches_any(k, patterns))
    for key in dropped:
        logger.info("ignore_keys: not loading %s", key)
    return {k: v for k, v in state.items() if k not in set(dropped)}, dropped


def initialise_from_checkpoint(
    autoencoder: nn.Module,
    loss: nn.Module,
    path: Union[str, Path],
    ignore_keys: Sequence[str] = (),
    state: StateDict | None = None,
    allow_unsafe_pickle: bool = False,
) -> InitReport:
    """Load ``path`` into ``autoencoder`` (a VidTwin) and ``loss`` (a VidTwinLoss).

    ``state`` may pass the tensors already read with ``read_init_state_dict``. Raises
    ``CheckpointError`` naming the keys when the autoencoder or discriminator does not match.
    """
    if state is None:
        state = read_init_state_dict(path, allow_unsafe_pickle)
    report = InitReport(path=str(path))
    state, report.ignored_keys = drop_ignored(state, ignore_keys)
    ignored = set(report.ignored_keys)

    ae_state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    if not ae_state:
        raise CheckpointError(f"{path} holds no autoencoder weights")
    dropped_ae = sorted(k for k in autoencoder.state_dict() if k in ignored)
    if dropped_ae:
        # Keys dropped on purpose keep their fresh values; every other key must still be present.
        merged = {k: v.detach().clone() for k, v in autoencoder.state_dict().items() if k in ignored}
        merged.update(ae_state)
        ae_state = merged
        report.kept_initialisation = dropped_ae
    _refuse_reshaped_keys(autoencoder, ae_state, path)
    try:
        load_autoencoder_state_dict(autoencoder, ae_state)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    report.autoencoder_keys = len(autoencoder.state_dict()) - len(dropped_ae)

    loss_state = {k[len("loss."):]: v for k, v in state.items() if k.startswith("loss.")}
    has_discriminator = any(k.startswith("discriminator.") for k in loss_state)
    discriminator_intact = not any(k.startswith("loss.discriminator.") for k in ignored)
    if loss_state:
        try:
            report.loss_groups = loss.load_official_state_dict(
                loss_state, strict_discriminator=has_discriminator and discriminator_intact
            )
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None
    if not discriminator_intact:
        logger.info("discriminator keys dropped by ignore_keys: the discriminator starts from scratch")
    elif not has_discriminator:
        logger.warning("%s has no discriminator weights: the discriminator starts from scratch", path)
    logger.info(report.summary())
    return report


def _refuse_reshaped_keys(autoencoder: nn.Module, state: StateDict, path: Union[str, Path]) -> None:
    """Raise ``CheckpointError`` naming the ``ignore_keys`` that would re-initialise the layers whose
    shapes differ (e.g. the bottleneck layers when a KL checkpoint initialises an FSQ model)."""
    own = autoencoder.state_dict()
    reshaped = sorted(k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
    if not reshaped:
        return
    layers = sorted({key.rsplit(".", 1)[0] for key in reshaped})
    patterns = ", ".join(f"'{re.escape(layer)}\\.'" for layer in layers)
    raise CheckpointError(
        f"{path}: {len(reshaped)} tensors have other shapes in this model ({', '.join(reshaped[:6])}"
        f"{' ...' if len(reshaped) > 6 else ''}); to re-initialise those layers, set "
        f"model.params.ignore_keys: [{patterns}]"
    )


def freeze_parameters(module: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on the parameters whose names match a ``freeze`` regex.

    Returns the frozen names. A pattern that matches no parameter is an error (most likely a typo),
    and so is freezing every parameter.
    """
    compiled = _compile(patterns, "freeze")
    names = [name for name, _ in module.named_parameters()]
    for pattern in compiled:
        if not any(pattern.match(name) for name in names):
            raise ValueError(f"freeze pattern {pattern.pattern!r} matches no autoencoder parameter (e.g. {names[0]})")
    frozen = []
    for name, param in module.named_parameters():
        if _matches_any(name, compiled):
            param.requires_grad_(False)
            frozen.append(name)
    if frozen and len(frozen) == len(names):
        raise ValueError("the freeze patterns freeze every autoencoder parameter; nothing would be trained")
    if frozen:
        count = sum(p.numel() for n, p in module.named_parameters() if n in set(frozen))
        logger.info("froze %d autoencoder tensors (%s parameters)", len(frozen), f"{count:,}")
    return frozen
