"""Tests of the per-frame quality metrics against independent formulas and scikit-image."""

import math

import numpy as np
import pytest
import torch

from vidtwin.losses import LPIPS
from vidtwin.metrics import (
    lpips_per_frame,
    psnr_per_frame,
    ssim_per_frame,
    to_unit_range,
    video_metrics,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

skimage_metrics = pytest.importorskip("skimage.metrics")


def frame_hwc(video, b, t):
    """Frame t of clip b of a (B, 3, T, H, W) tensor as an (H, W, 3) numpy array."""
    return video[b, :, t].permute(1, 2, 0).double().numpy()


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    return LPIPS(pretrained=False)


def test_identical_videos(random_lpips):
    torch.manual_seed(0)
    video = torch.rand(2, 3, 2, 24, 24) * 2 - 1
    metrics = video_metrics(video, video.clone(), lpips_model=random_lpips)
    assert metrics["psnr"].shape == (2, 2) and np.isinf(metrics["psnr"]).all()
    np.testing.assert_allclose(metrics["ssim"], 1.0, atol=1e-12)
    np.testing.assert_array_equal(metrics["lpips"], 0.0)
    capped = video_metrics(video, video.clone(), max_value=100.0)
    np.testing.assert_array_equal(capped["psnr"], 100.0)
    assert "lpips" not in capped


def test_psnr_matches_formula_and_skimage():
    torch.manual_seed(1)
    x = 0.1 + 0.8 * torch.rand(2, 3, 2, 24, 20, dtype=torch.float64)  # in [0.1, 0.9]: no clipping
    # +-0.05 checkerboard: MSE is exactly 0.0025 in every frame, PSNR = 10 * log10(400).
    sign = (torch.arange(24).view(24, 1) + torch.arange(20).view(1, 20)) % 2 * 2 - 1
    y = x + 0.05 * sign
    psnr = psnr_per_frame(x, y)
    assert psnr.shape == (2, 2)
    torch.testing.assert_close(psnr, torch.full((2, 2), 10 * math.log10(400.0), dtype=torch.float64))

    noisy = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    psnr = psnr_per_frame(noisy, x)
    for b in range(2):
        for t in range(2):
            mse = np.mean((frame_hwc(noisy, b, t) - frame_hwc(x, b, t)) ** 2)
            assert psnr[b, t].item() == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-9)
            expected = skimage_metrics.peak_signal_noise_ratio(frame_hwc(x, b, t), frame_hwc(noisy, b, t), data_range=1.0)
            assert psnr[b, t].item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage(dtype):
    torch.manual_seed(2)
    x = torch.rand(2, 3, 2, 32, 40)
    # Smooth content plus noise so both the structure and the contrast terms matter.
    x = torch.nn.functional.avg_pool3d(x, (1, 5, 5), stride=1, padding=(0, 2, 2), count_include_pad=False)
    y = (x + 0.08 * torch.randn_like(x)).clamp(0, 1)
    ssim = ssim_per_frame(x.to(dtype), y.to(dtype), compute_dtype=dtype)
    assert ssim.shape == (2, 2)
    for b in range(2):
        for t in range(2):
            expected = skimage_metrics.structural_similarity(
                frame_hwc(x, b, t), frame_hwc(y, b, t), gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1.0, channel_axis=2,
            )
            assert abs(ssim[b, t].item() - expected) < 1e-4
    assert (ssim < 0.99).all()
    torch.testing.assert_close(ssim_per_frame(y, x, compute_dtype=dtype), ssim.to(torch.float32 if dtype == torch.float32 else dtype))


def test_frames_layout_and_small_frames():
    x = torch.rand(5, 3, 16, 16)
    assert psnr_per_frame(x, x * 0.5).shape == (5,)
    assert ssim_per_frame(x, x * 0.5).shape == (5,)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_per_frame(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_per_frame(x, x[:2])


def test_to_unit_range_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    torch.testing.assert_close(to_unit_range(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_lpips_per_frame_chunks_and_video_layout(random_lpips):
    torch.manual_seed(3)
    ref = torch.rand(2, 3, 3, 24, 24) * 2 - 1
    rec = (ref + 0.3 * torch.randn_like(ref)).clamp(-1, 1)
    whole = lpips_per_frame(ref, rec, random_lpips, batch_size=64)
    chunked = lpips_per_frame(ref, rec, random_lpips, batch_size=4)
    assert whole.shape == (2, 3)
    torch.testing.assert_close(chunked, whole)
    # Frame (b=1, t=2) of the video is the 6th folded frame.
    direct = random_lpips(ref[1:2, :, 2], rec[1:2, :, 2]).flatten()
    torch.testing.assert_close(whole[1, 2:3], direct)
    assert (whole > 0).all()
