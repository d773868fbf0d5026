"""Loading and saving the latent models: the one place that turns their files into a model and back.

Two models share these functions, each described by a :class:`ModelFormat`: the latent generator
(:data:`GENERATOR_FORMAT`, the default everywhere) and the world model (``WORLD_FORMAT`` in
:mod:`vidtwin.generation.world_files`).

Read: a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``), a Hub repo id
(``owner/name[@revision]``) or ``hf://`` reference, a checkpoint written by ``train.py``
(EMA weights when it holds them), or a ``train.py`` run directory (its newest checkpoint). Every
load is strict: a missing, unexpected or mis-shaped key is an error naming the keys.

``LatentGenerator.from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` are thin entry points
to the functions here, as ``VidTwin``'s are to :mod:`vidtwin.checkpoint`; the Hub's side (downloads
through its cache, uploads, the card's metadata) is :mod:`vidtwin.hub`'s. No Lightning is imported:
a training checkpoint is read as the plain dict ``torch.load(weights_only=True)`` gives.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch

from ..atomic_io import atomic_path, atomic_write_text
from ..hub import CONFIG_FILE, WEIGHTS_FILE, is_hub_reference, is_repo_id, parse_hub_reference, upload_folder
from ..state_dict_io import CheckpointError, check_state_dict, read_checkpoint_state_dict, resolve_pretrained_location
from .config import GeneratorConfig, GeneratorConfigError
from .generator import LatentGenerator

FORMAT_NAME = "vidtwin-generator"
FORMAT_VERSION = 1
# Entries of a train.py checkpoint (vidtwin.training.generator_module writes them).
CHECKPOINT_KEY = "vidtwin_generator"  # {"config": GeneratorConfig dict, "autoencoder": {"config", "ckpt"} or None}
EMA_KEY = "ema_state_dict"
STATE_PREFIX = "generator."


@dataclass(frozen=True)
class ModelFormat:
    """How one kind of model is stored: names in ``config.json`` and ``train.py`` checkpoints."""

    name: str  # config.json "format"
    version: int  # the newest format_version this code reads and writes
    kind: str  # in messages: "generator", "world model"
    config_key: str  # config.json entry that holds the model config
    checkpoint_key: str  # train.py checkpoint entry: {"config": ..., "autoencoder": ...}
    state_prefix: str  # the training module's attribute holding the model, with a dot
    config_class: Any  # from_dict(values) -> config
    build: Callable[[Any], torch.nn.Module]  # config -> model
    other_hint: str  # what to do when the files hold something else


GENERATOR_FORMAT = ModelFormat(FORMAT_NAME, FORMAT_VERSION, "generator", "generator", CHECKPOINT_KEY, STATE_PREFIX,
                               GeneratorConfig, LatentGenerator,
                               "is it an autoencoder's folder? Load that with VidTwin.from_pretrained")

MODEL_CARD = """---
{{ card_data }}
---

# VidTwin latent generator

A class-conditional flow-matching transformer over the latents of a
[VidTwin](https://arxiv.org/abs/2412.17726) video autoencoder ({{ depth }} blocks, width {{ hidden }},
{{ tokens }} tokens per clip, {{ classes }} classes). Decode its samples with the autoencoder it was trained on.

```python
from vidtwin.generation import LatentGenerator

generator = LatentGenerator.from_pretrained("{{ repo_id }}")
latents = generator.sample([0, 1], steps=50, guidance=2.0, seed=0)
```

## Config

```json
{{ config_json }}
```
"""
CARD_TAGS = ["video", "vidtwin", "latent-generator", "flow-matching"]


# ---------------------------------------------------------------------------- loading
def read_generator_config(directory: Union[str, Path], fmt: ModelFormat = GENERATOR_FORMAT):
    """The config (a :class:`GeneratorConfig` by default) stored in a ``save_pretrained`` folder's ``config.json``."""
    return _config_of(_read_config_json(directory, fmt), Path(directory) / CONFIG_FILE, fmt)


