"""Reading and writing video files.

Frames are always ``torch.uint8`` tensors laid out ``(N, H, W, 3)`` in RGB order, values in [0, 255].

Reading uses decord when it is importable (fast random access) and PyAV otherwise (sequential
decoding; decord has no wheels for some platforms). The backend can be forced per call
(``backend="decord"`` / ``"pyav"``) or for the whole process with the environment variable
``VIDTWIN_VIDEO_BACKEND``. When the backend was chosen automatically and decord fails on a file,
the read is retried once with PyAV: decord 0.6 mis-decodes some valid files (for example a frame
width of 48 comes back with 4 channels), and a training run should not lose those videos.

Every decoding problem surfaces as :class:`VideoReadError` naming the file and the reason. Nothing
here ever substitutes black frames for a video that cannot be read.

Writing uses PyAV with libx264 to a temporary file in the target directory, renamed into place
when complete, so a crash never leaves a half-written video under the final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

import numpy as np
import torch

from vidtwin.atomic_io import atomic_path

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".flv", ".wmv")
# Containers that write_video can fill: WebM and GIF cannot hold its H.264 stream.
WRITABLE_VIDEO_EXTENSIONS = tuple(e for e in VIDEO_EXTENSIONS if e not in (".webm", ".gif"))
BACKENDS = ("decord", "pyav")
BACKEND_ENV_VAR = "VIDTWIN_VIDEO_BACKEND"


class VideoReadError(RuntimeError):
    """A video file is missing, is not a video, has no frames, or cannot be decoded."""


class VideoWriteError(OSError):
    """A video file cannot be written (directory not writable, encoder failure, ...)."""


@dataclass
class VideoInfo:
    """Basic facts about a video stream, as reported by the reading backend."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int


def is_video_file(path: str | os.PathLike) -> bool:
    """True when the file name has a known video extension (case-insensitive); the file is not opened.

    Hidden names (a leading dot) are never videos: they are the temporary files of an unfinished
    write (see :mod:`vidtwin.atomic_io`) or a system's metadata files (``._clip.mp4``).
    """
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None = None) -> tuple[str, bool]:
    """Return ``(backend_name, chosen_automatically)``.

    Priority: the explicit argument, then ``$VIDTWIN_VIDEO_BACKEND``, then decord when importable,
    then PyAV. An explicit choice is never silently replaced by another backend.
    """
    requested = backend or os.environ.get(BACKEND_ENV_VAR) or None
    if requested is None:
        return ("decord" if _decord_available() else "pyav"), True
    name = requested.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown video backend {requested!r} (from argument or ${BACKEND_ENV_VAR}); use one of {BACKENDS}")
    if name == "decord" and not _decord_available():
        raise ValueError("video backend 'decord' was requested but decord is not installed; pip install decord or use backend 'pyav'")
    return name, False


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(f"cannot read video {path}: file not found")
    if not os.path.isfile(path):
        raise VideoReadError(f"cannot read video {path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"cannot read video {path}: file is empty")


# ----------------------------------------------------------------------------------------------
# decord backend
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment: decord's C++ logger prints open failures
    there ("ERROR opening: ..."), and our VideoReadError already says it in one line."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to redirect
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decord_reader(path: str):
    import decord

    with _native_stderr_silenced():
        return decord.VideoReader(path, ctx=decord.cpu(0))


def _decord_batch(reader, path: str, indices: list[int]) -> torch.Tensor:
    """Decode ``indices`` with an open decord reader -> uint8 (N, H, W, 3)."""
    num_frames = len(reader)
    too_far = [i for i in indices if i >= num_frames]
    if too_far:
        raise VideoReadError(f"cannot read video {path}: frame {too_far[0]} requested but it has {num_frames} frames")
    array = reader.get_batch(indices).asnumpy()  # (N, H, W, C)
    # decord 0.6 sometimes returns 4 channels or a wrong frame size instead of failing; never pass that on.
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] != len(indices):
        raise VideoReadError(f"cannot read video {path}: decord returned frames of shape {tuple(array.shape)}")
    return torch.from_numpy(np.ascontiguousarray(array))  # (N, H, W, 3) uint8


