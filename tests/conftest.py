"""Shared fixtures: paths to the recorded official reference data and small models."""

import contextlib
import subprocess
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


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """Mount a tmpfs of ``size`` (e.g. "16k") on a new ``folder``: a disk that fills up for real.
    Skips the test where mounting is not allowed."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@torch.no_grad()
def outputs_in_official_layout(model, x, x2) -> dict:
    """Every tensor the official recording holds, computed by our model, in the official layouts."""
    from vidtwin import VidTwinLatents

    latents, other = model.encode(x), model.encode(x2)
    return {
        "z": model.encoder(x),
        "z_structure": latents.structure.permute(0, 2, 3, 4, 1),  # (B, d, Q, h, w) -> official (B, Q, h, w, d)
        "z_dynamics_x": latents.dynamics_x,
        "z_dynamics_y": latents.dynamics_y,
        "dec": model.decode(latents),
        "dec_structure_only": model.decode(latents, only="structure"),
        "dec_dynamics_only": model.decode(latents, only="dynamics"),
        "dec_cross": model.decode(VidTwinLatents(latents.structure, other.dynamics_x, other.dynamics_y)),
        "kl_loss": latents.kl.reshape(1),
    }


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """A torch hub cache without the VGG16 file, so that LPIPS cannot find ImageNet weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def official_model():
    from vidtwin import load_model

    return load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT)


@pytest.fixture
def tiny_model():
    from vidtwin import load_model

    return load_model(TINY_CONFIG)


def rotated_copy(source: Path, target: Path, degrees: int, hflip: bool = False) -> Path:
    """A copy of the MP4 ``source`` whose display matrix shows it turned ``degrees`` counter-clockwise
    (then mirrored left-right with ``hflip``), as phones record portrait videos.

    The frames stay as stored: only the track header's matrix changes, as FFmpeg's muxer writes it
    (16.16 fixed point, big-endian), so any PyAV version can make it.
    """
    import math
    import struct

    data = bytearray(Path(source).read_bytes())
    box = data.index(b"tkhd")
    matrix_at = box + 4 + (40 if data[box + 4] == 0 else 52)  # after version, flags, times, ids, layer, volume
    cos, sin = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    a, b, c, d = cos, -sin, sin, cos  # FFmpeg's counter-clockwise rotation
    if hflip:
        a, c = -a, -c
    matrix = [a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30]
    data[matrix_at:matrix_at + 36] = struct.pack(">9i", *matrix)
    Path(target).write_bytes(bytes(data))
    return Path(target)
