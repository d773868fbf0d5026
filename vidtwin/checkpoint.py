"""Loading and saving VidTwin models: the one place that turns files into models and models into files.

Formats read: the official Lightning `.ckpt` (weights under `state_dict`, official names), a Lightning
checkpoint written by this project's training (autoencoder under `autoencoder.`), a bare state_dict,
`.safetensors`, a `save_pretrained` directory, Hub repo ids and `hf://` references. Every load is
strict: a missing, unexpected or mis-shaped key is an error naming the keys.

Layers: reading tensors from files (`vidtwin.state_dict_io`) and the Hub's downloads and uploads
(`vidtwin.hub`) need no model; the model code (`vidtwin.models`) needs neither. This module sits
above all three. `VidTwin.from_pretrained`, `save_pretrained` and `push_to_hub` are the familiar
entry points to the functions below.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional, Union

import torch

from .atomic_io import atomic_path, atomic_write_text
from .config import ConfigError, autoencoder_config_from
from .hub import CONFIG_FILE, OFFICIAL_CHECKPOINT_FILE, WEIGHTS_FILE, download_checkpoint, model_card, upload_folder
from .models.config import VidTwinConfig
from .models.vidtwin_ae import VidTwin
from .state_dict_io import (
    IGNORED_OFFICIAL_KEYS, CheckpointError, load_autoencoder_state_dict,
    load_checkpoint_object, read_checkpoint_state_dict, resolve_checkpoint_path, resolve_pretrained_location,
    split_state_dict,
)

# `config.json` of a save_pretrained folder: {"format": FORMAT_NAME, "format_version": N, "autoencoder": {...}}.
FORMAT_NAME = "vidtwin"
FORMAT_VERSION = 1  # raise it when a change makes older code misread the folder


# ---------------------------------------------------------------------------- loading
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
    ckpt_path = resolve_checkpoint_path(ckpt) if ckpt is not None else None
    if config is None:
        if ckpt_path is None or not ckpt_path.is_dir():
            raise ConfigError("a config is needed unless the checkpoint is a save_pretrained directory")
        try:
            model_config = VidTwinConfig.from_dict(read_pretrained_config_dict(ckpt_path))
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{ckpt_path / CONFIG_FILE} is not a VidTwin config: {error}") from None
    else:
        model_config = autoencoder_config_from(config)
    model = VidTwin(model_config)
    if ckpt_path is not None:
        state = read_checkpoint_state_dict(ckpt_path, allow_unsafe_pickle=allow_unsafe_pickle, use_ema=ema)
        autoencoder_state, _, other = split_state_dict(state)
        # Training-only `loss.*` tensors are skipped; anything else unknown is an error.
        autoencoder_state.update(other)
        try:
            load_autoencoder_state_dict(model, autoencoder_state)
        except CheckpointError as error:
            raise CheckpointError(f"{ckpt}: {error}") from None
    return model.to(device).eval()


def from_pretrained(name_or_path: Union[str, Path], device: Union[str, torch.device] = "cpu", config=None,
                    allow_unsafe_pickle: bool = False, revision: Optional[str] = None,
                    cache_dir: Optional[str] = None) -> VidTwin:
    """Load a `save_pretrained` folder, a Hub repo id (`owner/name`, `owner/name@revision`) or
    an `hf://` reference, with strict key checking, in eval mode on `device`.

    A local folder always wins over a repo id of the same spelling, so a model saved with
    `save_pretrained` loads from its folder without going through the Hub or its cache. A Hub repo
    in this project's format loads with its own `config.json`; a repo that holds the official
    Lightning file loads it with `config` (default: the published architecture).
    """
    path = resolve_pretrained_location(name_or_path, revision, cache_dir)
    if config is None and not path.is_dir():
        config = VidTwinConfig()  # the official file of a repo: the published architecture
    return load_model(config, path, device=device, allow_unsafe_pickle=allow_unsafe_pickle)


# ---------------------------------------------------------------------------- our format
def write_pretrained(model: VidTwin, directory: Union[str, Path]) -> Path:
    """Write `config.json` + `model.safetensors` of `model`; each file appears only when complete."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as temp:
        save_file(weights, str(temp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "autoencoder": model.config.to_dict()}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2))
    return directory


def read_pretrained_config_dict(directory: Union[str, Path]) -> dict:
    """The `autoencoder` settings stored in a `save_pretrained` folder's `config.json`, after checking
    that the file is this project's format in a version this code reads."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}: it is not a save_pretrained folder "
                              "(give the folder that VidTwin.save_pretrained wrote, or a checkpoint file)")
    try:
        values = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT_NAME:
        found = values.get("format") if isinstance(values, dict) else None
        raise CheckpointError(f"{path} is not a VidTwin config: its format is {found!r}, not {FORMAT_NAME!r} "
                              "(a folder of another library, or a file edited by hand)")
    version = values.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {version!r}; this code reads versions up to "
                              f"{FORMAT_VERSION}: update the vidtwin package to load it")
    if not isinstance(values.get("autoencoder"), dict):
        raise CheckpointError(f"{path} is not a VidTwin config: it has no 'autoencoder' settings")
    return dict(values["autoencoder"])


# ---------------------------------------------------------------------------- saving and sharing
def save_pretrained(model: VidTwin, save_directory: Union[str, Path], *, repo_id: Optional[str] = None,
                    push_to_hub: bool = False, model_card_kwargs: Optional[dict] = None, **push_kwargs):
    """Write `config.json`, `model.safetensors` and the model card `README.md` (kept when the folder
    already has one) into `save_directory`, each file complete or absent. With `push_to_hub=True`
    also upload them to `repo_id` (default: the folder's name) and return the commit's URL."""
    directory = write_pretrained(model, save_directory)
    card = directory / "README.md"
    if not card.exists():
        atomic_write_text(card, model_card(model.config, repo_id or "OWNER/NAME", **(model_card_kwargs or {})))
    if push_to_hub:
        return upload_folder(directory, repo_id or directory.name, **push_kwargs)
    return None


def push_to_hub(model: VidTwin, repo_id: str, *, model_card_kwargs: Optional[dict] = None, **upload_kwargs) -> str:
    """Upload `config.json`, `model.safetensors` and the model card to the Hub repo `repo_id`
    (created if needed) in one commit; returns the commit's URL. Keyword arguments: `commit_message`,
    `private`, `token`, `branch`, `create_pr` and those of `HfApi.upload_folder`."""
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, repo_id=repo_id, model_card_kwargs=model_card_kwargs)
        return upload_folder(folder, repo_id, **upload_kwargs)


__all__ = [
    "CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "IGNORED_OFFICIAL_KEYS", "OFFICIAL_CHECKPOINT_FILE",
    "download_checkpoint", "from_pretrained", "load_autoencoder_state_dict", "load_checkpoint_object", "load_model",
    "push_to_hub", "read_checkpoint_state_dict", "read_pretrained_config_dict", "resolve_checkpoint_path",
    "save_pretrained", "split_state_dict", "write_pretrained",
]