def _probe_decord(path: str) -> VideoInfo:
    reader = _decord_reader(path)
    num_frames = len(reader)
    if num_frames == 0:
        raise VideoReadError(f"cannot read video {path}: it has zero frames")
    first = _decord_batch(reader, path, [0])  # (1, H, W, 3); decoding one frame proves the stream decodes
    return VideoInfo(path, num_frames, float(reader.get_avg_fps()), int(first.shape[1]), int(first.shape[2]))


def _read_decord(path: str, indices: list[int]) -> torch.Tensor:
    return _decord_batch(_decord_reader(path), path, indices)


# ----------------------------------------------------------------------------------------------
# PyAV backend
# ----------------------------------------------------------------------------------------------


def _pyav_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise ValueError("the stream declares no frame rate")


def _probe_pyav(path: str) -> VideoInfo:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise VideoReadError(f"cannot read video {path}: the file has no video stream")
        stream = container.streams.video[0]
        fps = _pyav_fps(stream)
        num_frames = int(stream.frames or 0)
        if num_frames == 0:
            # Some containers (webm, mkv, gif) do not store a frame count: count packets instead
            # (demuxing only, no decoding).
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
    if num_frames == 0:
        raise VideoReadError(f"cannot read video {path}: it has zero frames")
    first = _read_pyav(path, [0])  # (1, H, W, 3); decoding one frame proves the stream decodes
    return VideoInfo(path, num_frames, fps, int(first.shape[1]), int(first.shape[2]))


