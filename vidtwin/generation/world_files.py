"""The world model's files as functions: the module-level spellings of ``WorldModel``'s methods.

    model = load_world_model("logs/digits_world")        # a `vidtwin train` run, checkpoint, saved folder or Hub repo
    save_world_model(model, "digits_world/")             # config.json + model.safetensors

The format (``config.json``'s ``"vidtwin-world-model"``, the checkpoint entry
:data:`WORLD_CHECKPOINT_KEY`) is declared beside the model, as ``WORLD_FORMAT`` in
:mod:`vidtwin.generation.world`; loading and saving are :class:`vidtwin.pretrained.PretrainedModel`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from ..hub import CONFIG_FILE
from ..pretrained import config_from_dict, read_config_json
from .config import WorldModelConfig
from .world import WORLD_CHECKPOINT_KEY, WORLD_FORMAT, WorldModel


def load_world_model(reference: Union[str, Path], device="cpu") -> WorldModel:
    """``WorldModel.from_pretrained(reference, device)``: a ``vidtwin train`` run folder, one of its
    checkpoints (EMA weights when stored), a ``save_pretrained`` folder or a Hub repo id, in eval mode."""
    return WorldModel.from_pretrained(reference, device)


def save_world_model(model: WorldModel, directory: Union[str, Path]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``, each complete or absent
    (``model.save_pretrained`` also writes the model card)."""
    return model.write_pretrained(directory)


def read_world_config(directory: Union[str, Path]) -> WorldModelConfig:
    """The :class:`WorldModelConfig` stored in a ``save_pretrained`` folder's ``config.json``."""
    return config_from_dict(WORLD_FORMAT, read_config_json(directory, WORLD_FORMAT)[WORLD_FORMAT.config_key],
                            Path(directory) / CONFIG_FILE)


__all__ = ["WORLD_CHECKPOINT_KEY", "WORLD_FORMAT", "load_world_model", "read_world_config", "save_world_model"]
