"""The latent models' files as functions: the module-level spellings of their methods, kept for callers.

The loading and saving themselves are :class:`vidtwin.pretrained.PretrainedModel`'s, shared with the
autoencoder: ``LatentGenerator.from_pretrained`` (a ``vidtwin train`` run folder, one of its
checkpoints, a ``save_pretrained`` folder or a Hub repo id / ``hf://`` reference),
``save_pretrained`` and ``push_to_hub``; the world model's are ``WorldModel``'s (and
:mod:`.world_files`). Every load is strict, and no Lightning is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ..pretrained import (
    EMA_STATE_KEY, RUN_CHECKPOINTS, ModelFormat, config_from_dict, newest_valid_checkpoint, read_config_json,
)
from ..hub import CONFIG_FILE
from .generator import GENERATOR_FORMAT, MODEL_CARD, LatentGenerator
from .world import WORLD_FORMAT, WorldModel

FORMAT_NAME = GENERATOR_FORMAT.name
FORMAT_VERSION = GENERATOR_FORMAT.version
CHECKPOINT_KEY = GENERATOR_FORMAT.checkpoint_key  # {"config": GeneratorConfig dict, "autoencoder": {...} or None}
EMA_KEY = EMA_STATE_KEY
STATE_PREFIX = GENERATOR_FORMAT.state_prefix
# The model class of each format that the functions below take as ``fmt``.
_MODEL_CLASSES = {GENERATOR_FORMAT.name: LatentGenerator, WORLD_FORMAT.name: WorldModel}


def _model_class(fmt: ModelFormat):
    return _MODEL_CLASSES[fmt.name]


def read_generator_config(directory: Union[str, Path], fmt: ModelFormat = GENERATOR_FORMAT):
    """The config (a :class:`GeneratorConfig` by default) stored in a ``save_pretrained`` folder's ``config.json``."""
    return config_from_dict(fmt, read_config_json(directory, fmt)[fmt.config_key], Path(directory) / CONFIG_FILE)


def newest_run_checkpoint(run_dir: Union[str, Path]) -> Path:
    """The newest readable checkpoint of a ``vidtwin train`` run: the one ``--resume`` takes."""
    return newest_valid_checkpoint(Path(run_dir) / RUN_CHECKPOINTS, "load a model from the run",
                                   "give a checkpoint file or a save_pretrained folder instead")[0]


def load_training_checkpoint(path: Union[str, Path], device="cpu", ema: Optional[bool] = None,
                             fmt: ModelFormat = GENERATOR_FORMAT):
    """A model (the generator by default) from a checkpoint that ``vidtwin train`` wrote: its EMA
    weights when stored (``ema=None``), or the trained weights (``ema=False``)."""
    return _model_class(fmt).from_pretrained(path, device, ema=ema)


def from_pretrained(name_or_path, device="cpu", revision: Optional[str] = None, cache_dir: Optional[str] = None,
                    fmt: ModelFormat = GENERATOR_FORMAT):
    """``LatentGenerator.from_pretrained`` (or, with ``fmt``, another latent model's)."""
    return _model_class(fmt).from_pretrained(name_or_path, device, revision=revision, cache_dir=cache_dir)


def load_generator(reference: Union[str, Path], device="cpu", fmt: ModelFormat = GENERATOR_FORMAT):
    """Any generator reference ``vidtwin generate`` takes: a ``vidtwin train`` run folder, one of its
    checkpoints, a ``save_pretrained`` folder, or a Hub repo id / ``hf://`` reference."""
    return _model_class(fmt).from_pretrained(reference, device)


def write_pretrained(model, directory: Union[str, Path], fmt: Optional[ModelFormat] = None) -> Path:
    """``model.write_pretrained(directory)``: ``config.json`` + ``model.safetensors`` (``fmt`` is
    ignored: a model class knows its format)."""
    return model.write_pretrained(directory)


def model_card(model, repo_id: str = "OWNER/NAME", **fields) -> str:
    """``model.model_card(repo_id, **fields)``."""
    return model.model_card(repo_id, **fields)


def save_pretrained(model, save_directory: Union[str, Path], **kwargs):
    """``model.save_pretrained(save_directory, **kwargs)``."""
    return model.save_pretrained(save_directory, **kwargs)


def push_to_hub(model, repo_id: str, **kwargs) -> str:
    """``model.push_to_hub(repo_id, **kwargs)``."""
    return model.push_to_hub(repo_id, **kwargs)


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "CHECKPOINT_KEY", "GENERATOR_FORMAT", "MODEL_CARD", "ModelFormat",
           "from_pretrained", "load_generator", "load_training_checkpoint", "model_card", "newest_run_checkpoint",
           "push_to_hub", "read_generator_config", "save_pretrained", "write_pretrained"]
