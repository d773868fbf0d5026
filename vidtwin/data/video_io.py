"""Reading and writing video files.

Frames are always ``torch.uint8`` tensors laid out ``(N, H, W, 3)`` in RGB order, values in [0, 255].

Reading uses decord when it is importable (fast random access) and PyAV otherwise (sequential
decoding; decord has no wheels for some platforms). The backend can be forced per call
(``backend="decord"`` / ``"pyav"``) or for the whole process with the environment variable
``VIDTWIN_VIDEO_BACKEND``. When the backend was chosen automatically and decord fails on a file,
the read is retried once with PyAV: decord 0.6 mis-decodes some valid files (for example a frame
width of 48 comes back with 4 channels), and a training run should not lose those videos.

Frames come out as players show them: the rotation metadata that phones write (a display matrix,
or the ``rotate`` tag of older files) is applied (:mod:`vidtwin.data.orientation`), so a portrait
phone video is read, probed and written back in portrait. PyAV applies it here; decord applies
quarter turns but fails on half turns and ignores mirroring, so rotated files are read with PyAV
(an explicit decord choice fails on them in one line).

Every decoding problem surfaces as :class:`VideoReadError` naming the file and the reason. Nothing
here ever substitutes black frames for a video that cannot be read.

Long videos stream: :class:`FrameReader` walks through a video with one open decoder (PyAV,
unless decord is asked for explicitly: decord decodes ahead without bound) and
:class:`VideoWriter` encodes frames as they come, so neither holds a whole video. Writing uses PyAV
with libx264 to a temporary file in the target directory, renamed into place when complete, so a
crash never leaves a half-written video under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from contextlib import ExitStack
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

import numpy as np
import torch

from vidtwin.atomic_io import atomic_path
from vidtwin.data.orientation import UPRIGHT, Orientation, file_orientation, stream_orientation
from vidtwin.errors import UserError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".flv", ".wmv")
# Containers that write_video can fill: WebM and GIF cannot hold its H.264 stream.
WRITABLE_VIDEO_EXTENSIONS = tuple(e for e in VIDEO_EXTENSIONS if e not in (".webm", ".gif"))
BACKENDS = ("decord", "pyav")
BACKEND_ENV_VAR = "VIDTWIN_VIDEO_BACKEND"


class VideoReadError(RuntimeError, UserError):
    """A video file is missing, is not a video, has no frames, or cannot be decoded."""


class VideoWriteError(OSError, UserError):
    """A video file cannot be written (directory not writable, encoder failure, ...)."""


@dataclass
class VideoInfo:
    """Basic facts about a video stream, as reported by the reading backend.

    ``height`` and ``width`` are those of the displayed frames: swapped for a video whose rotation
    metadata turns it a quarter turn, as the frames that :func:`read_frames` returns are.
    """

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
# Rotation metadata (see vidtwin.data.orientation)
# ----------------------------------------------------------------------------------------------


def _decord_can_read(path: str, automatic: bool) -> bool:
    """False when decord must not read ``path``: it is rotated, and decord 0.6 applies quarter turns
    but fails on half turns and ignores mirroring. An explicit decord choice then fails in one line."""
    try:
        upright = file_orientation(path) == UPRIGHT
    except Exception:  # PyAV cannot read it either: let decord try, and report its failure
        return True
    if not upright and not automatic:
        raise VideoReadError(
            f"cannot read video {path} with decord: it has rotation metadata, which decord does not apply "
            "as players do; read it with the pyav backend"
        )
    return upright


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


@functools.lru_cache(maxsize=1)
def _pyav_takes_scale_threads() -> bool:
    """Whether PyAV's frame conversion takes a thread count (PyAV 17 and newer)."""
    import av

    return int(av.__version__.split(".")[0]) >= 17


def _rgb_array(frame) -> np.ndarray:
    """(H, W, 3) uint8 of a decoded PyAV frame, converted by swscale on the calling thread alone.

    PyAV 18 keeps one swscale context per thread for the life of the process. With the default
    thread count that context owns a pool of worker threads, and a DataLoader worker forked after
    the parent converted a frame inherits the context without its threads and waits for them
    forever. A one-thread conversion owns no pool; PyAV before 17 has no such option and needs none.
    """
    if _pyav_takes_scale_threads():
        return frame.to_ndarray(format="rgb24", threads=1)
    return frame.to_ndarray(format="rgb24")


