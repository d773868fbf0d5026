"""`load_model`: a VidTwin autoencoder from a config in any dialect and any checkpoint reference.

    model = load_model("vidtwin", "hf://microsoft/vidtwin")     # a named config + the published weights
    model = load_model(None, "logs/run")                        # a `vidtwin train` run: its config.yaml + newest checkpoint

Formats read: the official Lightning `.ckpt` (weights under `state_dict`, official names), a Lightning
checkpoint written by this project's training (autoencoder under `autoencoder.`), a bare state_dict,
`.safetensors`, a `save_pretrained` directory, a `vidtwin train` run folder, Hub repo ids and `hf://`
references. Every load is strict: a missing, unexpected or mis-shaped key is an error naming the keys.

Layers: the loading itself is `VidTwin.from_pretrained` (`vidtwin.pretrained`, shared by all three
models); this module sits above it and the YAML configs (`vidtwin.config`), whose official dialect
it translates. The other functions here are the module-level spellings of the model's methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from .config import ConfigError, autoencoder_config_from
from .hub import OFFICIAL_CHECKPOINT_FILE, download_checkpoint
from .models.vidtwin_ae import AUTOENCODER_FORMAT, VidTwin
from .pretrained import read_config_json
from .state_dict_io import (
    IGNORED_OFFICIAL_KEYS, CheckpointError, load_autoencoder_state_dict, load_checkpoint_object,
    read_checkpoint_state_dict, resolve_checkpoint_path, split_state_dict,
)

FORMAT_NAME = AUTOENCODER_FORMAT.name
FORMAT_VERSION = AUTOENCODER_FORMAT.version


def load_model(config=None, ckpt=None, device: Union[str, torch.device] = "cpu",
               allow_unsafe_pickle: bool = False, ema: Optional[bool] = None) -> VidTwin:
    """Build a VidTwin model in eval mode and load its weights.

    config: a YAML path or shipped config name (this project's or the official format), a list of
        them merged in order, a loaded config, a VidTwinConfig, or None when `ckpt` records its
        config (a save_pretrained directory, a `vidtwin train` run folder or a checkpoint inside one, a
        Hub repo).
    ckpt: an official Lightning `.ckpt`, a checkpoint written by `vidtwin train`, a `vidtwin train` run folder
        (its newest readable checkpoint), a bare state_dict, a `.safetensors` file, a save_pretrained
        directory, `hf://owner/name[@revision][/file]`, or None for an untrained model.
    ema: use EMA weights stored by this project's training; None uses them when present.
    """
    model_config = autoencoder_config_from(config) if config is not None else None
    if ckpt is None:
        if model_config is None:
            raise ConfigError("a config is needed unless a checkpoint is given")
        return VidTwin(model_config).to(device).eval()
    return VidTwin.from_pretrained(ckpt, device, config=model_config, ema=ema, allow_unsafe_pickle=allow_unsafe_pickle)


def from_pretrained(name_or_path: Union[str, Path], device: Union[str, torch.device] = "cpu", config=None,
                    allow_unsafe_pickle: bool = False, revision: Optional[str] = None,
                    cache_dir: Optional[str] = None) -> VidTwin:
    """`VidTwin.from_pretrained`, with `config` in any form `load_model` takes."""
    model_config = autoencoder_config_from(config) if config is not None else None
    return VidTwin.from_pretrained(name_or_path, device, config=model_config, allow_unsafe_pickle=allow_unsafe_pickle,
                                   revision=revision, cache_dir=cache_dir)


def write_pretrained(model: VidTwin, directory: Union[str, Path]) -> Path:
    """`model.write_pretrained(directory)`: `config.json` + `model.safetensors`, each complete or absent."""
    return model.write_pretrained(directory)


def read_pretrained_config_dict(directory: Union[str, Path]) -> dict:
    """The `autoencoder` settings stored in a `save_pretrained` folder's `config.json`, after checking
    that the file is this project's format in a version this code reads."""
    return dict(read_config_json(directory, AUTOENCODER_FORMAT)[AUTOENCODER_FORMAT.config_key])


def save_pretrained(model: VidTwin, save_directory: Union[str, Path], **kwargs):
    """`model.save_pretrained(save_directory, **kwargs)`."""
    return model.save_pretrained(save_directory, **kwargs)


def push_to_hub(model: VidTwin, repo_id: str, **kwargs) -> str:
    """`model.push_to_hub(repo_id, **kwargs)`."""
    return model.push_to_hub(repo_id, **kwargs)


__all__ = [
    "CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "IGNORED_OFFICIAL_KEYS", "OFFICIAL_CHECKPOINT_FILE",
    "download_checkpoint", "from_pretrained", "load_autoencoder_state_dict", "load_checkpoint_object", "load_model",
    "push_to_hub", "read_checkpoint_state_dict", "read_pretrained_config_dict", "resolve_checkpoint_path",
    "save_pretrained", "split_state_dict", "write_pretrained",
]
