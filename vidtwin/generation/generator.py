"""The class-conditional flow-matching generator of VidTwin latents.

    from vidtwin.generation import GeneratorConfig, LatentGenerator, LatentNormalization

    config = GeneratorConfig.from_preset("tiny", latent_shapes=autoencoder.config.latent_shapes(), num_classes=40,
                                         normalization=LatentNormalization.fit(batches).to_dict())
    generator = LatentGenerator(config)
    loss = generator.training_loss(batch["latents"], batch["label"])      # latents in the autoencoder's scale
    latents = generator.sample([3, 3, 7], steps=50, guidance=2.0, seed=0)  # dict of the three latents
    video = autoencoder.decode(VidTwinLatents(**latents))

This module is the one place where the latent normalization is applied (in ``training_loss``) and
inverted (in ``sample``): callers always see latents in the autoencoder's own scale.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import UserError
from ..hints import Verbatim, command
from ..pretrained import ModelFormat, PretrainedModel, render_model_card
from .config import GeneratorConfig
from .flow import flow_matching_loss, guided_velocity, logit_normal_times, solve_flow
from .normalization import LatentNormalization, LatentScaler
from .packing import LatentPacking, PackedTokenEmbedding
from .transformer import ConditionedTransformer

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 2.0  # ours; the paper samples its DDPM generator with guidance 5

class GeneratorSampleError(ValueError, UserError):
    """A sampling request that cannot be served (labels out of range, a class-less model asked for a class)."""


# config.json of a save_pretrained folder: {"format": "vidtwin-generator", "format_version": 1,
# "generator": GeneratorConfig dict, "autoencoder": the record of vidtwin.pretrained.autoencoder_record (its
# files, and the weights fingerprint of the training data)}; a `vidtwin train` checkpoint holds
# the same under "vidtwin_generator" (vidtwin.training.generator_module writes it), the weights under
# "generator." and the EMA weights under "ema_state_dict".
GENERATOR_FORMAT = ModelFormat(
    name="vidtwin-generator", version=1, kind="generator", config_key="generator", config_class=GeneratorConfig,
    state_prefix="generator.", checkpoint_key="vidtwin_generator", records_autoencoder=True,
    other_hint="is it an autoencoder's or a world model's? Load those with VidTwin / WorldModel.from_pretrained "
               "(an autoencoder's checkpoint goes to --ckpt)",
    upload_message="Upload VidTwin latent generator",
)

MODEL_CARD = """---
{{ card_data }}
---

# VidTwin latent generator

A class-conditional flow-matching transformer over the latents of a
[VidTwin](https://arxiv.org/abs/2412.17726) video autoencoder ({{ depth }} blocks, width {{ hidden }},
{{ tokens }} tokens per clip, {{ classes }} classes). Decode its samples with the autoencoder it was trained on.

```python
from vidtwin.generation import LatentGenerator

generator = LatentGenerator.from_pretrained("{{ repo_id }}")
latents = generator.sample([0, 1], steps=50, guidance=2.0, seed=0)
```

or from the command line (videos, decoded by the autoencoder its `config.json` names): `GENERATE_COMMAND`.

## Config

