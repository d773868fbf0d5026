"""Generating videos from VidTwin latents: a class-conditional flow-matching transformer.

- :mod:`.packing`: both latents as one token sequence (the paper's section 3.5), reused by the world model;
- :mod:`.transformer`: blocks with adaLN-Zero conditioning on time and class;
- :mod:`.flow`: the flow-matching loss and the ODE sampler with classifier-free guidance;
- :mod:`.normalization`: per-latent, per-channel statistics, applied and inverted in one place;
- :mod:`.generator`: :class:`LatentGenerator`, which ties them together, with ``save_pretrained`` /
  ``from_pretrained``.

No Lightning and no autoencoder code is imported here: sampling latents needs neither.
"""

from .config import GENERATOR_SIZES, GeneratorConfig, GeneratorConfigError
from .flow import SAMPLERS, SamplerError, flow_matching_loss, guided_velocity, logit_normal_times, solve_flow
from .generator import DEFAULT_GUIDANCE, DEFAULT_STEPS, GeneratorSampleError, LatentGenerator, read_generator_config, sample
from .normalization import LatentNormalization, NormalizationError
from .packing import LATENT_NAMES, LatentPacking, PackedTokenEmbedding, latent_dict
from .transformer import ConditionedTransformer, transformer_flops

__all__ = [
    "GENERATOR_SIZES", "GeneratorConfig", "GeneratorConfigError", "SAMPLERS", "SamplerError", "flow_matching_loss",
    "guided_velocity", "logit_normal_times", "solve_flow", "DEFAULT_GUIDANCE", "DEFAULT_STEPS", "GeneratorSampleError",
    "LatentGenerator", "read_generator_config", "sample", "LatentNormalization", "NormalizationError", "LATENT_NAMES",
    "LatentPacking", "PackedTokenEmbedding", "latent_dict", "ConditionedTransformer", "transformer_flops",
]
