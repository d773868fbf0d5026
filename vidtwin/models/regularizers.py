"""The latent regularizers: what turns a bottleneck head's output into a latent.

``regularizer: kl`` (the published model) reads the head output as a diagonal Gaussian; ``fsq``
quantizes it with finite scalar quantization (Mentzer et al., 2023) into integer tokens.

Every regularizer implements :class:`LatentRegularizer`, and the rest of the package asks it
instead of testing the config's string: the head channels it needs, the latents' extra fields
(``kl`` or ``quantization``), the loss terms, whether latents are discrete tokens, tokens to and
from codes, and how latent files and datasets store them (:meth:`LatentRegularizer.stored_codebook`).
:data:`REGULARIZERS` maps each config value to its class. To add one:

- subclass :class:`LatentRegularizer` and add it to :data:`REGULARIZERS` (and its name to
  ``vidtwin.models.config.REGULARIZERS``, which the config checks without importing torch);
- give any new config field a default: latent files identify their model by a hash of the config,
  and fields added later are left out of it at their default (``vidtwin.latents.latent_file``),
  so files written before the field still match;
- weights of a regularizer live under ``structure_regularizer.`` / ``dynamics_regularizer.``,
  which ``vidtwin.state_dict_io.AUTOENCODER_MODULES`` lists, so that checkpoints and fine-tuning
  keep them.

FSQ is ``vector_quantize_pytorch.FSQ``: per channel, ``tanh`` bounds the value to ``L_i`` levels
and a straight-through ``round`` picks one; a token's index is ``sum_i digit_i * prod(levels[:i])``
with ``digit_i`` in ``0..L_i-1``, codes are ``(digit_i - L_i // 2) / (L_i // 2)`` in [-1, 1]: the
layout and bounding of VidTok's ``FSQRegularizer``. :class:`FSQRegularizer` adds what VidTok has
on top: the entropy loss (annealed by the training module) and the commitment loss. The package
is imported when an FSQ regularizer is built, so that code which only reads float latents does
not pay for it.
"""

from __future__ import annotations

import math
from typing import ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import LATENT_NAMES
from .distributions import DiagonalGaussian

# VidTok's constants: the softmax over codes uses logits 2 * inv_temperature * <z, code>, and the
# batch's code entropy counts with weight diversity_gamma.
ENTROPY_INV_TEMPERATURE = 100.0
ENTROPY_DIVERSITY_GAMMA = 1.0


