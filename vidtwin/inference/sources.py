"""Where a video's frames come from: decoded lazily from a file, or given as a tensor.

A source serves the frames of the (temporally sampled) video by position, clip after clip. A file
is decoded as it is read (:class:`~vidtwin.data.video_io.FrameReader`: one open decoder walking
forward), so a video of any length is never held in memory as a whole; frames given as a tensor
are indexed directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from vidtwin.data.video_io import FrameReader, probe_video, sample_indices, sampling_stride
from vidtwin.inference.options import InferenceError


class FrameSource:
    """Frames of one video after temporal sampling, served by position ``0 .. num_frames - 1``.

    Subclasses set ``fps`` (the sampled rate), ``name`` (file path or a label) and implement
    :attr:`num_frames`, :attr:`size` and :meth:`frames_at`. Reading positions in non-decreasing
    order (clip after clip) is the cheap order for files. A source can be used as a context
    manager; :meth:`close` releases the decoder, which is reopened if frames are asked again.
    """

    fps: float
    name: str

    @property
    def num_frames(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        raise NotImplementedError

    def frames_at(self, positions: Sequence[int]) -> torch.Tensor:
        """uint8 ``(n, H, W, 3)`` RGB in [0, 255], one frame per position."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds open (nothing for frames in memory)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class SourceVideo(FrameSource):
    """Frames already in memory."""

    frames: torch.Tensor  # (N, H, W, 3) uint8
    fps: float  # frame rate of ``frames`` (the sampled rate)
    name: str = ""  # a label, for messages and metadata

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def frames_at(self, positions: Sequence[int]) -> torch.Tensor:
        return self.frames[list(positions)]  # (n, H, W, 3)


class VideoFileSource(FrameSource):
    """A video file, decoded as its frames are asked for; only the frames of one request are held.

    ``sample_fps`` keeps every ``round(fps / sample_fps)``-th frame (the official sampling) and
    ``max_frames`` the first that many, exactly as :func:`~vidtwin.data.video_io.read_video`.
    Raises ``VideoReadError`` for a file that cannot be read.
    """

    def __init__(
        self, path: str | os.PathLike, sample_fps: float | None = None, max_frames: int | None = None,
        backend: str | None = None,
    ):
        self.name = os.fspath(path)
        info = probe_video(self.name, backend=backend)
        self._source_indices = sample_indices(info.num_frames, info.fps, sample_fps, num_samples=max_frames)
        if not self._source_indices:
            raise InferenceError(f"--max-frames must be >= 1, got {max_frames}")
        self.fps = info.fps / sampling_stride(info.fps, sample_fps)
        self._size = (info.height, info.width)
        self.reader = FrameReader(self.name, backend=backend)

    @property
    def num_frames(self) -> int:
        return len(self._source_indices)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def frames_at(self, positions: Sequence[int]) -> torch.Tensor:
        return self.reader.read([self._source_indices[p] for p in positions])  # (n, H, W, 3)

    def close(self) -> None:
        self.reader.close()


def load_source(
    video: str | os.PathLike | torch.Tensor | FrameSource,
    fps: float | None = None,
    sample_fps: float | None = None,
    max_frames: int | None = None,
) -> FrameSource:
    """A file path (read lazily), uint8 ``(N, H, W, 3)`` frames (with ``fps``) or a :class:`FrameSource`.

    ``sample_fps`` keeps every ``round(fps / sample_fps)``-th frame (the official sampling);
    ``max_frames`` keeps at most that many. Raises ``VideoReadError`` for unreadable files.
    """
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        return VideoFileSource(video, sample_fps=sample_fps, max_frames=max_frames)
    if not isinstance(video, torch.Tensor) or video.dtype != torch.uint8 or video.dim() != 4 or video.shape[-1] != 3:
        raise InferenceError("a video must be a file path or uint8 frames shaped (N, H, W, 3)")
    if fps is None:
        raise InferenceError("fps is required when the video is given as frames")
    if video.shape[0] == 0:
        raise InferenceError("the video has zero frames")
    indices = sample_indices(video.shape[0], fps, sample_fps, num_samples=max_frames)
    stride = indices[1] - indices[0] if len(indices) > 1 else 1
    return SourceVideo(frames=video[indices], fps=fps / stride, name="<frames>")
