"""Per-frame reconstruction quality: PSNR, SSIM and LPIPS.

Used by training validation and by the ``evaluate`` command. Definitions follow the official
evaluation (per-frame metrics on frames folded out of the clips, averaged afterwards):

- PSNR on [0, 1] frames: ``10 * log10(data_range**2 / MSE)``, MSE over (C, H, W) of one frame.
- SSIM on [0, 1] frames (Wang et al. 2004) with the constants and window of
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, the SSIM map averaged over the positions where the window fits inside the frame
  (skimage crops ``(11 - 1) // 2 = 5`` pixels at each border), then over the channels.
- LPIPS (VGG) on [-1, 1] frames.

Every function accepts videos ``(B, 3, T, H, W)`` -> per-frame values ``(B, T)``, or frames
``(N, 3, H, W)`` -> ``(N,)``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Map model-space values in [-1, 1] to [0, 1], clamping what falls outside."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _as_frames(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Fold videos into frames; return the frames and the leading shape of the per-frame output."""
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim == 5:
        b, _, t = x.shape[:3]
        fold = lambda v: rearrange(v, "b c t h w -> (b t) c h w")  # (B*T, C, H, W)
        return fold(x), fold(y), (b, t)
    if x.ndim == 4:
        return x, y, (x.shape[0],)
    raise ValueError(f"expected (B, C, T, H, W) videos or (N, C, H, W) frames, got shape {tuple(x.shape)}")


def psnr_per_frame(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, max_value: float | None = None
) -> torch.Tensor:
    """Per-frame PSNR in dB (float64) of frames in [0, data_range].

    Identical frames have infinite PSNR. ``max_value`` caps every frame at that many dB (e.g. 100.0)
    so that means over many frames stay finite; None keeps ``inf``.
    """
    xf, yf, lead = _as_frames(x, y)
    diff = xf.double() - yf.double()
    mse = diff.pow(2).flatten(1).mean(dim=1)  # (N,)
    psnr = 10.0 * torch.log10(data_range**2 / mse)  # (N,), +inf where mse == 0
    if max_value is not None:
        psnr = psnr.clamp(max=float(max_value))
    return psnr.reshape(lead)


def _gaussian_kernel_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised sampled Gaussian, the kernel scipy.ndimage.gaussian_filter uses (radius (size-1)/2)."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    return kernel / kernel.sum()


def ssim_per_frame(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, compute_dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Per-frame SSIM (in ``compute_dtype``) of frames in [0, data_range], channels averaged.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=...)`` frame by frame.
    float64 (the default) keeps the variance terms E[x^2] - E[x]^2 accurate to ~1e-12; float32
    is faster on GPUs and accurate to ~1e-5.
    """
    xf, yf, lead = _as_frames(x, y)
    n, c, h, w = xf.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    xf, yf = xf.to(compute_dtype), yf.to(compute_dtype)

    # The five local statistics, filtered in one grouped (depthwise) separable convolution.
    stats = torch.cat([xf, yf, xf * xf, yf * yf, xf * yf], dim=1)  # (N, 5C, H, W)
    g = _gaussian_kernel_1d(SSIM_WINDOW, SSIM_SIGMA, compute_dtype, xf.device)
    groups = stats.shape[1]
    # "valid" convolution: only positions whose window lies inside the frame, i.e. skimage's crop.
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)  # (N, 5C, H-10, W)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)  # (N, 5C, H-10, W-10)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.chunk(5, dim=1)  # each (N, C, H-10, W-10)

    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(dim=1).reshape(lead)


@torch.no_grad()
def lpips_per_frame(
    x: torch.Tensor,
    y: torch.Tensor,
    lpips_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int = 32,
) -> torch.Tensor:
    """Per-frame LPIPS distance (float32) of frames in [-1, 1], computed ``batch_size`` frames at a time.

    ``lpips_model`` maps two ``(n, 3, H, W)`` batches to ``(n, 1, 1, 1)``, e.g.
    :class:`vidtwin.losses.LPIPS`; it must live on the frames' device.
    """
    xf, yf, lead = _as_frames(x, y)
    out = [
        lpips_model(xf[i : i + batch_size], yf[i : i + batch_size]).float().flatten()  # (n,)
        for i in range(0, xf.shape[0], batch_size)
    ]
    return torch.cat(out).reshape(lead)


@torch.no_grad()
def video_metrics(
    ref: torch.Tensor,
    rec: torch.Tensor,
    lpips_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    max_value: float | None = None,
) -> dict[str, np.ndarray]:
    """Per-frame PSNR, SSIM and (when ``lpips_model`` is given) LPIPS of a reconstruction.

    Args:
        ref, rec: videos ``(B, 3, T, H, W)`` or frames ``(N, 3, H, W)`` in [-1, 1] (model space);
            both are clamped to [-1, 1], as the official evaluation clamps the reconstruction.
        lpips_model: LPIPS network on the tensors' device, or None to skip LPIPS.
        max_value: optional PSNR cap in dB (see :func:`psnr_per_frame`).

    Returns:
        ``{"psnr", "ssim"[, "lpips"]}`` -> float64 numpy arrays of shape ``(B, T)`` or ``(N,)``.
    """
    ref = ref.clamp(-1.0, 1.0)
    rec = rec.clamp(-1.0, 1.0)
    ref01, rec01 = to_unit_range(ref), to_unit_range(rec)
    result = {
        "psnr": psnr_per_frame(ref01, rec01, max_value=max_value).cpu().numpy(),
        "ssim": ssim_per_frame(ref01, rec01).cpu().numpy(),
    }
    if lpips_model is not None:
        result["lpips"] = lpips_per_frame(ref, rec, lpips_model).double().cpu().numpy()
    return result


__all__ = [
    "to_unit_range",
    "psnr_per_frame",
    "ssim_per_frame",
    "lpips_per_frame",
    "video_metrics",
]
