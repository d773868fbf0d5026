"""``AutoencoderVidTwin``: the VidTwin autoencoder as a diffusers model.

    >>> from vidtwin.diffusers import AutoencoderVidTwin
    >>> vae = AutoencoderVidTwin.from_pretrained("vidtwin-diffusers")   # a folder or a Hub repo
    >>> posterior = vae.encode(video).latent_dist    # video (B, 3, T, H, W) in [-1, 1]
    >>> z = posterior.mode()                         # (B, C, N): the packed latent (vidtwin.diffusers.layout)
    >>> video = vae.decode(z).sample

It wraps a :class:`vidtwin.models.VidTwin` built from the same settings (registered as
``autoencoder``, so weight names are ``autoencoder.<official name>``), and computes exactly what it
computes. The config carries every ``VidTwinConfig`` field as a flat key, the packed layout
(``latent_layout``) and the latent statistics: ``latents_mean`` / ``latents_std`` per packed
channel (the form of Wan and Mochi) and ``latent_statistics`` per latent and channel
(``{"mean": {"structure": [...], "dynamics_x": [...], "dynamics_y": [...]}, "std": {...}}``, what
``vidtwin latent-stats`` computes and the generator uses). :meth:`normalize_latents` /
:meth:`denormalize_latents` apply them.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..inference.tiling import blend_tiles, iter_tiles, make_tile_grid
from ..models.config import LATENT_NAMES, VidTwinConfig
from ..models.vidtwin_ae import DECODE_PARTS, VidTwin, VidTwinLatents, VidTwinTokens
from .layout import PackedLatentLayout, check_layout_record

# Keys of the diffusers config besides the VidTwinConfig fields.
EXTRA_CONFIG_DEFAULTS = {
    "latents_mean": None,  # [C] floats: per packed channel (Wan / Mochi form); None: not computed
    "latents_std": None,  # [C] floats
    "latent_statistics": None,  # {"mean": {latent: [channels]}, "std": {...}} per latent and channel
    "latent_layout": None,  # PackedLatentLayout.to_dict(), filled in at build time; checked on load
    # {"AutoModel": "autoencoder_vidtwin.AutoencoderVidTwin"} in a folder that carries its code
    # (vidtwin.diffusers.remote_code); a parameter so that loading keeps it without a warning.
    "auto_map": None,
}
# The smallest std a normalization divides by (as vidtwin.generation.normalization.MIN_STD).
MIN_STD = 1e-6


def _config_signature(init):
    """Give ``init(self, **settings)`` the signature of every VidTwinConfig field plus the extra
    keys: ``register_to_config`` records, and the diffusers config loader passes, exactly the
    parameters the signature names, so the field list is never copied by hand."""
    fields = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                default=f.default if f.default is not dataclasses.MISSING else f.default_factory())
              for f in dataclasses.fields(VidTwinConfig)]
    extras = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
              for name, default in EXTRA_CONFIG_DEFAULTS.items()]
    init.__signature__ = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                                            *fields, *extras])
    return init


class VidTwinLatentDistribution(DiagonalGaussianDistribution):
    """diffusers' diagonal Gaussian, with ``kl`` and ``nll`` summed over every non-batch axis
    (diffusers sums axes 1-3, made for image latents; the packed latent has 2 or 3)."""

    def _axes(self) -> list:
        return list(range(1, self.mean.dim()))

    def kl(self, other: Optional[DiagonalGaussianDistribution] = None) -> torch.Tensor:
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=self._axes())
        return 0.5 * torch.sum((self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0
                               - self.logvar + other.logvar, dim=self._axes())

    def nll(self, sample: torch.Tensor, dims=None) -> torch.Tensor:
        return super().nll(sample, dims=self._axes() if dims is None else dims)


@dataclass
class AutoencoderVidTwinOutput(AutoencoderKLOutput):
    """``encode``'s output.

    latent_dist: the posterior over the packed latent ``(B, C, N)`` (``(B, C, tiles, N)`` tiled);
        ``.mode()`` is what ``VidTwin.encode`` returns in eval mode, packed. FSQ models: a
        deterministic distribution at the quantized codes.
    structure, dynamics_x, dynamics_y: the posterior of each latent in VidTwin's own shapes
        (``(B, d_S, Q, h_S, w_S)``, ``(B, d_D, T, w_D)``, ``(B, d_D, T, h_D)``; tiled: B * tiles
        rows, clip-major). None for a tiled encode.
    indices: FSQ models: the packed integer tokens ``(B, N)`` (tiled ``(B, tiles, N)``); else None.
    """

    structure: Optional[DiagonalGaussianDistribution] = None
    dynamics_x: Optional[DiagonalGaussianDistribution] = None
    dynamics_y: Optional[DiagonalGaussianDistribution] = None
    indices: Optional[torch.Tensor] = None


class AutoencoderVidTwin(ModelMixin, ConfigMixin):
    """VidTwin as a diffusers model (see the module docstring); the settings are ``VidTwinConfig``'s
    fields plus ``latents_mean``, ``latents_std``, ``latent_statistics`` and ``latent_layout``.

    Videos are ``(B, 3, T, H, W)`` in [-1, 1] with ``(T, H, W)`` the model's ``input_size``;
    with :meth:`enable_tiling`, frames of any size (the CLI's ``--spatial tile``).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    @_config_signature
    def __init__(self, **settings):
        super().__init__()
        model_settings = {name: settings[name] for name in settings if name not in EXTRA_CONFIG_DEFAULTS}
        model_config = VidTwinConfig.from_dict(model_settings)
        self.autoencoder = VidTwin(model_config)
        self._buffers_follow_default_dtype()
        self.layout = PackedLatentLayout(model_config)
        check_layout_record(settings.get("latent_layout"), self.layout)
        self.register_to_config(latent_layout=self.layout.to_dict())
        for name in ("latents_mean", "latents_std"):
            values = settings.get(name)
            if values is not None and len(values) != self.layout.channels:
                raise ValueError(f"{name} has {len(values)} values; the packed latent has {self.layout.channels} channels")
        if settings.get("latent_statistics") is not None:
            for kind in ("mean", "std"):  # checks every latent's channel count
                self.layout.per_latent_map(settings["latent_statistics"][kind], 0.0)
        self.use_slicing = False
        self.use_tiling = False
        self.tile_overlap = min(model_config.input_size[1:]) // 4  # vidtwin.inference.pipeline.default_tile_overlap

    def _buffers_follow_default_dtype(self) -> None:
        """diffusers builds a model with ``torch_dtype`` as the default dtype; VidTwin makes its fixed
        position embeddings float32 whatever the default, so here they take the default like the
        parameters (float32 unless diffusers says otherwise)."""
        dtype = torch.get_default_dtype()
        for module in self.autoencoder.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer.is_floating_point() and buffer.dtype != dtype:
                    setattr(module, name, buffer.to(dtype))

    # ------------------------------------------------------------------ properties
    @property
    def model_config(self) -> VidTwinConfig:
        """The ``VidTwinConfig`` the wrapped model was built from."""
        return self.autoencoder.config

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """``(T, H, W)`` of one model input."""
        return self.autoencoder.input_size

    @property
    def has_tokens(self) -> bool:
        """FSQ models: latents are integer tokens (``encode(...).indices``, ``decode_from_indices``)."""
        return self.autoencoder.structure_regularizer.has_tokens

    # ------------------------------------------------------------------ tiling and slicing
    def enable_tiling(self, tile_overlap: Optional[int] = None) -> None:
        """Encode frames of any size in overlapping model-sized tiles, and blend decoded tiles back
        (:mod:`vidtwin.inference.tiling`, the ``vidtwin reconstruct --spatial tile`` path).

        tile_overlap: pixels shared by neighbouring tiles; default a quarter of the smaller tile side.
        """
        height, width = self.input_size[1:]
        if tile_overlap is not None:
            if not 0 <= int(tile_overlap) < min(height, width):
                raise ValueError(f"tile_overlap must be in [0, {min(height, width) - 1}] for {height}x{width} tiles, got {tile_overlap}")
            self.tile_overlap = int(tile_overlap)
        self.use_tiling = True

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def enable_slicing(self) -> None:
        """Run a batch one clip (or one tile) at a time: less memory, the same result."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    def _tiled(self, frame_size) -> bool:
        return self.use_tiling and tuple(frame_size) != tuple(self.input_size[1:])

    def _per_clip(self, function, batch: torch.Tensor):
        """``function(batch)``, or, with slicing, on one row at a time and concatenated."""
        if not self.use_slicing or batch.shape[0] <= 1:
            return function(batch)
        results = [function(row) for row in batch.split(1)]
        if isinstance(results[0], torch.Tensor):
            return torch.cat(results)
        return {name: torch.cat([result[name] for result in results]) for name in results[0]}

    # ------------------------------------------------------------------ encode
    def _posterior_parts(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Each latent's regularizer input: Gaussian moments ``(B, 2C, ...)`` (kl) or codes ``(B, C, ...)`` (fsq)."""
        vae = self.autoencoder
        vae._check_video(video)
        tokens = vae.encoder(video)  # (B, hidden, t, h, w)
        heads = dict(zip(LATENT_NAMES, (vae._structure_head(tokens), *vae._dynamics_heads(tokens))))
        if not self.has_tokens:
            return heads
        regularizers = {"structure": vae.structure_regularizer, "dynamics_x": vae.dynamics_regularizer,
                        "dynamics_y": vae.dynamics_regularizer}
        return {name: regularizers[name](head, False)[0] for name, head in heads.items()}

    def _distribution(self, parts: torch.Tensor) -> VidTwinLatentDistribution:
        if self.has_tokens:  # codes: a point mass
            return VidTwinLatentDistribution(torch.cat([parts, torch.zeros_like(parts)], dim=1), deterministic=True)
        return VidTwinLatentDistribution(parts)

    def _pack_moments(self, parts: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-latent moments or codes -> packed moments ``(B, 2C, N)`` (kl) or codes ``(B, C, N)`` (fsq)."""
        if self.has_tokens:
            return self.layout.pack(parts)  # (B, C, N)
        means = {name: value.chunk(2, dim=1)[0] for name, value in parts.items()}
        logvars = {name: value.chunk(2, dim=1)[1] for name, value in parts.items()}
        # Channel padding gets mean 0 and the smallest variance, so a sample keeps it at 0.
        mask = self.layout.valid_mask().to(parts["structure"].device)
        packed_logvar = torch.where(mask, self.layout.pack(logvars), torch.full_like(mask, -30.0, dtype=means["structure"].dtype))
        return torch.cat([self.layout.pack(means), packed_logvar], dim=1)  # (B, 2C, N)

    def _indices(self, parts: Dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.autoencoder.latents_to_tokens(VidTwinLatents(*(parts[name] for name in LATENT_NAMES)))
        return self.layout.pack_tokens(tokens)  # (B, N)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Union[AutoencoderVidTwinOutput, tuple]:
        """``(B, 3, T, H, W)`` in [-1, 1] -> :class:`AutoencoderVidTwinOutput`.

        ``return_dict=False`` gives ``(latent_dist,)``, or for FSQ models ``(codes, indices)`` as
        diffusers' ``AutoencoderVidTok`` does. With tiling enabled, frames larger or smaller than
        the model's give one latent per tile: ``(B, C, tiles, N)``.
        """
        if x.dim() == 5 and self._tiled(x.shape[-2:]):
            return self._tiled_encode(x, return_dict)
        parts = self._per_clip(self._posterior_parts, x)
        packed = self._distribution(self._pack_moments(parts))
        indices = self._indices(parts) if self.has_tokens else None
        if not return_dict:
            return (packed.mode(), indices) if self.has_tokens else (packed,)
        return AutoencoderVidTwinOutput(latent_dist=packed, indices=indices,
                                        **{name: self._distribution(parts[name]) for name in LATENT_NAMES})

    def _tiled_encode(self, x: torch.Tensor, return_dict: bool):
        batch, height, width = x.shape[0], *x.shape[-2:]
        grid = make_tile_grid(height, width, tuple(self.input_size[1:]), self.tile_overlap)
        tiles = torch.stack([tile for clip in x for tile in iter_tiles(clip, grid)])  # (B * tiles, 3, T, h, w)
        parts = self._per_clip(self._posterior_parts, tiles)
        moments = self._pack_moments(parts)  # (B * tiles, 2C or C, N)
        moments = moments.reshape(batch, grid.num_tiles, *moments.shape[1:]).transpose(1, 2)  # (B, 2C or C, tiles, N)
        packed = self._distribution(moments)
        indices = self._indices(parts).reshape(batch, grid.num_tiles, -1) if self.has_tokens else None  # (B, tiles, N)
        if not return_dict:
            return (packed.mode(), indices) if self.has_tokens else (packed,)
        return AutoencoderVidTwinOutput(latent_dist=packed, indices=indices)

    # ------------------------------------------------------------------ decode
    def _latents(self, z) -> VidTwinLatents:
        if isinstance(z, VidTwinLatents):
            return z
        if isinstance(z, dict):
            return VidTwinLatents(*(z[name] for name in LATENT_NAMES))
        return VidTwinLatents(**self.layout.unpack(z))

    def indices_to_latent(self, token_indices: torch.Tensor) -> torch.Tensor:
        """FSQ models: packed integer tokens ``(B, N)`` (or ``(B, tiles, N)``) -> the packed codes
        ``(B, C, N)`` (``(B, C, tiles, N)``) that :meth:`decode` takes (``AutoencoderVidTok``'s name)."""
        if token_indices.dim() == 3:  # tiled: (B, tiles, N)
            batch, tiles = token_indices.shape[:2]
            codes = self.indices_to_latent(token_indices.flatten(0, 1))  # (B * tiles, C, N)
            return codes.reshape(batch, tiles, *codes.shape[1:]).transpose(1, 2)  # (B, C, tiles, N)
        tokens = VidTwinTokens(**self.layout.unpack_tokens(token_indices.long()))
        return self.layout.pack(self.autoencoder.detokenize(tokens))  # (B, C, N)

    def _decode_clips(self, z, only: Optional[str]) -> torch.Tensor:
        latents = self._latents(z)
        if not self.use_slicing or latents.structure.shape[0] <= 1:
            return self.autoencoder.decode(latents, only=only)
        rows = zip(*(getattr(latents, name).split(1) for name in LATENT_NAMES))
        return torch.cat([self.autoencoder.decode(VidTwinLatents(*row), only=only) for row in rows])

    @apply_forward_hook
    def decode(self, z, return_dict: bool = True, decode_from_indices: bool = False,
               frame_size: Optional[Tuple[int, int]] = None, only: Optional[str] = None) -> Union[DecoderOutput, tuple]:
        """Latents -> ``DecoderOutput(sample=video)``, video ``(B, 3, T, H, W)`` in about [-1, 1].

        z: the packed latent ``(B, C, N)``, a :class:`~vidtwin.models.VidTwinLatents` (or a dict of
            its three tensors), FSQ token indices ``(B, N)`` with ``decode_from_indices=True``, or a
            tiled latent ``(B, C, tiles, N)`` (``(B, tiles, N)`` indices) with ``frame_size=(H, W)``.
        only: ``"structure"`` or ``"dynamics"`` decodes one part alone (``VidTwin.decode``).
        """
        if only not in DECODE_PARTS:
            raise ValueError(f"only must be one of {DECODE_PARTS}, got {only!r}")
        if decode_from_indices:
            z = self.indices_to_latent(z)
        if isinstance(z, torch.Tensor) and z.dim() == 4:
            video = self._tiled_decode(z, frame_size, only)
        else:
            video = self._decode_clips(z, only)
        return DecoderOutput(sample=video) if return_dict else (video,)

    def _tiled_decode(self, z: torch.Tensor, frame_size, only: Optional[str]) -> torch.Tensor:
        self.layout.check_packed(z, tiled=True)
        if frame_size is None:
            raise ValueError("a tiled latent (B, C, tiles, N) decodes with frame_size=(H, W), the size of the frames it was encoded from")
        grid = make_tile_grid(int(frame_size[0]), int(frame_size[1]), tuple(self.input_size[1:]), self.tile_overlap)
        batch, tiles = z.shape[0], z.shape[2]
        if tiles != grid.num_tiles:
            raise ValueError(f"the latent holds {tiles} tiles; {frame_size[0]}x{frame_size[1]} frames with overlap "
                             f"{self.tile_overlap} make {grid.num_tiles}")
        decoded = self._decode_clips(z.transpose(1, 2).flatten(0, 1), only)  # (B * tiles, 3, T, h, w)
        decoded = decoded.reshape(batch, tiles, *decoded.shape[1:])
        return torch.stack([blend_tiles(list(clip), grid) for clip in decoded])  # (B, 3, T, H, W)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False, return_dict: bool = True,
                generator: Optional[torch.Generator] = None) -> Union[DecoderOutput, tuple]:
        """Encode then decode (the posterior's mode, or a sample with ``sample_posterior``)."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        frame_size = tuple(sample.shape[-2:]) if z.dim() == 4 else None
        return self.decode(z, return_dict=return_dict, frame_size=frame_size)

    # ------------------------------------------------------------------ latent statistics
    def latent_statistics_maps(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)``, each ``(C, N)`` float64 on the packed layout: the per-latent statistics
        (``latent_statistics``) when the config has them, else the per-channel ones
        (``latents_mean`` / ``latents_std``). Padding gets mean 0, std 1."""
        per_latent = self.config.latent_statistics
        if per_latent is not None:
            return self.layout.per_latent_map(per_latent["mean"], 0.0), self.layout.per_latent_map(per_latent["std"], 1.0)
        if self.config.latents_mean is None or self.config.latents_std is None:
            raise ValueError("this model's config holds no latent statistics; compute them with `vidtwin latent-stats` "
                             "and write them with `vidtwin convert --latent-stats`")
        mask = self.layout.valid_mask()
        mean = torch.where(mask, self.layout.per_channel_map(self.config.latents_mean), torch.zeros((), dtype=torch.float64))
        std = torch.where(mask, self.layout.per_channel_map(self.config.latents_std), torch.ones((), dtype=torch.float64))
        return mean, std

    def _statistics_like(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.latent_statistics_maps()
        shape = (1, self.layout.channels, *([1] * (z.dim() - 3)), self.layout.num_tokens)  # (1, C, [1,] N)
        return (mean.reshape(shape).to(device=z.device, dtype=z.dtype),
                std.clamp_min(MIN_STD).reshape(shape).to(device=z.device, dtype=z.dtype))

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Packed latents in the autoencoder's scale -> mean 0, std 1 per channel (what a diffusion model learns)."""
        mean, std = self._statistics_like(z)
        return (z - mean) / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize_latents`: a diffusion model's output -> what :meth:`decode` takes."""
        mean, std = self._statistics_like(z)
        return z * std + mean


__all__ = ["AutoencoderVidTwin", "AutoencoderVidTwinOutput", "VidTwinLatentDistribution", "EXTRA_CONFIG_DEFAULTS"]
