"""The settings of the two latent models: one typed config each, and their size presets.

:class:`GeneratorConfig` (the flow-matching generator, sizes in ``GENERATOR_SIZES``) and
:class:`WorldModelConfig` (the world model over FSQ tokens, sizes in ``WORLD_SIZES``) share the
preset and dict round trip of :class:`_Settings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import UserError

# Width and depth of the transformer. Patch sizes are the config's own (default below) unless a
# preset names them, as the stand-in DiT of the paper's FLOPs comparison does.
GENERATOR_SIZES: Dict[str, Dict[str, Any]] = {
    # CPU tests and the Moving Digits demo.
    "tiny": dict(depth=2, hidden_size=64, num_heads=4, mlp_ratio=4.0),
    "small": dict(depth=6, hidden_size=256, num_heads=4, mlp_ratio=4.0),
    # The DiT the paper uses to compare tokenizers' FLOPs: 6 layers, 8 heads, hidden 512, FFN 2048,
    # patch 2 in every dimension (the joined dynamics image is one frame, so its patch is 2 x 2).
    "dit-flops": dict(depth=6, hidden_size=512, num_heads=8, mlp_ratio=4.0,
                      structure_patch_size=[2, 2, 2], dynamics_patch_size=[2, 2]),
    # The paper's UCF-101 generator: 18 layers, hidden 1152 (heads and patch are ours: the paper gives neither).
    "paper": dict(depth=18, hidden_size=1152, num_heads=16, mlp_ratio=4.0,
                  structure_patch_size=[2, 2, 2], dynamics_patch_size=[2, 2]),
}

# The default latent shapes, small for tests: a 4-query, 4-channel model of 8x64x64 clips with 8x8
# patches: structure (4, 4, 4, 4), dynamics (4, 8, 4) twice. Real use takes them from the dataset.
TINY_LATENT_SHAPES = {"structure": [4, 4, 4, 4], "dynamics_x": [4, 8, 4], "dynamics_y": [4, 8, 4]}


# The world model's transformer (vidtwin.generation.world). Tokens per clip are fixed by the
# autoencoder (patch 1 over its token grids), so a preset names width and depth only.
WORLD_SIZES: Dict[str, Dict[str, Any]] = {
    # CPU tests and the Moving Digits game demo.
    "tiny": dict(depth=2, hidden_size=64, num_heads=4, mlp_ratio=4.0),
    "small": dict(depth=6, hidden_size=256, num_heads=4, mlp_ratio=4.0),
    # A start for real footage with recorded inputs on GPUs (docs/generation.md).
    "base": dict(depth=12, hidden_size=768, num_heads=12, mlp_ratio=4.0),
}


class LatentModelConfigError(ValueError, UserError):
    """A setting of a latent model (generator or world model) that cannot be used; the message names it."""


class GeneratorConfigError(LatentModelConfigError):
    """A generator setting that cannot be used; the message names it."""


class WorldModelConfigError(LatentModelConfigError):
    """A world model setting that cannot be used; the message names it."""


class _Settings:
    """Size presets and the plain-dict round trip of a config dataclass (``SIZES``: its presets;
    ``KIND`` and ``ERROR``: its name in messages and the error it raises)."""

    SIZES: Dict[str, Dict[str, Any]] = {}
    KIND = "generator"
    ERROR = GeneratorConfigError

    @classmethod
    def from_preset(cls, size: str, **settings):
        """A config of one of the class's size presets, with any other setting given."""
        if size not in cls.SIZES:
            raise cls.ERROR(f"unknown {cls.KIND} size {size!r}; known: {', '.join(cls.SIZES)}")
        return cls.from_dict({**cls.SIZES[size], **settings})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """Build from a plain dict; unknown keys are an error that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise cls.ERROR(f"unknown {cls.KIND} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def _three_latents(self, setting: str, shapes) -> Dict[str, List[int]]:
        """``shapes`` (a config's grids per latent) as lists of ints, checked to name the three latents."""
        grids = {key: [int(n) for n in value] for key, value in dict(shapes).items()}
        if sorted(grids) != ["dynamics_x", "dynamics_y", "structure"]:
            raise self.ERROR(f"{setting} needs structure, dynamics_x and dynamics_y; got {sorted(grids)}")
        return grids

    def _check_heads(self) -> None:
        if self.hidden_size % self.num_heads != 0:
            raise self.ERROR(f"hidden_size {self.hidden_size} is not divisible by num_heads={self.num_heads}")


@dataclass
class GeneratorConfig(_Settings):
    """Every setting of :class:`~vidtwin.generation.LatentGenerator`, with its default."""

    SIZES = GENERATOR_SIZES

    # Per-clip latent shapes of the autoencoder (`VidTwinConfig.latent_shapes()`):
    # structure (d_S, Q, h_S, w_S), dynamics_x (d_D, T, w_D), dynamics_y (d_D, T, h_D).
    latent_shapes: Dict[str, List[int]] = field(default_factory=lambda: {k: list(v) for k, v in TINY_LATENT_SHAPES.items()})
    structure_patch_size: List[int] = field(default_factory=lambda: [1, 2, 2])  # over (Q, h_S, w_S)
    dynamics_patch_size: List[int] = field(default_factory=lambda: [2, 2])  # over (T, w_D + h_D)
    hidden_size: int = 64  # transformer width
    depth: int = 2  # transformer blocks
    num_heads: int = 4  # attention heads; hidden_size must be a multiple
    mlp_ratio: float = 4.0  # MLP width / hidden_size
    num_classes: int = 0  # 0: unconditional only; else labels in [0, num_classes)
    class_names: Optional[List[str]] = None  # names of the classes, in label order (from the latent dataset)
    class_dropout: float = 0.1  # share of training samples whose class is dropped (classifier-free guidance)
    time_logit_mean: float = 0.0  # training times t = sigmoid(N(mean, std)): logit-normal
    time_logit_std: float = 1.0
    normalization: Optional[dict] = None  # LatentNormalization.to_dict(); None: no scaling

    def __post_init__(self):
        self.latent_shapes = self._three_latents("latent_shapes", self.latent_shapes)
        self.structure_patch_size = [int(n) for n in self.structure_patch_size]
        self.dynamics_patch_size = [int(n) for n in self.dynamics_patch_size]
        self._check_heads()
        if not 0.0 <= self.class_dropout < 1.0:
            raise GeneratorConfigError(f"class_dropout must be in [0, 1), got {self.class_dropout}")
        if self.num_classes < 0:
            raise GeneratorConfigError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.class_names is not None:
            self.class_names = [str(name) for name in self.class_names]
            if len(self.class_names) != self.num_classes or len(set(self.class_names)) != self.num_classes:
                raise GeneratorConfigError(f"class_names must be {self.num_classes} distinct names, got {len(self.class_names)}")


# The default token grids, small for tests: 2 queries of 4x4 structure tokens, 4 frames of 4 + 4
# dynamics tokens per clip. Real use takes them from the autoencoder (VidTwinConfig.token_shapes()).
TINY_TOKEN_SHAPES = {"structure": [2, 4, 4], "dynamics_x": [4, 4], "dynamics_y": [4, 4]}


@dataclass
class WorldModelConfig(_Settings):
    """Every setting of :class:`~vidtwin.generation.world.WorldModel`, with its default."""

    SIZES = WORLD_SIZES
    KIND = "world model"
    ERROR = WorldModelConfigError

    # Per-clip token grids of the FSQ autoencoder (VidTwinConfig.token_shapes()): structure
    # (Q, h_S, w_S), dynamics_x (T, w_D), dynamics_y (T, h_D).
    token_shapes: Dict[str, List[int]] = field(default_factory=lambda: {k: list(v) for k, v in TINY_TOKEN_SHAPES.items()})
    structure_levels: List[int] = field(default_factory=lambda: [5, 5, 5])  # FSQ levels: prod(levels) codes
    dynamics_levels: List[int] = field(default_factory=lambda: [5, 5, 5])
    factorized_codes: bool = False  # one softmax per FSQ level instead of one over all codes (world.py "Vocabulary")
    actions: List[str] = field(default_factory=lambda: ["D", "L", "R", "U"])  # the action vocabulary, in index order
    context_clips: int = 2  # K: clips of context before the predicted one (training windows are K + 1 clips)
    hidden_size: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    decoding_steps: int = 8  # MaskGIT steps per predicted clip
    context_noise: float = 0.0  # training only: up to this share of context tokens replaced by random codes
    # 0: off. N > K + 1: the rollout's start clip stays in the context of every step, in front of
    # the last K clips, and training windows are N clips from a start clip (world.py "Start clip").
    start_window: int = 0

    @property
    def training_window(self) -> int:
        """Clips per training window: the data module's ``sequence_length``."""
        return self.start_window or self.context_clips + 1

    def __post_init__(self):
        self.token_shapes = self._three_latents("token_shapes", self.token_shapes)
        self.structure_levels = [int(n) for n in self.structure_levels]
        self.dynamics_levels = [int(n) for n in self.dynamics_levels]
        self.actions = [str(a) for a in self.actions]
        self._check_heads()
        if not self.actions or len(set(self.actions)) != len(self.actions):
            raise WorldModelConfigError(f"actions must be distinct and at least one, got {self.actions}")
        if not 0.0 <= float(self.context_noise) < 1.0:
            raise WorldModelConfigError(f"context_noise must lie in [0, 1), got {self.context_noise}")
        if self.context_clips < 1 or self.decoding_steps < 1:
            raise WorldModelConfigError(f"context_clips and decoding_steps must be >= 1, got {self.context_clips}, "
                                        f"{self.decoding_steps}")
        if self.start_window and self.start_window < self.context_clips + 2:
            raise WorldModelConfigError(f"start_window must be 0 (off) or at least context_clips + 2 = "
                                        f"{self.context_clips + 2} clips, got {self.start_window}: shorter windows "
                                        "never hold a start clip that has left the last context_clips clips")


__all__ = ["GENERATOR_SIZES", "GeneratorConfig", "GeneratorConfigError", "LatentModelConfigError", "TINY_LATENT_SHAPES",
           "TINY_TOKEN_SHAPES", "WORLD_SIZES", "WorldModelConfig", "WorldModelConfigError"]
