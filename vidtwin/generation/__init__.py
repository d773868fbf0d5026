"""Generating videos from VidTwin latents: a class-conditional flow-matching transformer, and an
action-conditioned world model over FSQ tokens.

- :mod:`.packing`: both latents as one token sequence (the paper's section 3.5), reused by the world model;
- :mod:`.transformer`: blocks with adaLN-Zero conditioning on time and class;
- :mod:`.flow`: the flow-matching loss and the ODE sampler with classifier-free guidance;
- :mod:`.normalization`: per-latent, per-channel statistics, applied and inverted in one place;
- :mod:`.generator`: :class:`LatentGenerator`, which ties them together;
- :mod:`.world`: :class:`WorldModel`, MaskGIT over windows of token clips with one action per clip;
- :mod:`.files` and :mod:`.world_files`: function spellings of loading and saving. Both models, like
  the autoencoder, load with ``from_pretrained`` (``save_pretrained`` folders, Hub repos,
  ``vidtwin train`` checkpoints and run folders) and save with ``save_pretrained`` / ``push_to_hub``,
  from :class:`vidtwin.pretrained.PretrainedModel`.

No Lightning and no autoencoder code is imported here: sampling latents needs neither.
"""

from .config import (
    GENERATOR_SIZES, WORLD_SIZES, GeneratorConfig, GeneratorConfigError, LatentModelConfigError, WorldModelConfig,
    WorldModelConfigError,
)
from .flow import SAMPLERS, SamplerError, flow_matching_loss, guided_velocity, logit_normal_times, solve_flow
from .files import load_generator, read_generator_config
from .generator import DEFAULT_GUIDANCE, DEFAULT_STEPS, GeneratorSampleError, LatentGenerator, sample
from .normalization import LatentNormalization, NormalizationError
from .packing import LATENT_NAMES, LatentPacking, PackedTokenEmbedding, latent_dict
from .transformer import ConditionedTransformer, transformer_flops
from .world import Rollout, WorldModel, WorldModelError
from .world_files import load_world_model, read_world_config, save_world_model

__all__ = [
    "GENERATOR_SIZES", "GeneratorConfig", "GeneratorConfigError", "SAMPLERS", "SamplerError", "flow_matching_loss",
    "guided_velocity", "logit_normal_times", "solve_flow", "DEFAULT_GUIDANCE", "DEFAULT_STEPS", "GeneratorSampleError",
    "LatentGenerator", "load_generator", "read_generator_config", "sample", "LatentNormalization", "NormalizationError", "LATENT_NAMES",
    "LatentPacking", "PackedTokenEmbedding", "latent_dict", "ConditionedTransformer", "transformer_flops",
    "WORLD_SIZES", "WorldModelConfig", "WorldModelConfigError", "LatentModelConfigError", "WorldModel", "WorldModelError",
    "Rollout", "load_world_model", "read_world_config", "save_world_model",
]
