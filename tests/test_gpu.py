"""Checks that need a CUDA device; skipped elsewhere. Run by scripts/gpu_check.sh on a GPU machine."""

import pytest
import torch
from safetensors.torch import load_file

from vidtwin import VidTwinConfig, load_model
from vidtwin.models.attention import flash_attention_available

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, OFFICIAL_IO

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@torch.no_grad()
def test_cuda_float32_matches_the_official_recording():
    model = load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT, device="cuda")
    recorded = load_file(str(OFFICIAL_IO))
    # TF32 matmuls are allowed by default on some setups; 1e-3 covers them, 1e-4 holds with TF32 off.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reconstruction, _ = model(recorded["x"].cuda())
    assert (reconstruction.cpu() - recorded["dec"]).abs().max() < 1e-4


@torch.no_grad()
def test_bf16_autocast_stays_close_to_float32():
    model = load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT, device="cuda")
    x = load_file(str(OFFICIAL_IO))["x"].cuda()
    reference, _ = model(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low, _ = model(x)
    mse = (low.float() - reference).square().mean()
    psnr = 10 * torch.log10(4.0 / mse)  # signal range [-1, 1]
    assert psnr > 30, psnr


@pytest.mark.skipif(not flash_attention_available(), reason="flash-attn is not installed")
@torch.no_grad()
def test_flash_backend_matches_sdpa():
    base = load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT, device="cuda")
    config = VidTwinConfig(**{**base.config.to_dict(), "attention_backend": "flash"})
    flash = load_model(config, OFFICIAL_CKPT, device="cuda")
    x = load_file(str(OFFICIAL_IO))["x"].cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, _ = base(x)
        b, _ = flash(x)
    assert (a.float() - b.float()).abs().max() < 2e-2
