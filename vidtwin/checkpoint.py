"""Reading and writing VidTwin weights.

Formats read: the official Lightning `.ckpt` (weights under `state_dict`, official names), a Lightning
checkpoint written by this project's training (autoencoder under `autoencoder.`), a bare state_dict,
`.safetensors`, a `save_pretrained` directory, and `hf://` references. Every load is strict: a
missing, unexpected or mis-shaped key is an error naming the keys.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from safetensors.torch import load_file, save_file

from .atomic_io import atomic_path, atomic_write_text
from .config import ConfigError, autoencoder_config_from
from .hub import OFFICIAL_CHECKPOINT_FILE, download_checkpoint, is_hub_reference, resolve_hub_reference
from .models.config import VidTwinConfig
from .models.vidtwin_ae import VidTwin

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "vidtwin"
FORMAT_VERSION = 1

# Official tensors that this implementation does not load, and why:
# - the encoder's `final_layer` and the decoder's `x_embedder` exist in the official modules but are
#   never used by its forward pass;
# - the sin-cos position embeddings are fixed functions of the token grid, recomputed at build time.
IGNORED_OFFICIAL_KEYS = (
    r"encoder\.final_layer\..*",
    r"decoder\.x_embedder\..*",
    r"(encoder|decoder)\.pos_embed(_temporal)?",
)
_IGNORED = re.compile("|".join(f"(?:{pattern})" for pattern in IGNORED_OFFICIAL_KEYS))
_POSITION_BUFFERS = re.compile(r"(encoder|decoder)\.pos_embed(_temporal)?")

# First components of the official autoencoder's keys (everything in the Lightning module but `loss.`).
AUTOENCODER_MODULES = (
    "encoder", "decoder", "temporal_qformer", "conv_in", "content_downsample_blocks", "bottle_down",
    "bottle_up", "content_upsample_blocks", "conv_out", "cont_emb", "motion_head", "motion_emb",
    "downsample_motion_module", "up_motion",
)
TRAINING_PREFIX = "autoencoder."


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file or the keys."""


StateDict = Dict[str, torch.Tensor]


# ---------------------------------------------------------------------------- reading
def resolve_checkpoint_path(path: Union[str, Path]) -> Path:
    """A local path for `path`, downloading `hf://` references first."""
    if is_hub_reference(str(path)):
        return resolve_hub_reference(str(path))
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _torch_load(path: Union[str, Path], weights_only: bool):
    try:  # memory-mapped: a Lightning file's optimizer states are never read into memory
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)  # legacy (non-zip) format


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_PROTOCOL_MARK = b"\x80"  # the legacy format starts with a pickle


def load_checkpoint_object(path: Union[str, Path], allow_unsafe_pickle: bool = False) -> dict:
    """torch.load with `weights_only=True`; full unpickling only with `allow_unsafe_pickle=True`."""
    not_readable = (f"{path} is not a readable PyTorch checkpoint (damaged, or a file of another kind); "
                    "give a .ckpt/.pt file, a .safetensors file or a save_pretrained directory")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL_MARK)):
        raise CheckpointError(not_readable)
    try:
        obj = _torch_load(path, weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused is None:  # torch's text would advise weights_only=False, which is not the fix here
            raise CheckpointError(not_readable) from None
        raise CheckpointError(
            f"{path} holds a Python object ({refused.group(1)}) that a safe load refuses. "
            "If you trust this file, load it with allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle)"
        ) from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, AttributeError, ImportError):
        raise CheckpointError(not_readable) from None  # a torn zip or a damaged pickle
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state_dict or a Lightning checkpoint")
    return obj


def _read_safetensors(path: Path) -> StateDict:
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None


def read_checkpoint_state_dict(path: Union[str, Path], allow_unsafe_pickle: bool = False,
                               use_ema: Optional[bool] = False) -> StateDict:
    """A flat name -> tensor dict from any supported checkpoint format.

    use_ema: when the checkpoint stores EMA weights (`ema_state_dict`, written by this project's
    training), return those as the autoencoder weights; None means "when present".
    """
    path = resolve_checkpoint_path(path)
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{path} is a directory without {WEIGHTS_FILE}; expected a save_pretrained directory")
        return _read_safetensors(weights)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = load_checkpoint_object(path, allow_unsafe_pickle)
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no state_dict of tensors")
    has_ema = isinstance(obj.get("ema_state_dict"), dict)
    if use_ema and not has_ema:
        raise CheckpointError(f"{path} stores no EMA weights (ema_state_dict)")
    if has_ema and use_ema is not False:
        state = {k: v for k, v in state.items() if not _is_autoencoder_key(k)}
        state.update(obj["ema_state_dict"])
        logger.info("using the EMA weights stored in %s", path)
    return dict(state)


