"""Frame transforms that turn decoded video into model input.

Decoded frames are uint8 ``(N, H, W, 3)``; the model takes float ``(3, T, H, W)`` in [-1, 1]
(batched to ``(B, 3, T, H, W)`` by the data loader). The same resize + crop is applied to every
frame of a clip so that motion is not distorted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of float (N, C, H, W) frames to (N, C, height, width)."""
    if frames.shape[-2:] == (height, width):
        return frames
    # antialias=True low-pass filters when shrinking, so downscaled frames do not alias (moire on fine texture).
    return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def _check_crop(frames: torch.Tensor, size: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = frames.shape[-2:]
    crop_height, crop_width = size
    if crop_height > height or crop_width > width:
        raise ValueError(f"crop {crop_height}x{crop_width} is larger than the frames ({height}x{width}); resize first")
    return height, width, crop_height, crop_width


def center_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Central (h, w) window of frames (..., H, W) -> (..., h, w). With an odd margin the extra pixel goes bottom/right."""
    height, width, crop_height, crop_width = _check_crop(frames, size)
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return frames[..., top : top + crop_height, left : left + crop_width]  # (..., h, w)


def _random_window(frames: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
    """Uniformly placed (h, w) window of frames (..., H, W) -> (..., h, w); the same window for every frame."""
    height, width, crop_height, crop_width = _check_crop(frames, size)
    top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
    return frames[..., top : top + crop_height, left : left + crop_width]  # (..., h, w)


def cover_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """Smallest aspect-preserving size (H', W') of an H x W frame with H' >= h and W' >= w."""
    target_height, target_width = size
    scale = max(target_height / height, target_width / width)
    # ceil(x - 1e-6) instead of round(): rounding down could leave one side a pixel short of the crop.
    new_height = max(target_height, math.ceil(height * scale - 1e-6))
    new_width = max(target_width, math.ceil(width * scale - 1e-6))
    return new_height, new_width


def preprocess_clip(
    frames: torch.Tensor,
    size: tuple[int, int],
    random_crop: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Decoded uint8 frames -> model input.

    Args:
        frames: uint8 (N, H, W, 3), RGB in [0, 255].
        size: output (h, w).
        random_crop: place the crop uniformly at random (training) instead of centrally.
        generator: random source for the crop position; the global torch RNG when None.

    Returns:
        float32 (3, N, h, w) in [-1, 1]. The frames are first scaled by max(h/H, w/W) (antialiased
        bilinear) so that they cover the target, then cropped to exactly (h, w).
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"preprocess_clip expects uint8 frames (N, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    clip = frames.permute(0, 3, 1, 2).float()  # (N, 3, H, W) in [0, 255]
    new_height, new_width = cover_size(clip.shape[-2], clip.shape[-1], size)
    clip = _resize(clip, new_height, new_width)  # (N, 3, H', W'), H' >= h, W' >= w
    if random_crop:
        clip = _random_window(clip, size, generator)  # (N, 3, h, w)
    else:
        clip = center_crop(clip, size)  # (N, 3, h, w)
    clip = (clip / 127.5 - 1.0).clamp_(-1.0, 1.0)  # [0, 255] -> [-1, 1]
    return clip.permute(1, 0, 2, 3).contiguous()  # (3, N, h, w)
