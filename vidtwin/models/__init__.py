"""Model code: plain nn.Modules, no training logic.

`VidTwinConfig` imports nothing heavy; the model classes (which need transformers and timm) are
imported on first use, so that code that only reads a config stays cheap to import.
"""

from importlib import import_module

from .config import VidTwinConfig

_LAZY = {"VidTwin": ".vidtwin_ae", "VidTwinLatents": ".vidtwin_ae", "VidTwinTokens": ".vidtwin_ae"}

__all__ = ["VidTwin", "VidTwinConfig", "VidTwinLatents", "VidTwinTokens"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
