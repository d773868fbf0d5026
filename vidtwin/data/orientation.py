"""The display orientation of a video: how a player turns the stored frames before showing them.

Phones store frames as the sensor sees them and record how to show them: a display matrix
(FFmpeg's ``AV_PKT_DATA_DISPLAYMATRIX``, the MP4 track header's matrix) or, in files of older
tools, a ``rotate`` tag. :mod:`vidtwin.data.video_io` applies it to every frame it reads.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Orientation:
    """How to turn decoded frames into what a player shows: transpose, then mirror.

    Phones store frames as the sensor sees them and record a display matrix (or, in older files,
    a ``rotate`` tag) that players apply. A quarter turn is a transpose plus one flip.
    """

    transpose: bool = False  # swap rows and columns: (H, W) -> (W, H)
    flip_rows: bool = False  # upside down, after the transpose
    flip_cols: bool = False  # left-right mirror, after the transpose

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) -> the displayed (H', W', C), contiguous; (W, H, C) when transposed."""
        if self.transpose:
            image = image.transpose(1, 0, 2)  # (H, W, C) -> (W, H, C)
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)


UPRIGHT = Orientation()
_QUARTER_TURNS_CLOCKWISE = {  # a `rotate` tag (degrees clockwise) -> its orientation
    0: UPRIGHT, 90: Orientation(True, False, True), 180: Orientation(False, True, True), 270: Orientation(True, True, False),
}


def orientation_from_display_matrix(matrix: Sequence[int]) -> Orientation:
    """The orientation a player applies for FFmpeg's display matrix (9 int32, ``AV_PKT_DATA_DISPLAYMATRIX``).

    The matrix maps a source pixel (column p, row q) to the displayed (a*p + c*q, b*p + d*q) with
    ``a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]``; translation only places the
    picture. Matrices that are not a multiple of a quarter turn (possibly mirrored) are rare and
    would need resampling: they are logged and the frames are read as stored.
    """
    a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
    scale = max(abs(a), abs(b), abs(c), abs(d))

    def near_zero(value: int) -> bool:
        return abs(value) * 1000 < scale

    if scale and near_zero(b) and near_zero(c):
        return Orientation(False, d < 0, a < 0)
    if scale and near_zero(a) and near_zero(d):
        # Transposed: the displayed column is c * (source row), the displayed row b * (source column).
        return Orientation(True, b < 0, c < 0)
    _warn_once(f"a display matrix that is not a quarter turn ({[int(v) for v in matrix]}) is ignored: "
               "frames are read as stored")
    return UPRIGHT


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    logger.warning(message)  # a reader looks the matrix up once per read: say it once per process


def stream_orientation(stream, first_frame) -> Orientation:
    """The orientation of a PyAV stream: the display matrix of its first decoded frame (FFmpeg 7
    attaches it to every frame), else the ``rotate`` tag of older FFmpeg builds, else upright."""
    side_data_entries = first_frame.side_data
    if hasattr(side_data_entries, "values"):  # PyAV 18 made it a mapping from type to entry
        side_data_entries = side_data_entries.values()
    for side_data in side_data_entries:
        if getattr(side_data.type, "name", str(side_data.type)).endswith("DISPLAYMATRIX"):
            return orientation_from_display_matrix(np.frombuffer(bytes(side_data), dtype=np.int32)[:9])
    tag = (stream.metadata or {}).get("rotate")
    try:
        return _QUARTER_TURNS_CLOCKWISE.get(int(tag) % 360, UPRIGHT) if tag is not None else UPRIGHT
    except ValueError:
        return UPRIGHT


def file_orientation(path: str | os.PathLike) -> Orientation:
    """The display orientation of a video file, read with PyAV from its first frame.

    Cached per version of the file (its real path, size and modification time), so that the
    decord reads of a training run look each file up once per process: opening a file with PyAV
    costs a fraction of opening it with decord (docs/benchmarks.md, "Opening a video").
    """
    path = os.fspath(path)
    status = os.stat(path)
    return _cached_file_orientation(os.path.realpath(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=65536)  # about 200 bytes an entry
def _cached_file_orientation(real_path: str, size: int, mtime_ns: int) -> Orientation:
    import av

    with av.open(real_path) as container:
        stream = container.streams.video[0]
        return stream_orientation(stream, next(container.decode(stream)))
