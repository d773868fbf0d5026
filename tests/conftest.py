"""Shared fixtures: paths to the recorded official reference data and small models."""

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
OFFICIAL_CKPT = DATA / "tiny_official.ckpt"
OFFICIAL_CONFIG = DATA / "tiny_official_config.yaml"
OFFICIAL_IO = DATA / "tiny_io.safetensors"
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
PUBLISHED_CONFIG = REPO / "configs" / "vidtwin.yaml"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def official_model():
    from vidtwin import load_model

    return load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT)


@pytest.fixture
def tiny_model():
    from vidtwin import load_model

    return load_model(TINY_CONFIG)
