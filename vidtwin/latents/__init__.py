"""Latents at rest: the latent file, the sharded latent dataset, its reader and the FSQ token packing.

This package sits below :mod:`vidtwin.inference` and :mod:`vidtwin.training` and imports neither:
it needs only the model config (to check identities and shapes) and the FSQ quantizer (to turn
tokens into codes). Encoding and decoding, which need a model, stay in :mod:`vidtwin.inference`.

==============================  ==============================================================
module                          what
==============================  ==============================================================
:mod:`.latent_file`             one video's latents in one ``.safetensors`` file (``encode``),
                                config identity, weights fingerprint, FSQ token packing
:mod:`.shards`                  a latent dataset's files: shards, manifest, index, failures
:mod:`.dataset`                 :class:`LatentDataset`, :func:`collate_latents` and
                                :func:`collate_latent_sequences` (windows of clips)
:mod:`.labels`                  each video's class (``--label-column``, ``--labels-from-folders``)
:mod:`.actions`                 each clip's action (``--actions-column``)
:mod:`.layout`                  :class:`ClipLayout` and :class:`TileGrid`, which latent files record
==============================  ==============================================================
"""

from vidtwin.latents.actions import ActionError
from vidtwin.latents.dataset import LatentDataset, collate_latent_sequences, collate_latents
from vidtwin.latents.latent_file import (
    EncodedVideo,
    LatentFileError,
    codebook_levels,
    codes_to_stored_tokens,
    config_identity,
    load_latents,
    pack_tokens,
    save_latents,
    stored_tokens_to_codes,
    token_dtype,
    unpack_tokens,
)
from vidtwin.latents.layout import ClipLayout, TileGrid
from vidtwin.latents.shards import LatentDatasetError

__all__ = [
    "ClipLayout", "TileGrid",
    "EncodedVideo", "LatentFileError", "config_identity", "save_latents", "load_latents",
    "codebook_levels", "token_dtype", "pack_tokens", "unpack_tokens", "codes_to_stored_tokens", "stored_tokens_to_codes",
    "LatentDataset", "LatentDatasetError", "collate_latents", "collate_latent_sequences", "ActionError",
]
