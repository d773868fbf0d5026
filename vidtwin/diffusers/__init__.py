"""VidTwin for diffusers users (the ``[diffusers]`` extra; diffusers needs Python >= 3.11).

    from vidtwin.diffusers import AutoencoderVidTwin
    vae = AutoencoderVidTwin.from_pretrained("vidtwin-diffusers")

==============================  ==============================================================
module                          what
==============================  ==============================================================
:mod:`.autoencoder_vidtwin`     :class:`AutoencoderVidTwin`, a diffusers ``ModelMixin``
:mod:`.layout`                  the packed latent ``(B, C, N)`` and its statistics maps
:mod:`.folder`                  diffusers folders without diffusers: read, write, convert
:mod:`.remote_code`             the model code a folder carries for ``trust_remote_code``
==============================  ==============================================================

Only :class:`AutoencoderVidTwin` and its output class import diffusers, on first use, so that
``vidtwin convert`` reads a diffusers folder and the packed layout works without it.
"""

from importlib import import_module

_LAZY = {
    "AutoencoderVidTwin": ".autoencoder_vidtwin",
    "AutoencoderVidTwinOutput": ".autoencoder_vidtwin",
    "PackedLatentLayout": ".layout",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
