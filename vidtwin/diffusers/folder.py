"""diffusers folders of ``AutoencoderVidTwin``: what ``vidtwin convert`` reads and writes.

A folder is ``config.json`` (``"_class_name": "AutoencoderVidTwin"``, every ``VidTwinConfig`` field
as a flat key, the latent statistics and the packed layout) + ``diffusion_pytorch_model.safetensors``
(the autoencoder's weights under ``autoencoder.<official name>``), and with ``--with-code`` the
model code (:mod:`.remote_code`). Reading one back into a :class:`~vidtwin.models.VidTwin` needs
no diffusers; writing one does (it is ``AutoencoderVidTwin.save_pretrained``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from ..errors import UserError
from ..hub import CONFIG_FILE
from ..models.config import config_fields
from ..state_dict_io import CheckpointError

CLASS_NAME = "AutoencoderVidTwin"
DIFFUSERS_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
WEIGHTS_PREFIX = "autoencoder."  # AutoencoderVidTwin holds the VidTwin as `autoencoder`
INSTALL_HINT = "pip install 'vidtwin[diffusers]' (diffusers needs Python >= 3.11)"


class DiffusersMissingError(UserError):
    """diffusers is needed (to write a diffusers folder) but not installed."""


def require_diffusers(what: str) -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise DiffusersMissingError(f"{what} needs diffusers: {INSTALL_HINT}") from None


def is_diffusers_folder(path) -> bool:
    """A folder whose ``config.json`` names ``AutoencoderVidTwin``."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name") == CLASS_NAME
    except (OSError, ValueError, AttributeError):
        return False


def read_diffusers_config(path) -> dict:
    """The whole ``config.json`` of an ``AutoencoderVidTwin`` folder."""
    if not is_diffusers_folder(path):
        raise CheckpointError(f"{path} is not a diffusers folder of {CLASS_NAME} (no {CONFIG_FILE} naming it)")
    return json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))


def load_from_diffusers_folder(path) -> Tuple["VidTwin", dict]:  # noqa: F821
    """``(VidTwin, config.json)`` of a diffusers folder, strictly loaded; needs no diffusers."""
    from ..models.vidtwin_ae import VidTwin

    values = read_diffusers_config(path)
    settings = {name: values[name] for name in config_fields() if name in values}
    weights = Path(path) / DIFFUSERS_WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {DIFFUSERS_WEIGHTS_FILE}")
    # VidTwin's loader strips the `autoencoder.` prefix (vidtwin.state_dict_io.split_state_dict) and
    # refuses any missing, unexpected or mis-shaped tensor.
    return VidTwin.from_pretrained(weights, config=settings), values


def statistics_settings(stats: Optional[dict]) -> dict:
    """The diffusers config keys of a ``vidtwin latent-stats`` file (none without one)."""
    if stats is None:
        return {}
    return {"latents_mean": list(stats["packed"]["mean"]), "latents_std": list(stats["packed"]["std"]),
            "latent_statistics": {"mean": dict(stats["mean"]), "std": dict(stats["std"])}}


def to_diffusers(model, settings: Optional[dict] = None, with_code: bool = False):
    """An ``AutoencoderVidTwin`` holding ``model``'s weights (a copy), with extra config ``settings``."""
    require_diffusers("a diffusers model")
    from .autoencoder_vidtwin import AutoencoderVidTwin
    from .remote_code import AUTO_MAP

    extra = dict(settings or {})
    if with_code:
        extra["auto_map"] = dict(AUTO_MAP)
    vae = AutoencoderVidTwin(**model.config.to_dict(), **extra)
    vae.autoencoder.load_state_dict(model.state_dict(), strict=True)
    return vae.eval()


def write_diffusers_folder(model, output: Path, settings: Optional[dict] = None, with_code: bool = False) -> Path:
    """Write ``model`` (a ``VidTwin``) as a diffusers folder; each file appears only when complete
    (written in a temporary folder beside ``output``, then moved in)."""
    vae = to_diffusers(model, settings, with_code)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        vae.save_pretrained(staging, safe_serialization=True)
        if with_code:
            from .remote_code import write_remote_code

            write_remote_code(staging)
        output.mkdir(exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.replace(item, output / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


__all__ = ["CLASS_NAME", "DIFFUSERS_WEIGHTS_FILE", "DiffusersMissingError", "WEIGHTS_PREFIX", "is_diffusers_folder",
           "load_from_diffusers_folder", "read_diffusers_config", "require_diffusers", "statistics_settings",
           "to_diffusers", "write_diffusers_folder"]
