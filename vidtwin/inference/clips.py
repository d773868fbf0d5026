"""Splitting a frame sequence into model-sized clips and joining them back.

VidTwin encodes a fixed number of frames ``T`` at a time (``model.input_size[0]``). A video of any
length ``N`` is cut into ``ceil(N / T)`` consecutive clips; the last clip is filled up by repeating
the video's last frame (the official evaluation's ``last_frames_handle="repeat"``), and the
repeated frames are dropped again after decoding, so the output has exactly ``N`` frames.

Everything here works on frame *indices* first, so a caller can keep the video as compact uint8
frames and build float clips one batch at a time.
"""

from __future__ import annotations

import torch

from vidtwin.latents.layout import ClipLayout  # the layout record lives with the latent formats that store it

__all__ = ["ClipLayout", "merge_clips", "split_clips"]


def split_clips(video: torch.Tensor, clip_len: int) -> torch.Tensor:
    """Cut a video into clips along time, repeating the last frame to fill the last clip.

    Args:
        video: ``(C, N, H, W)`` tensor, any dtype and value range.
        clip_len: frames per clip ``T``.

    Returns:
        ``(num_clips, C, T, H, W)`` tensor.
    """
    if video.dim() != 4:
        raise ValueError(f"expected a (C, N, H, W) video, got shape {tuple(video.shape)}")
    layout = ClipLayout(num_frames=video.shape[1], clip_len=clip_len)
    indices = torch.tensor(
        [layout.clip_frame_indices(i) for i in range(layout.num_clips)], device=video.device
    )  # (num_clips, T)
    clips = video[:, indices.flatten()]  # (C, num_clips*T, H, W)
    clips = clips.unflatten(1, (layout.num_clips, clip_len))  # (C, num_clips, T, H, W)
    return clips.transpose(0, 1)  # (num_clips, C, T, H, W)


def merge_clips(clips: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Join clips back into one video and drop the padding frames of the last clip.

    Args:
        clips: ``(num_clips, C, T, H, W)`` tensor.
        num_frames: frames of the original video ``N``; ``num_clips`` must equal ``ceil(N / T)``.

    Returns:
        ``(C, N, H, W)`` tensor.
    """
    if clips.dim() != 5:
        raise ValueError(f"expected (num_clips, C, T, H, W) clips, got shape {tuple(clips.shape)}")
    num_clips, channels, clip_len, height, width = clips.shape
    layout = ClipLayout(num_frames=num_frames, clip_len=clip_len)
    if layout.num_clips != num_clips:
        raise ValueError(f"{num_frames} frames need {layout.num_clips} clips of {clip_len}, got {num_clips}")
    video = clips.transpose(0, 1).reshape(channels, num_clips * clip_len, height, width)  # (C, n*T, H, W)
    return video[:, :num_frames]  # (C, N, H, W)
