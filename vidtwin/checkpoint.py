"""Loading VidTwin weights in one line, from every supported format.

Formats read: the official Lightning `.ckpt` (weights under `state_dict`, official names), a Lightning
checkpoint written by this project's training (autoencoder under `autoencoder.`), a bare state_dict,
`.safetensors`, a `save_pretrained` directory, and `hf://` references. Every load is strict: a
missing, unexpected or mis-shaped key is an error naming the keys.

Reading files (`vidtwin.state_dict_io`) and Hub references (`vidtwin.hub`) need no model; this module
is the one that builds the model, and the names of both are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from .hub import OFFICIAL_CHECKPOINT_FILE, download_checkpoint
from .models.vidtwin_ae import VidTwin
from .state_dict_io import (
    IGNORED_OFFICIAL_KEYS, CheckpointError, load_autoencoder_state_dict, load_checkpoint_object,
    read_checkpoint_state_dict, resolve_checkpoint_path, split_state_dict,
)


def load_model(config=None, ckpt=None, device: Union[str, torch.device] = "cpu",
               allow_unsafe_pickle: bool = False, ema: Optional[bool] = None) -> VidTwin:
    """Build a VidTwin model in eval mode and load its weights.

    config: a YAML path (this project's or the official format), a list of YAML paths merged in
        order, a loaded config, a VidTwinConfig, or None when `ckpt` is a save_pretrained directory.
    ckpt: an official Lightning `.ckpt`, a checkpoint written by `train.py`, a bare state_dict,
        a `.safetensors` file, a save_pretrained directory, `hf://owner/name[@revision][/file]`, or
        None for an untrained model.
    ema: use EMA weights stored by this project's training; None uses them when present.
    """
    return VidTwin.from_checkpoint(config, ckpt, device=device, allow_unsafe_pickle=allow_unsafe_pickle, ema=ema)


def from_pretrained(name_or_path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                    config=None, allow_unsafe_pickle: bool = False, revision: Optional[str] = None) -> VidTwin:
    """`VidTwin.from_pretrained`: a save_pretrained directory, a Hub repo id or an `hf://` reference."""
    return VidTwin.from_pretrained(name_or_path, device=device, config=config,
                                   allow_unsafe_pickle=allow_unsafe_pickle, revision=revision)


__all__ = [
    "CheckpointError", "IGNORED_OFFICIAL_KEYS", "OFFICIAL_CHECKPOINT_FILE", "download_checkpoint",
    "load_model", "from_pretrained", "read_checkpoint_state_dict", "split_state_dict", "load_checkpoint_object",
    "load_autoencoder_state_dict", "resolve_checkpoint_path",
]
