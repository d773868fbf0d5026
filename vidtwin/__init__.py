"""VidTwin: a video autoencoder with decoupled structure and dynamics latents.

    from vidtwin import load_model
    model = load_model("configs/vidtwin.yaml", "hf://microsoft/vidtwin")
    latents = model.encode(video)          # video: (B, 3, 16, 224, 224) in [-1, 1]
    reconstruction = model.decode(latents)
"""

from .checkpoint import CheckpointError, load_model
from .config import ConfigError
from .models import VidTwin, VidTwinConfig, VidTwinLatents

__version__ = "0.1.0"

__all__ = ["load_model", "VidTwin", "VidTwinConfig", "VidTwinLatents", "CheckpointError", "ConfigError", "__version__"]
