"""Stand-ins for the loading layer of the vidtwin package in a model folder's own code.

A folder converted with ``vidtwin convert --format diffusers --with-code`` carries the model code
beside its weights (:mod:`vidtwin.diffusers.remote_code`), so that
``diffusers.AutoModel.from_pretrained(folder, trust_remote_code=True)`` needs no vidtwin package.
There ``vidtwin/models/vidtwin_ae.py`` imports its file-loading helpers (``vidtwin.hub``,
``vidtwin.pretrained``, ``vidtwin.state_dict_io``) from this module instead. diffusers does the
loading there, so the network only needs the names to exist: a plain base class, a record type,
and functions that say they need the package.
"""

from __future__ import annotations

RUN_CONFIG_FILE = "config.yaml"


class CheckpointError(ValueError):
    """A file this code cannot read (the vidtwin package reads every format)."""


class PretrainedModel:
    """Nothing: in a diffusers folder, ``AutoencoderVidTwin.from_pretrained`` loads the weights."""


class ModelFormat:
    """The record of a file format; kept only so that the model module's declarations run."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def _needs_the_package(name: str):
    def unavailable(*args, **kwargs):
        raise CheckpointError(f"{name} needs the vidtwin package (pip install vidtwin); this folder's own code "
                              "only runs the model that diffusers loads")

    unavailable.__name__ = name
    return unavailable


def __getattr__(name: str):
    """Any other loading helper the model module imports: a function that says it needs the package."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _needs_the_package(name)
