"""Loading and saving the world model, through the generator's file functions (:mod:`.files`).

    model = load_world_model("logs/digits_world")        # a train.py run, checkpoint or save_pretrained folder
    save_world_model(model, "digits_world/")             # config.json + model.safetensors

``config.json`` holds ``{"format": "vidtwin-world-model", "format_version": 1, "world_model":
WorldModelConfig dict, "autoencoder": {"config", "ckpt"}}``: the action vocabulary is part of the
config, and the autoencoder record names the files the tokens came from, so that ``scripts.play``
needs nothing else. A ``train.py`` checkpoint holds the same under :data:`WORLD_CHECKPOINT_KEY`,
the weights under ``world.`` and the EMA weights under ``ema_state_dict``. Every load is strict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from .config import WorldModelConfig
from .files import ModelFormat, load_generator, write_pretrained
from .world import WorldModel

WORLD_CHECKPOINT_KEY = "vidtwin_world_model"
WORLD_FORMAT = ModelFormat("vidtwin-world-model", 1, "world model", "world_model", WORLD_CHECKPOINT_KEY, "world.",
                           WorldModelConfig, WorldModel,
                           "is it a generator's or an autoencoder's folder? Give a world model's run directory")


def load_world_model(reference: Union[str, Path], device="cpu") -> WorldModel:
    """A world model from a ``train.py`` run directory, one of its checkpoints (EMA weights when
    stored), a ``save_pretrained`` folder or a Hub repo id, in eval mode."""
    return load_generator(reference, device, fmt=WORLD_FORMAT)


def save_world_model(model: WorldModel, directory: Union[str, Path]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``, each complete or absent."""
    return write_pretrained(model, directory, fmt=WORLD_FORMAT)


__all__ = ["WORLD_CHECKPOINT_KEY", "WORLD_FORMAT", "load_world_model", "save_world_model"]