class _PyAVCursor:
    """One forward pass of PyAV's decoder over a file: each frame is decoded at most once.

    ``read`` takes indices in non-decreasing order, each no smaller than the last one served;
    frames in between are decoded and dropped without conversion. Sequential decoding is exact
    (no seek-accuracy issues); its cost is proportional to the largest index.
    """

    def __init__(self, path: str):
        import av

        self.path = path
        self._container = av.open(path)
        if not self._container.streams.video:
            self._container.close()
            raise VideoReadError(f"cannot read video {path}: the file has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        self._orientation: Orientation | None = None  # from the first decoded frame
        self._frames = enumerate(self._container.decode(stream))
        self._index = -1  # index of the last decoded frame
        self._array: np.ndarray | None = None  # (H, W, 3) uint8 of frame ``_index`` when it was wanted
        self.frames_decoded = 0

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        arrays = []
        for wanted in indices:
            if wanted < self._index:
                raise ValueError(f"frame {wanted} requested after frame {self._index}; a forward pass cannot go back")
            while self._index < wanted:
                try:
                    self._index, frame = next(self._frames)
                except StopIteration:
                    raise VideoReadError(
                        f"cannot read video {self.path}: frame {wanted} requested but only {self.frames_decoded} frames decode"
                    ) from None
                self.frames_decoded = self._index + 1
                if self._orientation is None:
                    self._orientation = stream_orientation(self._stream, frame)
                # (H, W, 3) as displayed: rotation metadata applied
                self._array = self._orientation.apply(_rgb_array(frame)) if self._index == wanted else None
            arrays.append(self._array)
        return arrays

    def close(self) -> None:
        self._container.close()


def _read_pyav(path: str, indices: list[int]) -> torch.Tensor:
    """Decode frames (any order) in one forward pass -> uint8 (N, H, W, 3)."""
    ordered = sorted(set(indices))
    cursor = _PyAVCursor(path)
    try:
        by_index = dict(zip(ordered, cursor.read(ordered)))
    finally:
        cursor.close()
    return torch.from_numpy(np.stack([by_index[i] for i in indices]))  # (N, H, W, 3) uint8


_PROBERS = {"decord": _probe_decord, "pyav": _probe_pyav}
_READERS = {"decord": _read_decord, "pyav": _read_pyav}


def _with_backend(path: str, backend: str | None, table: dict, *args):
    """Run ``table[backend](path, *args)``; turn every decoder failure into a VideoReadError.

    With an automatically chosen decord backend, a failure is retried once with PyAV.
    """
    _check_file(path)
    name, automatic = resolve_backend(backend)
    if name == "decord" and not _decord_can_read(path, automatic):
        name = "pyav"
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


class FrameReader:
    """Frames of one video read in order from one open decoder, for streaming long videos.

    ``read(indices)`` takes indices in non-decreasing order across calls (repeats allowed), as a
    clip-by-clip walk through a video produces them. PyAV decodes forward once and keeps only the
    wanted frames, so reading a whole video clip by clip costs one decoding pass, not one per
    clip, and holds only the frames of the current request. Asking for an earlier frame than the
    last one served starts a new pass.

    PyAV is used unless decord is asked for explicitly (argument or ``$VIDTWIN_VIDEO_BACKEND``):
    decord 0.6 decodes ahead in a background thread without bound, so a slow consumer ends up
    holding most of the file's frames (docs/benchmarks.md, "Streaming memory against video
    length"). With decord, frames are fetched by seeking. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, backend: str | None = None):
        self.path = os.fspath(path)
        _check_file(self.path)
        name, automatic = resolve_backend(backend)
        explicit_decord = name == "decord" and not automatic
        self.backend = "decord" if explicit_decord and _decord_can_read(self.path, automatic) else "pyav"
        self._cursor = None  # an open decord.VideoReader or _PyAVCursor, made on the first read
        self._last_index = -1
        self.frames_decoded = 0  # PyAV frames decoded by finished passes plus the current one

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode the frames at ``indices`` -> uint8 ``(n, H, W, 3)``, RGB in [0, 255]."""
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("FrameReader.read needs at least one frame index")
        if min(indices) < 0 or any(b < a for a, b in zip(indices, indices[1:])):
            raise ValueError(f"frame indices must be >= 0 and non-decreasing, got {indices}")
        try:
            frames = self._read(indices)
        except Exception as error:  # decoders raise many unrelated types (RuntimeError, av.FFmpegError, ...)
            raise VideoReadError(_failure_message(self.path, error)) from error
        self._last_index = indices[-1]
        return frames

    def _read(self, indices: list[int]) -> torch.Tensor:
        if self.backend == "decord":
            if self._cursor is None:
                self._cursor = _decord_reader(self.path)
            return _decord_batch(self._cursor, self.path, indices)  # (n, H, W, 3)
        if self._cursor is not None and indices[0] < self._last_index:
            self.close()  # going back: start a new forward pass
        if self._cursor is None:
            self._cursor = _PyAVCursor(self.path)
        before = self._cursor.frames_decoded
        try:
            return torch.from_numpy(np.stack(self._cursor.read(indices)))  # (n, H, W, 3) uint8
        finally:
            self.frames_decoded += self._cursor.frames_decoded - before

    def close(self) -> None:
        if isinstance(self._cursor, _PyAVCursor):
            self._cursor.close()
        self._cursor = None

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


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


def _prepare_directory(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise VideoWriteError(f"cannot write video {path}: cannot create directory {directory} ({error.strerror or error})") from error
    if not os.access(directory, os.W_OK):
        raise VideoWriteError(f"cannot write video {path}: directory {directory} is not writable")


class VideoWriter:
    """An H.264 encoder (PyAV, libx264) that takes frames as they come, for videos of any length.

    Frames go to a temporary file beside ``path``; it is renamed to ``path`` when the ``with``
    block ends normally and removed when the block raises, so the target never holds a
    half-written video. Only the encoder's own look-ahead is held in memory. See
    :func:`write_video` for ``fps``, ``crf`` and the pixel format.

    Example::

        with VideoWriter("out.mp4", fps=25.0) as writer:
            for clip in clips:          # each uint8 (n, H, W, 3)
                writer.write(clip)

    Raises:
        ValueError: non-positive fps, frames of the wrong dtype, shape or size, or no frames at all.
        VideoWriteError: the directory cannot be created or written, or the encoder fails.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18):
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = os.fspath(path)
        self.fps = fps
        self.crf = int(crf)
        self.num_frames = 0
        self.size: tuple[int, int] | None = None  # (H, W), set by the first write
        _prepare_directory(self.path)
        self._exit_stack: ExitStack | None = None
        self._container = None
        self._stream = None

    def __enter__(self) -> "VideoWriter":
        import av

        extension = os.path.splitext(self.path)[1]
        stack = ExitStack()
        try:
            # The temporary name keeps the extension: PyAV picks the container from it.
            temp_path = stack.enter_context(atomic_path(self.path, suffix=f".tmp{extension or '.mp4'}"))
            self._container = stack.enter_context(av.open(str(temp_path), mode="w"))
        except Exception as error:
            stack.close()
            raise self._write_error(error) from error
        self._exit_stack = stack
        return self

    def write(self, frames) -> None:
        """Append frames: uint8 ``(n, H, W, 3)`` RGB (torch or numpy), all of one size."""
        import av

        if self._exit_stack is None:
            raise RuntimeError("VideoWriter.write is only valid inside its with block")
        array = _frames_to_numpy(frames)  # (n, H, W, 3) uint8
        height, width = array.shape[1:3]
        try:
            if self._stream is None:
                self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(10_000))
                # 4:2:0 chroma cannot represent odd sizes: those keep their size as 4:4:4.
                pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
                self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
                self._stream.options = {"crf": str(self.crf)}
                self.size = (height, width)
            elif (height, width) != self.size:
                raise ValueError(f"frames of {width}x{height} written to {self.path}, which holds {self.size[1]}x{self.size[0]} frames")
            for image in array:  # (H, W, 3)
                for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    self._container.mux(packet)
        except Exception as error:
            raise self._write_error(error) from error
        self.num_frames += array.shape[0]

    def __exit__(self, exc_type, exc, traceback) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if exc_type is None:
            try:
                if self._stream is None:
                    raise ValueError(f"no frames were written to {self.path}")
                for packet in self._stream.encode():  # flush delayed frames
                    self._container.mux(packet)
            except Exception as error:
                stack.__exit__(type(error), error, error.__traceback__)  # removes the temporary file
                raise self._write_error(error) from error
            try:
                stack.close()  # writes the trailer, then renames into place
            except Exception as error:
                raise self._write_error(error) from error
        else:
            stack.__exit__(exc_type, exc, traceback)

    def _write_error(self, error: Exception) -> Exception:
        if isinstance(error, (VideoWriteError, ValueError)):
            return error
        return VideoWriteError(f"cannot write video {self.path}: {error}")


def write_video(path: str | os.PathLike, frames, fps: float, crf: int = 18) -> None:
    """Encode frames to an H.264 video with PyAV (libx264), atomically (see :class:`VideoWriter`).

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
    array = _frames_to_numpy(frames)  # (N, H, W, 3) uint8
    with VideoWriter(path, fps, crf) as writer:
        writer.write(array)
