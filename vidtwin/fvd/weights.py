"""Finding, checking and fingerprinting the I3D weights file; nothing is ever downloaded.

The weights are DeepMind's Kinetics-400 I3D converted to PyTorch, ``i3d_pretrained_400.pt`` (a
plain state dict, about 50 MB), as published with TATS and used by VideoGPT and ``cd-fvd``. A file
given with ``--fvd-weights`` is used as is; otherwise the standard name is looked up in the torch
hub cache (``$TORCH_HOME/hub/checkpoints/``) and in the Hugging Face hub cache (any snapshot of any
model repository). When none is found, the error says which file is needed and where it is
published, before any video is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from .i3d import InceptionI3d
from .protocol import FVDError

logger = logging.getLogger(__name__)

WEIGHTS_FILENAME = "i3d_pretrained_400.pt"
WEIGHTS_URL = "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt"


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def hugging_face_cache() -> Path:
    """$HF_HUB_CACHE as set now, else the cache huggingface_hub derived from $HF_HOME at import."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def cached_weights() -> Path | None:
    """The standard weights file in the torch hub cache, else in any Hugging Face cache snapshot."""
    candidate = torch_hub_checkpoints() / WEIGHTS_FILENAME
    if candidate.is_file():
        return candidate
    # Snapshot folders hold the repository's tree: the file may sit at its root or one folder down.
    for pattern in (f"models--*/snapshots/*/{WEIGHTS_FILENAME}", f"models--*/snapshots/*/*/{WEIGHTS_FILENAME}"):
        found = sorted(path for path in hugging_face_cache().glob(pattern) if path.is_file())
        if found:
            return found[0]
    return None


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """``path`` when given (it must exist), else the cached standard file; FVDError naming the file when absent."""
    if path is not None:
        if not Path(path).is_file():
            raise FVDError(f"--fvd-weights {path} does not exist; FVD needs the I3D weights {WEIGHTS_FILENAME} ({WEIGHTS_URL})")
        return Path(path)
    found = cached_weights()
    if found is None:
        raise FVDError(
            f"FVD needs the I3D weights {WEIGHTS_FILENAME}, published at {WEIGHTS_URL}; it is not in "
            f"{torch_hub_checkpoints()}/ nor in the Hugging Face cache {hugging_face_cache()}, and nothing is "
            f"downloaded automatically: download it and pass --fvd-weights FILE (or put it into {torch_hub_checkpoints()}/)"
        )
    logger.info("I3D weights: %s", found)
    return found


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes: the weights' fingerprint in every report."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_i3d_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of an I3D weights file, checked against the network's names and shapes."""
    what = f"the I3D weights {path}"
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a file that is not a checkpoint
        raise FVDError(f"{what} are not a readable PyTorch state dict ({type(error).__name__}); "
                       f"FVD needs {WEIGHTS_FILENAME} ({WEIGHTS_URL})") from None
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise FVDError(f"{what} are not a state dict of tensors; FVD needs {WEIGHTS_FILENAME} ({WEIGHTS_URL})")
    expected = InceptionI3d().state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        problems = [f"{len(keys)} {label} (e.g. {keys[0]})" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("wrongly shaped tensors", wrong_shape)) if keys]
        raise FVDError(f"{what} do not fit the I3D network: {', '.join(problems)}; FVD needs {WEIGHTS_FILENAME} ({WEIGHTS_URL})")
    check_values(state_dict, expected, what)
    return state_dict


def check_values(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Refuse integer values for float parameters and any NaN or infinity, naming the first such tensor.

    Either would pass the shape check and only show after every clip's features were computed:
    as a failed square root (NaN) or as features that measure nothing.
    """
    for name in expected:
        tensor = state_dict[name]
        if not expected[name].is_floating_point():
            continue  # BatchNorm's num_batches_tracked counts updates
        if not tensor.is_floating_point():
            raise FVDError(f"{what} hold {tensor.dtype} values in {name}, a float parameter: the file is damaged or "
                           f"not I3D weights; FVD needs {WEIGHTS_FILENAME} ({WEIGHTS_URL})")
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise FVDError(f"{what} hold {bad} non-finite value(s) (NaN or infinity) in {name}: the file is damaged; "
                           f"FVD needs {WEIGHTS_FILENAME} ({WEIGHTS_URL})")


def load_i3d(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[InceptionI3d, dict]:
    """The I3D network in eval mode on ``device`` and ``{"file", "sha256"}`` of its weights file."""
    model = InceptionI3d()
    model.load_state_dict(read_i3d_state_dict(path))
    fingerprint = {"file": os.path.abspath(path), "sha256": file_sha256(path)}
    return model.eval().to(device), fingerprint
