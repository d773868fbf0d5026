"""VidTwin: a video autoencoder with decoupled structure and dynamics latents.

    from vidtwin import VidTwin
    model = VidTwin.from_pretrained("microsoft/vidtwin")   # or a save_pretrained folder, a `vidtwin train` run, a checkpoint
    latents = model.encode(video)          # video: (B, 3, 16, 224, 224) in [-1, 1]
    reconstruction = model.decode(latents)

`load_model(config, checkpoint)` takes a config in either YAML dialect (a file, or a shipped name
such as "vidtwin") with any checkpoint. `LatentGenerator` and `WorldModel` load and save the same way.

The names below are imported on first use, so tools that only need `vidtwin.data` or
`vidtwin.metrics` do not pay for importing the model code (transformers, timm).
"""

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "vidtwin.checkpoint",
    "CheckpointError": "vidtwin.checkpoint",
    "ConfigError": "vidtwin.config",
    "VidTwin": "vidtwin.models",
    "VidTwinConfig": "vidtwin.models",
    "VidTwinLatents": "vidtwin.models",
    "VidTwinTokens": "vidtwin.models",
    # diffusers pipelines name it ["vidtwin", "AutoencoderVidTwin"] in model_index.json (the `diffusers` extra).
    "AutoencoderVidTwin": "vidtwin.diffusers",
    "LatentGenerator": "vidtwin.generation",
    "WorldModel": "vidtwin.generation",
}

__all__ = [*_EXPORTS, "__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