def _read_pyav(path: str, indices: list[int]) -> torch.Tensor:
    """Decode frames sequentially from the start, keeping the wanted ones -> uint8 (N, H, W, 3).

    Sequential decoding is exact (no seek-accuracy issues) but costs time proportional to the
    largest index; decord is the fast path for random access into long videos.
    """
    import av

    wanted = set(indices)
    last_wanted = max(indices)
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoReadError(f"cannot read video {path}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                kept[index] = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
            if index >= last_wanted:
                break
    missing = [i for i in indices if i not in kept]
    if missing:
        raise VideoReadError(f"cannot read video {path}: frame {missing[0]} requested but only {decoded} frames decode")
    return torch.from_numpy(np.stack([kept[i] for i in indices]))  # (N, H, W, 3) uint8


_PROBERS = {"decord": _probe_decord, "pyav": _probe_pyav}
_READERS = {"decord": _read_decord, "pyav": _read_pyav}


def _with_backend(path: str, backend: str | None, table: dict, *args):
    """Run ``table[backend](path, *args)``; turn every decoder failure into a VideoReadError.

    With an automatically chosen decord backend, a failure is retried once with PyAV.
    """
    _check_file(path)
    name, automatic = resolve_backend(backend)
    try:
        return table[name](path, *args)
    except Exception as error:  # decoders raise many unrelated types (RuntimeError, av.FFmpegError, ...)
        first_error = error
    if automatic and name == "decord":
        logger.debug("decord failed on %s (%s); retrying with PyAV", path, first_error)
        try:
            return table["pyav"](path, *args)
        except Exception as error:
            raise VideoReadError(_failure_message(path, error, decord_error=first_error)) from error
    raise VideoReadError(_failure_message(path, first_error)) from first_error


def _failure_message(path: str, error: Exception, decord_error: Exception | None = None) -> str:
    if isinstance(error, VideoReadError) and decord_error is None:
        return str(error)

    def reason(e: Exception) -> str:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return text.replace(f"cannot read video {path}: ", "")

    import av

    if isinstance(error, av.FFmpegError):  # FFmpeg's verdict on the file; its errno and repr are noise
        return f"cannot read video {path}: not a readable video file ({error.strerror or type(error).__name__})"
    message = f"cannot read video {path}: {reason(error)}"
    if decord_error is not None:
        message += f" (decord: {reason(decord_error)})"
    return message


def probe_video(path: str | os.PathLike, backend: str | None = None) -> VideoInfo:
    """Frame count, frame rate and frame size of a video; decodes the first frame to prove it is readable.

    Raises:
        VideoReadError: missing file, not a video, zero frames, or undecodable stream.
    """
    return _with_backend(os.fspath(path), backend, _PROBERS)


def read_frames(path: str | os.PathLike, indices: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """Decode the frames at ``indices`` (any order, repeats allowed).

    Returns:
        uint8 tensor (N, H, W, 3), RGB, values in [0, 255], N = len(indices).

    Raises:
        ValueError: empty or negative indices.
        VideoReadError: the file cannot be decoded or has fewer frames than requested.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("read_frames needs at least one frame index")
    if min(indices) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
    return _with_backend(os.fspath(path), backend, _READERS, indices)


def sampling_stride(src_fps: float, sample_fps: float | None) -> int:
    """Frame step that turns ``src_fps`` into roughly ``sample_fps``: max(1, round(src_fps / sample_fps))."""
    if sample_fps is None:
        return 1
    if sample_fps <= 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    return max(1, round(src_fps / sample_fps))


def sample_indices(
    num_frames: int, src_fps: float, sample_fps: float | None, num_samples: int | None = None, start: int = 0
) -> list[int]:
    """Indices ``start, start + stride, ...`` below ``num_frames``, at most ``num_samples`` of them.

    ``stride = sampling_stride(src_fps, sample_fps)`` (1 when ``sample_fps`` is None). Returns an empty
    list when ``start >= num_frames``.
    """
    stride = sampling_stride(src_fps, sample_fps)
    indices = list(range(max(0, start), num_frames, stride))
    return indices if num_samples is None else indices[:num_samples]


def read_video(
    path: str | os.PathLike, sample_fps: float | None = None, max_frames: int | None = None, backend: str | None = None
) -> tuple[torch.Tensor, float]:
    """Read a whole video, optionally subsampled in time.

    Returns:
        frames: uint8 tensor (N, H, W, 3), RGB in [0, 255]; every ``stride``-th frame from frame 0,
            at most ``max_frames`` of them.
        fps_out: frame rate of the returned frames, ``src_fps / stride``.
    """
    info = probe_video(path, backend=backend)
    stride = sampling_stride(info.fps, sample_fps)
    indices = sample_indices(info.num_frames, info.fps, sample_fps, num_samples=max_frames)
    if not indices:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return read_frames(path, indices, backend=backend), info.fps / stride


def _frames_to_numpy(frames) -> np.ndarray:
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8:
        raise ValueError(f"write_video expects uint8 frames in [0, 255], got dtype {array.dtype}; convert with (x + 1) * 127.5 and round")
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"write_video expects frames shaped (N, H, W, 3) with N >= 1, got {tuple(array.shape)}")
    return np.ascontiguousarray(array)


def write_video(path: str | os.PathLike, frames, fps: float, crf: int = 18) -> None:
    """Encode frames to an H.264 video with PyAV (libx264), atomically.

    Args:
        path: output file; its extension picks the container (``.mp4`` recommended). Missing parent
            directories are created.
        frames: uint8 (N, H, W, 3) RGB, torch tensor or numpy array.
        fps: frame rate, may be fractional (29.97 is stored as 30000/1001).
        crf: x264 constant rate factor; 0 is lossless, 18 is visually lossless, 23 is x264's default.

    Pixel format: ``yuv420p`` (plays everywhere) when H and W are even. 4:2:0 chroma cannot represent
    odd sizes, so odd-sized frames are stored as ``yuv444p`` instead of being padded or cropped: the
    file keeps the exact frame size, at the cost of players that only handle 4:2:0 (some browsers).

    Raises:
        ValueError: frames of the wrong dtype or shape, non-positive fps.
        VideoWriteError: the directory cannot be created or written, or the encoder fails.
    """
    import av

    path = os.fspath(path)
    array = _frames_to_numpy(frames)  # (N, H, W, 3) uint8
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    num_frames, height, width, _ = array.shape
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise VideoWriteError(f"cannot write video {path}: cannot create directory {directory} ({error.strerror or error})") from error
    if not os.access(directory, os.W_OK):
        raise VideoWriteError(f"cannot write video {path}: directory {directory} is not writable")

    extension = os.path.splitext(path)[1]
    rate = Fraction(fps).limit_denominator(10_000)  # 29.97002997 -> 30000/1001
    pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    try:
        # The temporary name keeps the extension: PyAV picks the container from it.
        with atomic_path(path, suffix=f".tmp{extension or '.mp4'}") as temp_path, \
                av.open(str(temp_path), mode="w") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            stream.options = {"crf": str(int(crf))}
            for index in range(num_frames):
                frame = av.VideoFrame.from_ndarray(array[index], format="rgb24")  # (H, W, 3)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():  # flush delayed frames
                container.mux(packet)
    except Exception as error:
        if isinstance(error, (VideoWriteError, ValueError)):
            raise
        raise VideoWriteError(f"cannot write video {path}: {error}") from error
