"""Reading state dicts from every supported file format, and the one strict key check.

Nothing here builds or imports a model: the LPIPS loss, the fine-tuning code and the Hub loader read
their tensors through this module without pulling in the autoencoder (and transformers).

Formats read: the official Lightning `.ckpt` (weights under `state_dict`, official names), a Lightning
checkpoint written by this project's training (autoencoder under `autoencoder.`, EMA weights under
`ema_state_dict`), a bare state_dict, `.safetensors`, and a `save_pretrained` directory
(`config.json` + `model.safetensors`). `hf://` references are resolved through `vidtwin.hub` first.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
from safetensors.torch import load_file

from .errors import UserError
from .hub import (
    CONFIG_FILE, WEIGHTS_FILE, is_hub_reference, is_repo_id, parse_hub_reference, resolve_hub_reference, resolve_repo,
)

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]


# First components of the autoencoder's keys: the official ones (everything in its Lightning module
# but `loss.`), and the regularizers', whose weights (none yet: Gaussian and FSQ have none) must reach
# checkpoints and fine-tuning like any other part of the model rather than be filed as unknown.
AUTOENCODER_MODULES = (
    "encoder", "decoder", "temporal_qformer", "conv_in", "content_downsample_blocks", "bottle_down",
    "bottle_up", "content_upsample_blocks", "conv_out", "cont_emb", "motion_head", "motion_emb",
    "downsample_motion_module", "up_motion", "structure_regularizer", "dynamics_regularizer",
)
TRAINING_PREFIX = "autoencoder."

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


class CheckpointError(ValueError, UserError):
    """A checkpoint that cannot be loaded; the message names the file or the keys."""


# ---------------------------------------------------------------------------- the strict key check
def _name_keys(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def check_state_dict(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str,
                     target: str = "the model", require_all: bool = True, key_prefix: str = "") -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped key.

    given: the tensors about to be loaded; expected: the module's own `state_dict()` (or any
    name -> tensor mapping with the target shapes). require_all=False accepts a subset of the
    expected keys (for modules filled from several sources); unexpected and mis-shaped keys are
    always errors. what / target: name the weights and their destination in the message
    ("checkpoint" does not match "the model config").
    key_prefix: prepended to key names in the message, so they read as in the file ("loss.").
    """
    missing = set(expected) - set(given) if require_all else set()
    unexpected = set(given) - set(expected)
    mismatched = [
        f"{key_prefix}{key} ({what} {tuple(given[key].shape)}, expected {tuple(expected[key].shape)})"
        for key in set(given) & set(expected) if tuple(given[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_name_keys(key_prefix + k for k in missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_name_keys(key_prefix + k for k in unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_name_keys(mismatched)}")
    if problems:
        raise CheckpointError(f"{what} does not match {target}; " + "; ".join(problems))
    check_weight_values(given, expected, what, key_prefix)


def check_weight_values(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str,
                        key_prefix: str = "") -> None:
    """Raise CheckpointError naming every tensor of ``given`` that cannot serve as a weight of the same
    name in ``expected``: integer (or bool) values for a floating-point tensor, which
    ``load_state_dict`` would silently convert, and NaN or infinite values. Either gives a model
    that runs and outputs a flat image, so both are refused at load time."""
    integer, non_finite = [], []
    for key in sorted(set(given) & set(expected)):
        value = given[key]
        if expected[key].is_floating_point() and not value.is_floating_point():
            integer.append(f"{key_prefix}{key} ({str(value.dtype).replace('torch.', '')})")
        elif value.is_floating_point() and value.device.type != "meta" and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            non_finite.append(f"{key_prefix}{key} ({bad} of {value.numel()} values)")
    problems = []
    if integer:
        problems.append(f"integer values for floating-point weights: {_name_keys(integer)}")
    if non_finite:
        problems.append(f"NaN or infinite values in {_name_keys(non_finite)}")
    if problems:
        raise CheckpointError(f"{what} holds damaged weights; " + "; ".join(problems))


def checked_autoencoder_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> StateDict:
    """``state`` as `model` (a VidTwin, possibly built on the ``meta`` device) loads it: the official
    tensors listed in IGNORED_OFFICIAL_KEYS dropped, every key, shape, dtype and value checked.

    Position embeddings of another shape mean the checkpoint was made for another input size or width.
    """
    buffers = dict(model.named_buffers())
    grid_errors = [
        f"{key} {tuple(value.shape)} vs {tuple(buffers[key].shape)}"
        for key, value in state.items()
        if _POSITION_BUFFERS.fullmatch(key) and key in buffers and tuple(value.shape) != tuple(buffers[key].shape)
    ]
    if grid_errors:
        raise CheckpointError(
            "checkpoint does not match the model config: it was made for another input size or width "
            f"(position embeddings differ: {'; '.join(grid_errors)}); use the config it was trained with"
        )
    state = {k: v for k, v in state.items() if not _IGNORED.fullmatch(k)}
    check_state_dict(state, model.state_dict(), "checkpoint", "the model config")
    return state


def load_autoencoder_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strictly load official-named autoencoder weights into `model` (a VidTwin); see
    :func:`checked_autoencoder_state_dict` for what is checked."""
    model.load_state_dict(checked_autoencoder_state_dict(model, state), strict=True)


# ---------------------------------------------------------------------------- reading files
def resolve_checkpoint_path(path: Union[str, Path]) -> Path:
    """A local path for `path`, downloading `hf://` references first (see `vidtwin.hub`)."""
    if is_hub_reference(str(path)):
        return resolve_hub_reference(str(path))
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def resolve_pretrained_location(name_or_path: Union[str, Path], revision: Optional[str] = None,
                                cache_dir: Optional[str] = None) -> Path:
    """The local path of what a ``from_pretrained`` call names: a local folder (which wins over a
    repo id of the same spelling), else a Hub repo id or ``hf://`` reference, fetched through the
    Hub cache (a ``save_pretrained`` folder, or the repo's official Lightning file)."""
    local = Path(str(name_or_path))
    if local.is_dir():
        return local
    if is_hub_reference(str(name_or_path)) or is_repo_id(str(name_or_path)):
        repo_id, pinned, filename = parse_hub_reference(str(name_or_path))
        return resolve_repo(repo_id, revision or pinned, filename, cache_dir)
    raise CheckpointError(f"{name_or_path} is neither a save_pretrained directory nor a Hub repo id (owner/name)")


def _torch_load(path: Union[str, Path], weights_only: bool):
    try:  # memory-mapped: a Lightning file's optimizer states are never read into memory
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)  # legacy (non-zip) format


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_PROTOCOL_MARK = b"\x80"  # the legacy format starts with a pickle (protocol 2 or later)


def _is_tensor_global(name: str) -> bool:
    """A global that a safe load accepts (tensors, storages, containers): torch's own allowlist."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals  # private: the fallback below mirrors it

        return name in _get_allowed_globals()
    except (ImportError, AttributeError):
        return name.split(".", 1)[0] == "torch" or name in ("collections.OrderedDict", "_codecs.encode")


_PICKLE_SCAN_BYTES = 64 * 2**20


def _pickle_streams(path: Union[str, Path]) -> Optional[list]:
    """The pickle byte streams of a checkpoint without running them: ``data.pkl`` of a zip (torch.save),
    else the whole file (the legacy format, several pickles in a row); None when unreadable."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return [archive.read(name) for name in archive.namelist() if name.endswith("data.pkl")]
        with open(path, "rb") as handle:  # the pickles lead; the tensors' bytes that follow are not needed
            return [handle.read(_PICKLE_SCAN_BYTES)]
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None


def pickled_globals(path: Union[str, Path], limit: int = 8) -> Optional[list]:
    """Names (``module.name``) of the Python objects that unpickling ``path`` would import, beyond
    those of tensors and containers, read from its opcodes without executing anything; None when
    the file holds no parseable pickle (damaged, or a file of another kind)."""
    import pickletools

    streams = _pickle_streams(path)
    if not streams:
        return None
    found, parsed = [], False
    for data in streams:
        position, strings = 0, []
        while position < len(data) and len(found) < limit:  # the legacy format: pickles one after another
            try:
                for opcode, argument, offset in pickletools.genops(data[position:]):
                    if opcode.name in ("GLOBAL", "INST"):
                        found.append(str(argument).replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(argument, str):
                        strings.append(argument)
                    if opcode.name == "STOP":
                        position += offset + 1
                        break
                else:
                    break
            except (ValueError, EOFError, KeyError, IndexError):  # genops' errors for a torn stream
                if not parsed:
                    return None
                break
            parsed = True
    unknown = [name for name in dict.fromkeys(found) if not _is_tensor_global(name)]
    return unknown if parsed else None


def _unsafe_pickle_error(path: Union[str, Path], names: list) -> CheckpointError:
    what = f"Python objects beyond tensors ({', '.join(names)})" if names else "Python objects beyond tensors"
    return CheckpointError(
        f"{path} needs full unpickling: it holds {what}, and unpickling them can run any code, so a safe load "
        "refuses it. If you trust this file, allow it with --allow-unsafe-pickle (in Python: allow_unsafe_pickle=True)"
    )


def load_checkpoint_object(path: Union[str, Path], allow_unsafe_pickle: bool = False) -> dict:
    """torch.load with `weights_only=True`; full unpickling only with `allow_unsafe_pickle=True`.

    A file that only full unpickling reads is refused with a message that says so (and names the
    objects it would import); a damaged file or one of another kind, with a message that says that.
    """
    not_readable = (f"{path} is not a readable PyTorch checkpoint (damaged, or a file of another kind); "
                    "give a .ckpt/.pt file, a .safetensors file or a save_pretrained directory")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL_MARK)):
        # torch never writes this, but a pickle of protocol 0 or 1 still runs its imports when loaded
        names = pickled_globals(path)
        if names:
            raise _unsafe_pickle_error(path, names)
        raise CheckpointError(not_readable)
    try:
        obj = _torch_load(path, weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError:
        # torch's own text advises weights_only=False, which is not the fix here; its wording of a
        # refused global differs between releases, so the file's opcodes are read instead
        names = pickled_globals(path)
        if names is None:
            raise CheckpointError(not_readable) from None
        raise _unsafe_pickle_error(path, names) from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, AttributeError, ImportError):
        raise CheckpointError(not_readable) from None  # a torn zip or a damaged pickle
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state_dict or a Lightning checkpoint")
    return obj


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
        path = weights
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None
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


__all__ = [
    "CheckpointError", "CONFIG_FILE", "WEIGHTS_FILE", "AUTOENCODER_MODULES", "IGNORED_OFFICIAL_KEYS",
    "check_state_dict", "check_weight_values", "checked_autoencoder_state_dict", "load_autoencoder_state_dict",
    "load_checkpoint_object", "read_checkpoint_state_dict", "resolve_checkpoint_path", "split_state_dict",
]
