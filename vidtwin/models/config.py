"""The typed configuration of the VidTwin autoencoder.

Every architectural choice is a field with a default and a one-line comment. YAML files and the
official-format configs are both turned into this dataclass (see `vidtwin.config`), so the model
classes never read raw dictionaries.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

ATTENTION_BACKENDS = ("sdpa", "flash")
REGULARIZERS = ("kl", "fsq")  # the kinds of vidtwin.models.regularizers.REGULARIZERS (checked by a test)
# The three latents of a clip, in the order every tensor tuple, file and dataset uses.
LATENT_NAMES = ("structure", "dynamics_x", "dynamics_y")


@dataclass
class VidTwinConfig:
    # Input video size (frames, height, width) the model is built for.
    input_size: Tuple[int, int, int] = (16, 224, 224)
    # 3D patch size (frames, height, width) of the patch embedding and of unpatchify.
    patch_size: Tuple[int, int, int] = (1, 16, 16)
    # Channels of the input and output video.
    in_channels: int = 3
    # Width of the encoder and decoder transformers (and of every latent embedding).
    hidden_size: int = 768
    # Number of spatio-temporal blocks in the encoder.
    depth: int = 16
    # Attention heads of the encoder.
    num_heads: int = 12
    # Number of blocks in the decoder; None means the same as the encoder.
    decoder_depth: Optional[int] = None
    # Attention heads of the decoder; None means the same as the encoder.
    decoder_num_heads: Optional[int] = None
    # Hidden width of the transformer MLPs, as a multiple of hidden_size.
    mlp_ratio: float = 4.0
    # Whether encoder temporal attention is causal (the published model: yes).
    temporal_causal: bool = True
    # Whether decoder temporal attention is causal; None means the same as the encoder.
    decoder_temporal_causal: Optional[bool] = None
    # Number of learned Q-Former queries Q: the structure latent keeps Q "frames".
    num_queries: int = 16
    # Width of the Q-Former (and of each query).
    query_hidden_size: int = 64
    # Number of Q-Former layers (cross-attention every second layer, as in BLIP-2).
    qformer_num_layers: int = 6
    # Hidden width of the Q-Former MLPs.
    qformer_intermediate_size: int = 768
    # Attention heads of the Q-Former.
    qformer_num_heads: int = 8
    # Dropout inside the Q-Former during training (the BLIP-2 default the published model used).
    qformer_dropout: float = 0.1
    # Channels after the structure branch's first conv; doubled by every downsampling block.
    init_ch: int = 128
    # Number of stride-2 conv blocks in the structure branch.
    cont_num_blocks: int = 1
    # Channels d_S of the structure latent; with regularizer "fsq" it is set to len(structure_levels).
    expect_ch: int = 8
    # Whether the dynamics branch downsamples the token grid before pooling.
    downsample_motion: bool = True
    # Number of stride-2 conv blocks in the dynamics branch (when downsample_motion).
    motion_num_blocks: int = 1
    # Channels d_D of the dynamics latents; with regularizer "fsq" it is set to len(dynamics_levels).
    d_dim: int = 8
    # Latent regularizer: "kl" (Gaussian posteriors, the published model) or "fsq" (integer tokens).
    regularizer: str = "kl"
    # FSQ levels per structure channel (fsq only), e.g. [8, 8, 8, 5, 5, 5]: prod(levels) codes.
    structure_levels: Optional[Tuple[int, ...]] = None
    # FSQ levels per dynamics channel (fsq only), shared by dynamics_x and dynamics_y.
    dynamics_levels: Optional[Tuple[int, ...]] = None
    # FSQ training only (VidTok's FSQRegularizer names): weight of the entropy loss once annealed.
    entropy_loss_weight: float = 0.0
    # Updates over which the entropy weight falls linearly from factor x weight to weight.
    entropy_loss_annealing_steps: int = 0
    # Entropy weight at update 0, as a multiple of entropy_loss_weight.
    entropy_loss_annealing_factor: float = 1.0
    # Weight of the commitment loss (MSE between the quantizer's input and its codes).
    commitment_loss_weight: float = 0.0
    # Attention implementation: "sdpa" (torch, runs anywhere) or "flash" (flash-attn, CUDA only).
    attention_backend: str = "sdpa"
    # Training: structure reads each clip's token frames shuffled (official; the Q-Former is order-blind: rounding only).
    shuffle_content: bool = False
    # Training: chance per clip of structure from a frame-shuffled copy of the video (official ...Dis variant).
    shuffle_content_ratio: float = 0.0

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)
        self.patch_size = tuple(int(v) for v in self.patch_size)
        for name in ("structure_levels", "dynamics_levels"):
            levels = getattr(self, name)
            if levels is not None:
                setattr(self, name, tuple(int(v) for v in levels))
        if self.regularizer == "fsq" and self.structure_levels and self.dynamics_levels:
            # Each FSQ channel is one scalar quantizer, so the levels fix the latent widths.
            self.expect_ch = len(self.structure_levels)
            self.d_dim = len(self.dynamics_levels)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError, naming the field, for a configuration that cannot build a model."""
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be three positive ints (T, H, W), got {self.input_size}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints, got {self.patch_size}")
        for name in ("num_heads", "decoder_num_heads"):
            heads = getattr(self, name)
            if heads is not None and self.hidden_size % heads != 0:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {name}={heads}")
        if self.query_hidden_size % self.qformer_num_heads != 0:
            raise ValueError(
                f"query_hidden_size {self.query_hidden_size} is not divisible by qformer_num_heads={self.qformer_num_heads}"
            )
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        self._validate_regularizer()
        if not 0.0 <= self.shuffle_content_ratio <= 1.0:
            raise ValueError(f"shuffle_content_ratio must lie in [0, 1], got {self.shuffle_content_ratio}")
        if self.shuffle_content and self.shuffle_content_ratio > 0:
            # The official classes are alternatives: the Dis variant's encode ignores shuffle_content.
            raise ValueError("shuffle_content and shuffle_content_ratio are alternatives (the official plain and "
                             "Dis variants); set one of them")
        _, grid_h, grid_w = self.token_grid
        if self.downsample_motion and grid_h != grid_w:
            # The published design maps the pooled dynamics back with one shared `up_motion` sized for
            # the token height, so both axes must have the same length.
            raise ValueError(
                f"downsample_motion needs a square token grid, got {grid_h}x{grid_w}; "
                "use a square input_size or downsample_motion: false"
            )

    def _validate_regularizer(self) -> None:
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        level_fields = ("structure_levels", "dynamics_levels")
        if self.regularizer == "kl":
            given = [name for name in level_fields if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply with regularizer: fsq (this config has regularizer: kl)")
            return
        for name in level_fields:
            levels = getattr(self, name)
            if not levels:
                raise ValueError(f"regularizer fsq needs {name}, a list of FSQ levels such as [8, 8, 8, 5, 5, 5]")
            if min(levels) < 3:
                # With 2 levels the tanh-bounded rounding is asymmetric ({-1, 0}); FSQ uses 3 or more.
                raise ValueError(f"{name} must all be >= 3, got {list(levels)}")
        if self.entropy_loss_annealing_steps < 0 or min(self.entropy_loss_weight, self.commitment_loss_weight) < 0:
            raise ValueError("entropy_loss_weight, commitment_loss_weight and entropy_loss_annealing_steps must be >= 0")

    @property
    def codebook_sizes(self) -> Optional[dict]:
        """Codes per token of each latent, {"structure": prod(levels), "dynamics": ...}; None for kl."""
        if self.regularizer != "fsq":
            return None
        return {"structure": math.prod(self.structure_levels), "dynamics": math.prod(self.dynamics_levels)}

    def token_shapes(self) -> dict:
        """Shape of each latent's token grid for one clip (the latent shapes without the channel axis)."""
        return {name: shape[1:] for name, shape in self.latent_shapes().items()}

    @property
    def token_grid(self) -> Tuple[int, int, int]:
        """Token grid (t, h, w): the input padded up to whole patches, divided by the patch size."""
        return tuple(math.ceil(n / p) for n, p in zip(self.input_size, self.patch_size))

    @property
    def structure_grid(self) -> Tuple[int, int]:
        """Spatial size (h_S, w_S) of the structure latent: each stride-2 conv maps n to ceil(n / 2)."""
        _, h, w = self.token_grid
        for _ in range(self.cont_num_blocks):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    @property
    def dynamics_length(self) -> Tuple[int, int]:
        """Lengths (w_D, h_D) of the two dynamics latents along their pooled-out axis."""
        _, h, w = self.token_grid
        if self.downsample_motion:
            for _ in range(self.motion_num_blocks):
                h, w = (h + 1) // 2, (w + 1) // 2
        return w, h

    def latent_shapes(self) -> dict:
        """Shape of each latent for one clip (no batch axis)."""
        t, _, _ = self.token_grid
        h_s, w_s = self.structure_grid
        w_d, h_d = self.dynamics_length
        return {
            "structure": (self.expect_ch, self.num_queries, h_s, w_s),
            "dynamics_x": (self.d_dim, t, w_d),
            "dynamics_y": (self.d_dim, t, h_d),
        }

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        out["patch_size"] = list(self.patch_size)
        for name in ("structure_levels", "dynamics_levels"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "VidTwinConfig":
        """Build from a plain dict; unknown keys are an error that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown VidTwin model setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


def config_fields() -> list:
    """Names of all VidTwinConfig fields, in declaration order."""
    return [f.name for f in dataclasses.fields(VidTwinConfig)]


def replace(config: VidTwinConfig, **changes: Any) -> VidTwinConfig:
    """A copy of `config` with some fields changed (validated again)."""
    return dataclasses.replace(config, **changes)


__all__ = ["VidTwinConfig", "ATTENTION_BACKENDS", "REGULARIZERS", "config_fields", "replace"]