class LatentRegularizer(nn.Module):
    """What every regularizer answers; see the module docstring for how to add one."""

    #: the config value (``regularizer: <kind>``)
    kind: ClassVar[str]
    #: latents are discrete tokens: tokenize/detokenize work, files and datasets store integers
    has_tokens: ClassVar[bool] = False

    def head_channels(self, latent_channels: int) -> int:
        """Channels the bottleneck head must produce for a latent of ``latent_channels``."""
        raise NotImplementedError

    def forward(self, head: torch.Tensor, sample: bool,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """head (B, head_channels, ...) -> (latent (B, C, ...), log of this latent's statistics)."""
        raise NotImplementedError

    def latent_fields(self, logs: Mapping[str, Dict[str, torch.Tensor]], batch_size: int) -> dict:
        """The extra fields of ``VidTwinLatents`` (``kl``, ``quantization``) from the three latents' logs."""
        raise NotImplementedError

    def loss_terms(self, latents, config, step: int) -> Dict[str, torch.Tensor]:
        """The regularization terms of ``latents`` for the loss at training update ``step``, by name."""
        raise NotImplementedError

    def metrics(self, latents) -> Dict[str, torch.Tensor]:
        """What to log about ``latents`` on a validation batch (unprefixed names)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, latent: str) -> "LatentRegularizer":
        """The regularizer of ``latent`` ("structure" or "dynamics") for a ``VidTwinConfig``."""
        raise NotImplementedError

    @classmethod
    def stored_codebook(cls, config: Mapping) -> Optional[dict]:
        """How latent files and datasets store this regularizer's latents: None for float latents,
        else ``{"structure": levels, "dynamics": levels}`` of integer tokens. ``config`` is a plain
        dict of a model config, as latent files record it."""
        return None

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"{self.kind} latents are continuous and have no token indices")

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"{self.kind} latents are continuous and have no token indices")


class GaussianRegularizer(LatentRegularizer):
    """Diagonal Gaussian latents (``regularizer: kl``): the head gives mean and log-variance."""

    kind = "kl"

    @classmethod
    def from_config(cls, config, latent: str) -> "GaussianRegularizer":
        return cls()

    def head_channels(self, latent_channels: int) -> int:
        return 2 * latent_channels

    def forward(self, moments: torch.Tensor, sample: bool,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """moments (B, 2C, ...) -> (latent (B, C, ...), {"kl_sum": KL summed over every element})."""
        posterior = DiagonalGaussian(moments)
        latent = posterior.sample(generator) if sample else posterior.mode()
        return latent, {"kl_sum": posterior.kl_sum()}

    def latent_fields(self, logs, batch_size: int) -> dict:
        """``kl``: the official KL term, every posterior's KL summed over all elements, over B."""
        return {"kl": sum(log["kl_sum"] for log in logs.values()) / batch_size}

    def loss_terms(self, latents, config, step: int) -> Dict[str, torch.Tensor]:
        if latents.kl is None:
            raise ValueError("latents carry no KL term: pass the output of encode")
        return {"kl_loss": latents.kl}

    def metrics(self, latents) -> Dict[str, torch.Tensor]:
        return {"kl_loss": latents.kl.detach().float()}


class FSQRegularizer(LatentRegularizer):
    """Finite scalar quantization of channel-first latents (``regularizer: fsq``).

    Args:
        levels: levels per channel, e.g. (8, 8, 8, 5, 5, 5): ``prod(levels)`` codes.
        entropy_loss: compute VidTok's entropy loss in training mode (a softmax over every code
            for every token: memory grows with tokens x codes, so it is skipped when unweighted).
        commitment_loss: compute the commitment loss in training mode.
    """

    kind = "fsq"
    has_tokens = True

    def __init__(self, levels: Sequence[int], entropy_loss: bool = False, commitment_loss: bool = False) -> None:
        super().__init__()
        from vector_quantize_pytorch import FSQ  # imported here: several seconds, needed by FSQ models only

        self.levels = tuple(int(v) for v in levels)
        # FSQ computes its codebook when built (a `.item()` that meta tensors cannot answer), so it is
        # built on the CPU even inside a `torch.device("meta")` block: the loaders build models on
        # meta to check a config's sizes against the weights before allocating them.
        with torch.device("cpu"):
            self.fsq = FSQ(levels=list(self.levels))
        self.codebook_size = math.prod(self.levels)
        self.entropy_loss = entropy_loss
        self.commitment_loss = commitment_loss

    def head_channels(self, latent_channels: int) -> int:
        return latent_channels

    @property
    def token_dim(self) -> int:
        return len(self.levels)

    @classmethod
    def from_config(cls, config, latent: str) -> "FSQRegularizer":
        levels = config.structure_levels if latent == "structure" else config.dynamics_levels
        return cls(levels, entropy_loss=config.entropy_loss_weight > 0, commitment_loss=config.commitment_loss_weight > 0)

    @classmethod
    def stored_codebook(cls, config: Mapping) -> Optional[dict]:
        return {"structure": list(config["structure_levels"]), "dynamics": list(config["dynamics_levels"])}

    def latent_fields(self, logs, batch_size: int) -> dict:
        """``quantization``: each latent's codebook statistics and losses, keyed "structure/perplexity", ..."""
        return {"quantization": {f"{name}/{key}": value for name, log in logs.items() for key, value in log.items()}}

    def loss_terms(self, latents, config, step: int) -> Dict[str, torch.Tensor]:
        """``{"aux_loss", "entropy_loss", "commitment_loss"}``, each summed over the three latents, with
        ``aux_loss = w_entropy(step) * entropy_loss + commitment_loss_weight * commitment_loss`` as
        VidTok's FSQRegularizer (the entropy weight anneals, see :func:`entropy_loss_weight_at`)."""
        if latents.quantization is None:
            raise ValueError("latents carry no FSQ statistics: pass the output of encode")
        zero = latents.structure.new_zeros((), dtype=torch.float32)
        terms = {}
        for term in ("entropy_loss", "commitment_loss"):
            values = [latents.quantization[f"{name}/{term}"] for name in LATENT_NAMES
                      if f"{name}/{term}" in latents.quantization]
            terms[term] = sum(values) if values else zero
        aux = (entropy_loss_weight_at(config, step) * terms["entropy_loss"]
               + config.commitment_loss_weight * terms["commitment_loss"])
        return {"aux_loss": aux, **terms}

    def metrics(self, latents) -> Dict[str, torch.Tensor]:
        """Codebook use on the batch (the aux losses are training-only)."""
        return {key: value.float() for key, value in latents.quantization.items()}

    # ------------------------------------------------------------------ codes <-> indices
    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, C, ...) on the FSQ grid -> int64 indices (B, ...) in [0, codebook_size)."""
        channels_last = codes.movedim(1, -1)  # (B, ..., C)
        return self.fsq.codes_to_indices(channels_last.float()).long()

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Integer indices (B, ...) -> float32 codes (B, C, ...) with values in [-1, 1]."""
        if indices.is_floating_point():
            raise TypeError(f"token indices must be integers, got {indices.dtype}")
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= self.codebook_size:
            raise ValueError(
                f"token indices must lie in [0, {self.codebook_size}) for levels {list(self.levels)}, "
                f"got values in [{low}, {high}]"
            )
        flat = indices.reshape(-1).long()  # (N,)
        codes = self.fsq.indices_to_codes(flat)  # (N, C)
        return codes.reshape(*indices.shape, self.token_dim).movedim(-1, 1).contiguous()  # (B, C, ...)

    # ------------------------------------------------------------------ forward
    def forward(self, latent: torch.Tensor, sample: bool = False,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Quantize ``latent`` (B, C, ...) -> (codes (B, C, ...), log).

        ``sample`` and ``generator`` are accepted for the common regularizer call; FSQ is
        deterministic. The log holds ``codebook_usage`` (fraction of the codes used in this batch)
        and ``perplexity`` (exp of the batch's code entropy), and in training mode the unweighted
        ``entropy_loss`` and ``commitment_loss`` when they are switched on.
        """
        if latent.shape[1] != self.token_dim:
            raise ValueError(f"FSQ with levels {list(self.levels)} needs {self.token_dim} channels, got {latent.shape[1]}")
        flat = rearrange(latent, "B C ... -> (B ...) C")  # (N, C): one token per row
        # Quantization runs in float32 whatever the autocast precision (vector_quantize_pytorch
        # upcasts too): the tanh bound must place values exactly between the levels.
        with torch.autocast(device_type=latent.device.type, enabled=False):
            inputs = flat.float()
            rounded, indices = self.fsq(inputs[None])  # (1, N, C), (1, N)
            rounded, indices = rounded[0], indices[0].long()
            # The codes are the exact grid values of the indices, the same tensor `detokenize` rebuilds
            # from a token file, so that decoding a file equals decoding the encoding bit for bit; the
            # gradient still passes straight through the rounding (it is that of `rounded`).
            codes = self.fsq.indices_to_codes(indices) + (rounded - rounded.detach())  # (N, C)
            log = self._usage(indices)
            if self.training and self.entropy_loss:
                log["entropy_loss"] = self._entropy_loss(inputs)
            if self.training and self.commitment_loss:
                log["commitment_loss"] = F.mse_loss(inputs, codes.detach())
        batch_shape = (latent.shape[0], *latent.shape[2:])
        # Contiguous, as a decoded token file is: kernels may pick another summation order for other strides.
        codes = codes.to(latent.dtype).reshape(*batch_shape, self.token_dim).movedim(-1, 1).contiguous()  # (B, C, ...)
        return codes, log

    @torch.no_grad()
    def _usage(self, indices: torch.Tensor) -> Dict[str, torch.Tensor]:
        counts = torch.bincount(indices, minlength=self.codebook_size).float()  # (K,)
        entropy = _entropy(counts / counts.sum(), floor=1e-12)  # unused codes add 0
        return {"codebook_usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}

    def _entropy_loss(self, inputs: torch.Tensor) -> torch.Tensor:
        """VidTok's entropy loss of the unbounded inputs (N, C): mean per-token entropy of a soft
        assignment to every code, minus the entropy of the batch's mean assignment. Low per-token
        entropy makes assignments confident; high batch entropy spreads them over the codebook.

        As in VidTok the assignment logits are inner products with the codes (scaled by
        2 * inv_temperature), not full squared distances.

        Under DDP the batch is every rank's: as VidTok's ``maybe_distributed_mean``, the mean assignment
        is averaged over the ranks before its entropy is taken (see :func:`_mean_over_ranks`).
        """
        codebook = self.fsq.implicit_codebook.to(inputs)  # (K, C)
        logits = 2.0 * ENTROPY_INV_TEMPERATURE * inputs @ codebook.t()  # (N, K)
        probabilities = logits.softmax(dim=-1)
        per_token = _entropy(probabilities).mean()
        batch = _entropy(_mean_over_ranks(probabilities))
        return per_token - ENTROPY_DIVERSITY_GAMMA * batch


def _mean_over_ranks(probabilities: torch.Tensor) -> torch.Tensor:
    """The mean of ``probabilities`` (N, K) over its rows and, when torch.distributed runs with more
    than one process, over every rank's rows: (K,).

    The value is that of one process holding the concatenated batch (rows are counted, so ranks
    may hold different N). The gradient reaches this rank's rows as if the other ranks' mean were
    a constant plus this one's: each rank's gradient is then W times that of the concatenated batch,
    and DDP's averaging over the W ranks makes it that gradient (VidTok's in-place all_reduce gives
    the same).
    """
    local = probabilities.mean(dim=0)  # (K,)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1):
        return local
    rows = probabilities.new_tensor([float(probabilities.shape[0])])
    summed = torch.cat([probabilities.detach().sum(dim=0), rows])  # (K + 1,): one all_reduce for both
    torch.distributed.all_reduce(summed)
    everywhere = summed[:-1] / summed[-1]
    return local + (everywhere - local).detach()


def _entropy(probabilities: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """Entropy along the last axis; probabilities are clamped to ``floor`` inside the log (VidTok's 1e-5)."""
    return -(probabilities * probabilities.clamp_min(floor).log()).sum(dim=-1)


def entropy_loss_weight_at(config, step: int) -> float:
    """The entropy loss weight at update ``step``: ``entropy_loss_annealing_factor`` x the weight at
    update 0, falling linearly to ``entropy_loss_weight`` at ``entropy_loss_annealing_steps``."""
    final = config.entropy_loss_weight
    if step >= config.entropy_loss_annealing_steps:
        return final
    start = config.entropy_loss_annealing_factor * final
    return start - (step / config.entropy_loss_annealing_steps) * (start - final)


REGULARIZERS: Dict[str, type] = {cls.kind: cls for cls in (GaussianRegularizer, FSQRegularizer)}


def regularizer_class(config) -> type:
    """The :class:`LatentRegularizer` subclass of a ``VidTwinConfig`` or a plain config dict."""
    kind = config.get("regularizer", "kl") if isinstance(config, Mapping) else config.regularizer
    return REGULARIZERS[kind]


def build_regularizer(config, latent: str) -> LatentRegularizer:
    """The regularizer of ``latent`` ("structure" or "dynamics") for a ``VidTwinConfig``."""
    return regularizer_class(config).from_config(config, latent)


__all__ = ["LatentRegularizer", "GaussianRegularizer", "FSQRegularizer", "REGULARIZERS", "build_regularizer",
           "entropy_loss_weight_at", "regularizer_class"]
