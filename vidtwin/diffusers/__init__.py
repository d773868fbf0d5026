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

from ..lazy_exports import lazy_exports

_LAZY = {
    "AutoencoderVidTwin": ".autoencoder_vidtwin",
    "AutoencoderVidTwinOutput": ".autoencoder_vidtwin",
    "PackedLatentLayout": ".layout",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
