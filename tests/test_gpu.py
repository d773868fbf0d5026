"""Checks that need a CUDA device; skipped elsewhere. Run by scripts/gpu_check.sh on a GPU machine."""

import contextlib

import pytest
import torch
from safetensors.torch import load_file

from vidtwin import VidTwinConfig, load_model
from vidtwin.models.attention import flash_attention_available

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, OFFICIAL_IO

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@contextlib.contextmanager
def tf32_off():
    """TF32 matmuls and convolutions off for the block, then back as they were: the switches are
    process-wide, and the tests and benchmarks after this one must run with the settings they chose."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def test_tf32_off_restores_the_switches_it_turned_off():
    # The switches are plain process settings, so this runs on any machine.
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for on in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
            with pytest.raises(RuntimeError, match="inside"):
                with tf32_off():
                    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                    raise RuntimeError("inside")  # a failing assertion in the block restores them as well
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (on, on)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@needs_cuda
@torch.no_grad()
def test_cuda_float32_matches_the_official_recording():
    model = load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT, device="cuda")
    recorded = load_file(str(OFFICIAL_IO))
    # TF32 matmuls are allowed by default on some setups; 1e-3 covers them, 1e-4 holds with TF32 off.
    with tf32_off():
        reconstruction, _ = model(recorded["x"].cuda())
    assert (reconstruction.cpu() - recorded["dec"]).abs().max() < 1e-4


@needs_cuda
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


@needs_cuda
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