def _is_autoencoder_key(key: str) -> bool:
    return key.startswith(TRAINING_PREFIX) or key.split(".", 1)[0] in AUTOENCODER_MODULES


def split_state_dict(state: StateDict) -> Tuple[StateDict, StateDict, StateDict]:
    """(autoencoder, loss, rest): official names for the autoencoder, `loss.` stripped for the loss."""
    autoencoder, loss, rest = {}, {}, {}
    for key, value in state.items():
        if key.startswith(TRAINING_PREFIX):
            autoencoder[key[len(TRAINING_PREFIX):]] = value
        elif key.split(".", 1)[0] in AUTOENCODER_MODULES:
            autoencoder[key] = value
        elif key.startswith("loss."):
            loss[key[len("loss."):]] = value
        else:
            rest[key] = value
    return autoencoder, loss, rest


# ---------------------------------------------------------------------------- loading into a model
def _name_keys(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def load_autoencoder_state_dict(model: VidTwin, state: StateDict) -> None:
    """Strictly load official-named autoencoder weights into `model`."""
    expected = model.state_dict()
    buffers = dict(model.named_buffers())
    grid_errors = [
        f"{key} {tuple(value.shape)} vs {tuple(buffers[key].shape)}"
        for key, value in state.items()
        if _POSITION_BUFFERS.fullmatch(key) and tuple(value.shape) != tuple(buffers[key].shape)
    ]
    if grid_errors:
        raise CheckpointError(
            "checkpoint does not match the model config: it was made for another input size or width "
            "(position embeddings differ: "
            f"{'; '.join(grid_errors)}); use the config it was trained with"
        )
    state = {k: v for k, v in state.items() if not _IGNORED.fullmatch(k)}
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    mismatched = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                  for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_name_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_name_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_name_keys(mismatched)}")
    if problems:
        raise CheckpointError("checkpoint does not match the model config; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------- own format
def save_pretrained(model: VidTwin, directory: Union[str, Path]) -> Path:
    """Write `config.json` + `model.safetensors`; each file appears only when complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as temp:
        save_file(weights, str(temp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "autoencoder": model.config.to_dict()}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2))
    return directory


def read_pretrained_config(directory: Union[str, Path]) -> VidTwinConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; expected a save_pretrained directory")
    try:
        values = json.loads(path.read_text())
        return VidTwinConfig.from_dict(values["autoencoder"])
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{path} is not a VidTwin config: {error}") from None


def from_pretrained(name_or_path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                    config=None, allow_unsafe_pickle: bool = False) -> VidTwin:
    """Load a `save_pretrained` directory, or the published checkpoint of a Hub repo id.

    For a Hub id the checkpoint is the official Lightning file; `config` describes its architecture
    and defaults to the published one (`VidTwinConfig()`, the same as configs/vidtwin.yaml).
    """
    local = Path(str(name_or_path))
    if local.is_dir():
        return load_model(config, local, device=device)
    if is_hub_reference(str(name_or_path)) or re.fullmatch(r"[\w.-]+/[\w.-]+", str(name_or_path)):
        repo = str(name_or_path)
        reference = repo if is_hub_reference(repo) else f"hf://{repo}"
        return load_model(config or VidTwinConfig(), reference, device=device, allow_unsafe_pickle=allow_unsafe_pickle)
    raise CheckpointError(f"{name_or_path} is neither a save_pretrained directory nor a Hub repo id")


# ---------------------------------------------------------------------------- one-line load
def load_model(config=None, ckpt=None, device: Union[str, torch.device] = "cpu",
               allow_unsafe_pickle: bool = False, ema: Optional[bool] = None) -> VidTwin:
    """Build a VidTwin model in eval mode and load its weights.

    config: a YAML path (this project's or the official format), a list of YAML paths merged in
        order, a loaded config, a VidTwinConfig, or None when `ckpt` is a save_pretrained directory.
    ckpt: an official Lightning `.ckpt`, a checkpoint written by `train.py`, a bare state_dict,
        a `.safetensors` file, a save_pretrained directory, `hf://owner/name[/file]`, or None for an
        untrained model.
    ema: use EMA weights stored by this project's training; None uses them when present.
    """
    ckpt_path = resolve_checkpoint_path(ckpt) if ckpt is not None else None
    if config is None:
        if ckpt_path is None or not ckpt_path.is_dir():
            raise ConfigError("a config is needed unless the checkpoint is a save_pretrained directory")
        model_config = read_pretrained_config(ckpt_path)
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


__all__ = [
    "CheckpointError", "IGNORED_OFFICIAL_KEYS", "OFFICIAL_CHECKPOINT_FILE", "download_checkpoint",
    "load_model", "from_pretrained", "save_pretrained", "read_checkpoint_state_dict", "split_state_dict",
    "load_autoencoder_state_dict", "resolve_checkpoint_path",
]
