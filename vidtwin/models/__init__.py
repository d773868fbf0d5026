"""Model code: plain nn.Modules, no training logic.

`VidTwinConfig` imports nothing heavy; the model classes (which need transformers and timm) are
imported on first use, so that code that only reads a config stays cheap to import.
"""

from ..lazy_exports import lazy_exports
from .config import VidTwinConfig

_LAZY = {"VidTwin": ".vidtwin_ae", "VidTwinLatents": ".vidtwin_ae", "VidTwinTokens": ".vidtwin_ae"}

__all__ = ["VidTwin", "VidTwinConfig", "VidTwinLatents", "VidTwinTokens"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
