"""Model code: plain nn.Modules, no training logic."""

from .config import VidTwinConfig
from .vidtwin_ae import VidTwin, VidTwinLatents, VidTwinTokens

__all__ = ["VidTwin", "VidTwinConfig", "VidTwinLatents", "VidTwinTokens"]