```json
{{ config_json }}
```
""".replace("GENERATE_COMMAND", command("generate", "--generator", Verbatim("hf://{{ repo_id }}"), "--all-classes",
                                        "--output", "samples/"))
CARD_TAGS = ["video", "vidtwin", "latent-generator", "flow-matching"]


class LatentGenerator(PretrainedModel, nn.Module):
    """Flow-matching transformer over packed VidTwin latents (see :mod:`vidtwin.generation`).

    Latents in and out are dicts (or ``VidTwinLatents``) of ``structure`` ``(B, d_S, Q, h_S, w_S)``,
    ``dynamics_x`` ``(B, d_D, T, w_D)`` and ``dynamics_y`` ``(B, d_D, T, h_D)``, in the autoencoder's
    scale. Labels are int64 ``(B,)`` in ``[0, num_classes)``; ``num_classes`` itself means "no class".
    ``from_pretrained`` loads a ``save_pretrained`` folder, a `vidtwin train` run folder or checkpoint
    (EMA weights when stored) or a Hub repo (see :mod:`vidtwin.pretrained`).
    """

    pretrained_format = GENERATOR_FORMAT

    def __init__(self, config: Optional[GeneratorConfig] = None):
        super().__init__()
        self.config = config = config or GeneratorConfig()
        self.packing = LatentPacking(config.latent_shapes, config.structure_patch_size, config.dynamics_patch_size)
        self.tokens = PackedTokenEmbedding(self.packing, config.hidden_size)
        self.transformer = ConditionedTransformer(config.hidden_size, config.depth, config.num_heads, config.mlp_ratio,
                                                  config.num_classes)
        stats = (LatentNormalization.from_dict(config.normalization) if config.normalization is not None
                 else LatentNormalization.identity(self.packing.latent_shapes))
        # Buffers, so that any state dict carries the statistics; config.normalization is their
        # initial value, brought up to date by set_normalization and save_pretrained.
        self.scaler = LatentScaler(stats)
        # The autoencoder it was trained with (vidtwin.pretrained.autoencoder_record: its files, the weights
        # fingerprint of the training data), when its files say: `generate` decodes with it, or checks against it.
        self.autoencoder_files: Optional[dict] = None
        self.loaded_from = None  # the file or folder from_pretrained read: where relative recorded paths are looked for

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    @property
    def normalization(self) -> LatentNormalization:
        """The latent statistics in use (a copy; change them with :meth:`set_normalization`)."""
        return self.scaler.stats

    def set_normalization(self, normalization: LatentNormalization) -> None:
        """Use these statistics from now on; they go into the state dict and the saved config."""
        self.scaler.set(normalization)
        self.config.normalization = normalization.to_dict()

    # ------------------------------------------------------------------------ the network
    def velocity(self, x: Sequence[torch.Tensor], t: torch.Tensor, labels: torch.Tensor):
        """Packed noisy latents ``[(B, N_S, D_S), (B, N_D, D_D)]`` at times t ``(B,)`` -> velocities, same shapes."""
        hidden = self.transformer(self.tokens.embed(x), t, labels)  # (B, N, hidden)
        return self.tokens.project(hidden)

    def forward(self, x, t, labels):
        return self.velocity(x, t, labels)

    # ------------------------------------------------------------------------ training
    def training_loss(self, latents, labels: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The flow-matching loss of a batch of latents in the autoencoder's scale (a scalar).

        labels: ``(B,)`` int64, or None to train unconditionally. A share ``class_dropout`` of them
        is replaced by the null label (classifier-free guidance). generator: the random source of
        times, noise and dropout, on the latents' device (None: torch's global one).
        """
        data = self.packing.pack(self.scaler.normalize(latents))  # [(B, N_S, D_S), (B, N_D, D_D)]
        batch, device, dtype = data[0].shape[0], data[0].device, data[0].dtype
        labels = self._training_labels(labels, batch, device, generator)
        t = logit_normal_times(batch, self.config.time_logit_mean, self.config.time_logit_std, device, dtype, generator)
        noise = [torch.randn(part.shape, device=device, dtype=dtype, generator=generator) for part in data]
        masks = self.packing.valid_mask(device)
        return flow_matching_loss(self.velocity, data, labels, t, noise, masks)

    def _training_labels(self, labels, batch: int, device, generator) -> torch.Tensor:
        if labels is None or self.config.num_classes == 0:
            return torch.full((batch,), self.null_label, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, device=device).long()
        self._check_labels(labels)
        dropped = torch.rand(batch, device=device, generator=generator) < self.config.class_dropout
        return torch.where(dropped, torch.full_like(labels, self.null_label), labels)

    def _check_labels(self, labels: torch.Tensor) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.null_label):
            raise GeneratorSampleError(
                f"class labels must be in [0, {self.config.num_classes}) ({self.config.num_classes} means no class); "
                f"got {labels.tolist()}"
            )

    def class_labels(self, classes: Sequence[Union[int, str]]) -> List[int]:
        """Class names (``config.class_names``) or indices (ints or digit strings) -> label indices.

        A name wins over an index of the same spelling. A digit string that is no name, given to a
        generator whose names are numbers (``10`` ... ``100``), is refused as ambiguous: the user
        most likely meant a name. An unknown name or an index out of range raises
        GeneratorSampleError naming the known classes.
        """
        names = self.config.class_names or []
        numbered = any(_is_whole_number(name) for name in names)
        labels = []
        for value in classes:
            text = str(value).strip()
            if text in names:
                labels.append(names.index(text))
            elif _is_whole_number(text) and numbered:
                raise GeneratorSampleError(
                    f"class {text!r} is ambiguous: no class has that name, and the classes are named by numbers "
                    f"({_shown(names)}), so it is no index either; give one of the names")
            elif _is_whole_number(text) and 0 <= int(text) < self.config.num_classes:
                labels.append(int(text))
            else:
                known = _shown(names) if names else f"indices 0 to {self.config.num_classes - 1}"
                if self.config.num_classes == 0:
                    known = "none: this generator is unconditional"
                raise GeneratorSampleError(f"unknown class {text!r}; known classes: {known}")
        return labels

    # ------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, labels: Union[Sequence[int], torch.Tensor, None] = None, num_samples: Optional[int] = None,
               steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, method: str = "euler",
               seed: Optional[int] = 0, progress: bool = True, device=None, dtype=None) -> Dict[str, torch.Tensor]:
        """Generate latents, in the autoencoder's scale, ready for its ``decode``.

        labels: one class per sample; None for ``num_samples`` unconditional samples.
        guidance: classifier-free guidance scale (1: the conditional model alone; 0: the
            unconditional model alone; ignored for unconditional samples). method: "euler" or "heun".
        seed: the same seed gives the same latents (the noise is drawn on the CPU, so also on any
            device); None draws from torch's global generator.
        device, dtype: of the noise and the returned latents (default: the model's parameters').
        Returns ``{"structure": (B, d_S, Q, h_S, w_S), "dynamics_x": (B, d_D, T, w_D), "dynamics_y": (B, d_D, T, h_D)}``.
        """
        parameter = next(self.parameters())
        device, dtype = device or parameter.device, dtype or parameter.dtype
        if labels is not None and self.config.num_classes == 0:
            raise GeneratorSampleError("this generator is unconditional (no classes); sample without labels")
        if labels is None:
            if num_samples is None:
                raise GeneratorSampleError("give labels or num_samples")
            labels = torch.full((num_samples,), self.null_label, dtype=torch.long)
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        self._check_labels(labels)
        labels = labels.to(device)
        random = torch.Generator(device="cpu")
        if seed is not None:
            random.manual_seed(seed)
        noise = [torch.randn(len(labels), group.num_tokens, group.token_dim, generator=random if seed is not None else None)
                 .to(device=device, dtype=dtype) for group in self.packing.groups]

        def velocity(x, t):
            return guided_velocity(self.velocity, x, t, labels, self.null_label, guidance)

        packed = solve_flow(velocity, noise, steps, method, progress)
        return self.scaler.denormalize(self.packing.unpack(packed))

    # ------------------------------------------------------------------------ files
    # from_pretrained, save_pretrained and push_to_hub come from PretrainedModel (vidtwin.pretrained).
    def pretrained_config(self) -> dict:
        self.config.normalization = self.normalization.to_dict()  # the buffers may have been loaded since
        return self.config.to_dict()

    def model_card(self, repo_id: str = "OWNER/NAME", **fields) -> str:
        """The model card (``README.md``): size, tokens, classes, how to load, the config."""
        values = dict(depth=self.config.depth, hidden=self.config.hidden_size, tokens=self.packing.num_tokens,
                      classes=self.config.num_classes, config_json=json.dumps(self.config.to_dict(), indent=2),
                      repo_id=repo_id)
        return render_model_card(MODEL_CARD, CARD_TAGS, values, fields)


def _is_whole_number(text: str) -> bool:
    """``-12``, ``0``, ``7``: what ``int`` reads as an index (ASCII digits only: ``int("²")`` fails)."""
    return re.fullmatch(r"-?[0-9]+", text) is not None


def _shown(names: Sequence[str], limit: int = 12) -> str:
    """Class names for a message: the first ``limit``, then how many in all."""
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def sample(generator: LatentGenerator, labels=None, **options) -> Dict[str, torch.Tensor]:
    """``generator.sample(labels, **options)``: see :meth:`LatentGenerator.sample`."""
    return generator.sample(labels, **options)


__all__ = ["LatentGenerator", "GeneratorSampleError", "GENERATOR_FORMAT", "sample", "DEFAULT_STEPS", "DEFAULT_GUIDANCE"]