def _read_config_json(directory: Union[str, Path], fmt: ModelFormat) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; expected a {fmt.kind} save_pretrained directory")
    try:
        values = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict) or values.get("format") != fmt.name or fmt.config_key not in values:
        raise CheckpointError(f"{path} is not a VidTwin {fmt.kind} config (format {fmt.name!r}); {fmt.other_hint}")
    version = values.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > fmt.version:
        raise CheckpointError(f"{path} has format_version {version!r}; this code reads versions up to "
                              f"{fmt.version}: update the vidtwin package to load it")
    return values


def _config_of(values: dict, where, fmt: ModelFormat = GENERATOR_FORMAT):
    try:
        return fmt.config_class.from_dict(values[fmt.config_key] if fmt.config_key in values else values["config"])
    except (GeneratorConfigError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{where}: not a {fmt.kind} config ({error})") from None


def _loaded(config, state: dict, source, autoencoder: Optional[dict], device, fmt: ModelFormat = GENERATOR_FORMAT):
    model = fmt.build(config)
    if hasattr(model, "upgrade_state_dict"):  # names of an older release
        state = model.upgrade_state_dict(dict(state))
    try:
        check_state_dict(state, model.state_dict(), "checkpoint", f"the {fmt.kind} config")
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    model.load_state_dict(state, strict=True)
    model.autoencoder_files = autoencoder
    return model.to(device).eval()


def newest_run_checkpoint(run_dir: Union[str, Path]) -> Path:
    """``checkpoints/last.ckpt`` of a ``train.py`` run, else its checkpoint with the highest step."""
    directory = Path(run_dir) / "checkpoints"
    last = directory / "last.ckpt"
    if last.is_file():
        return last
    steps = sorted(directory.glob("*step_*.ckpt"), key=lambda path: path.stem.rsplit("_", 1)[-1])
    if not steps:
        raise CheckpointError(f"the run {run_dir} has no checkpoint in {directory}; train it first "
                              f"(python train.py --resume {run_dir})")
    return steps[-1]


def load_training_checkpoint(path: Union[str, Path], device="cpu", ema: Optional[bool] = None,
                             fmt: ModelFormat = GENERATOR_FORMAT):
    """A model (the generator by default) from a checkpoint that ``train.py`` wrote: its config and
    autoencoder record, and its EMA weights when stored (``ema=None``), or the trained weights (``ema=False``)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file or another format: pickle and zip raise many types
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(fmt.checkpoint_key), dict):
        raise CheckpointError(f"{path} is not a checkpoint of the latent {fmt.kind} (no {fmt.checkpoint_key} entry); "
                              "an autoencoder's checkpoint goes to --ckpt")
    entry = checkpoint[fmt.checkpoint_key]
    config = _config_of(entry, path, fmt)
    if ema is not False and isinstance(checkpoint.get(EMA_KEY), dict):
        state = dict(checkpoint[EMA_KEY])
    elif ema:
        raise CheckpointError(f"{path} stores no EMA weights ({EMA_KEY})")
    else:
        state = {key[len(fmt.state_prefix):]: value for key, value in checkpoint.get("state_dict", {}).items()
                 if key.startswith(fmt.state_prefix)}
    return _loaded(config, state, path, entry.get("autoencoder"), device, fmt)


def from_pretrained(name_or_path, device="cpu", revision: Optional[str] = None,
                    cache_dir: Optional[str] = None, fmt: ModelFormat = GENERATOR_FORMAT):
    """Load a ``save_pretrained`` folder, a Hub repo id (``owner/name[@revision]``) or an
    ``hf://owner/name[@revision]`` reference, with strict key checking, in eval mode."""
    directory = resolve_pretrained_location(name_or_path, revision, cache_dir)
    if not directory.is_dir():  # the repo offered a single (official autoencoder) file
        repo_id = parse_hub_reference(str(name_or_path))[0]
        raise CheckpointError(f"{repo_id} holds no {fmt.kind} ({CONFIG_FILE} + {WEIGHTS_FILE})")
    values = _read_config_json(directory, fmt)
    state = read_checkpoint_state_dict(directory)
    return _loaded(_config_of(values, directory / CONFIG_FILE, fmt), state, name_or_path, values.get("autoencoder"),
                   device, fmt)


def load_generator(reference: Union[str, Path], device="cpu", fmt: ModelFormat = GENERATOR_FORMAT):
    """Any generator reference ``inference.py generate`` takes (or, with ``fmt``, world model
    reference): a ``train.py`` run directory, one of its checkpoints, a ``save_pretrained``
    folder, or a Hub repo id / ``hf://`` reference."""
    path = Path(str(reference))
    if path.is_dir() and (path / "checkpoints").is_dir() and not (path / CONFIG_FILE).is_file():
        return load_training_checkpoint(newest_run_checkpoint(path), device, fmt=fmt)
    if path.is_file():
        return load_training_checkpoint(path, device, fmt=fmt)
    if path.is_dir() or is_hub_reference(str(reference)) or is_repo_id(str(reference)):
        return from_pretrained(reference, device, fmt=fmt)
    raise CheckpointError(f"{fmt.kind} {reference} does not exist; give a train.py run directory, a checkpoint, "
                          "a save_pretrained folder or a Hub repo id")


# ---------------------------------------------------------------------------- saving and sharing
def write_pretrained(model, directory: Union[str, Path], fmt: ModelFormat = GENERATOR_FORMAT) -> Path:
    """Write ``config.json`` (the config, with the generator's latent statistics, and the
    autoencoder record) and ``model.safetensors``; each file appears only when complete."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as temp:
        save_file(weights, str(temp), metadata={"format": fmt.name, "format_version": str(fmt.version)})
    if hasattr(model, "normalization"):
        model.config.normalization = model.normalization.to_dict()  # the buffers may have been loaded since
    config = {"format": fmt.name, "format_version": fmt.version, fmt.config_key: model.config.to_dict()}
    if getattr(model, "autoencoder_files", None):
        config["autoencoder"] = model.autoencoder_files
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2))
    return directory


def model_card(model: LatentGenerator, repo_id: str = "OWNER/NAME", **fields) -> str:
    """The model card (``README.md``): size, tokens, classes, how to load, the config."""
    from huggingface_hub import ModelCard, ModelCardData

    values = dict(depth=model.config.depth, hidden=model.config.hidden_size, tokens=model.packing.num_tokens,
                  classes=model.config.num_classes, config_json=json.dumps(model.config.to_dict(), indent=2), repo_id=repo_id)
    card_data = ModelCardData(library_name="vidtwin", tags=CARD_TAGS)
    return str(ModelCard.from_template(card_data=card_data, template_str=MODEL_CARD, **{**values, **fields}))


def save_pretrained(model: LatentGenerator, save_directory: Union[str, Path], *, repo_id: Optional[str] = None,
                    push_to_hub: bool = False, model_card_kwargs: Optional[dict] = None, **push_kwargs):
    """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` (kept when the
    folder has one), each complete or absent; with ``push_to_hub=True`` also upload them to
    ``repo_id`` (default: the folder's name) and return the commit's URL."""
    directory = write_pretrained(model, save_directory)
    card = directory / "README.md"
    if not card.exists():
        atomic_write_text(card, model_card(model, repo_id or "OWNER/NAME", **(model_card_kwargs or {})))
    if push_to_hub:
        return upload_folder(directory, repo_id or directory.name, **push_kwargs)
    return None


def push_to_hub(model: LatentGenerator, repo_id: str, *, model_card_kwargs: Optional[dict] = None, **upload_kwargs) -> str:
    """Upload ``config.json``, ``model.safetensors`` and the model card to the Hub repo ``repo_id``
    (created if needed) in one commit; returns the commit's URL."""
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, repo_id=repo_id, model_card_kwargs=model_card_kwargs)
        upload_kwargs.setdefault("commit_message", "Upload VidTwin latent generator")
        return upload_folder(folder, repo_id, **upload_kwargs)


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "CHECKPOINT_KEY", "GENERATOR_FORMAT", "ModelFormat", "from_pretrained", "load_generator", "load_training_checkpoint",
           "model_card", "newest_run_checkpoint", "push_to_hub", "read_generator_config", "save_pretrained", "write_pretrained"]
