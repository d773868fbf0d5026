"""Where the latents of a video sit: its clips along time and its tiles in space.

A latent file records both (:mod:`vidtwin.latents.latent_file`), so these records live with the
latent formats; cutting frames into clips and tiles, and joining them back, is inference's work
(:mod:`vidtwin.inference.clips`, :mod:`vidtwin.inference.tiling`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClipLayout:
    """How ``num_frames`` frames are cut into clips of ``clip_len`` frames."""

    num_frames: int  # frames of the (sampled) video, N
    clip_len: int  # frames per model input, T

    def __post_init__(self) -> None:
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")
        if self.num_frames < 1:
            raise ValueError(f"a video needs at least one frame, got {self.num_frames}")

    @property
    def num_clips(self) -> int:
        return math.ceil(self.num_frames / self.clip_len)

    @property
    def num_padding_frames(self) -> int:
        """Repeated frames appended to the last clip."""
        return self.num_clips * self.clip_len - self.num_frames

    def clip_frame_indices(self, clip_index: int) -> list[int]:
        """Source frame index of each of the ``clip_len`` frames of one clip (last frame repeated)."""
        if not 0 <= clip_index < self.num_clips:
            raise IndexError(f"clip {clip_index} out of range for {self.num_clips} clips")
        start = clip_index * self.clip_len
        return [min(start + offset, self.num_frames - 1) for offset in range(self.clip_len)]

    def valid_frames(self, clip_index: int) -> int:
        """How many leading frames of a clip are real frames (the rest are padding)."""
        start = clip_index * self.clip_len
        return min(self.clip_len, self.num_frames - start)


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering one frame size; stored in latent files so decoding can blend them."""

    height: int  # frame height before padding
    width: int  # frame width before padding
    tile_height: int
    tile_width: int
    overlap: int  # requested minimum overlap in pixels (both axes)
    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]

    @property
    def padded_height(self) -> int:
        return max(self.height, self.tile_height)

    @property
    def padded_width(self) -> int:
        return max(self.width, self.tile_width)

    @property
    def num_tiles(self) -> int:
        return len(self.starts_y) * len(self.starts_x)

    def origins(self) -> list[tuple[int, int]]:
        """``(y0, x0)`` of every tile, row-major (the order tiles are batched and stored in)."""
        return [(y0, x0) for y0 in self.starts_y for x0 in self.starts_x]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["starts_y"], data["starts_x"] = list(self.starts_y), list(self.starts_x)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TileGrid":
        fields = dict(data)
        fields["starts_y"], fields["starts_x"] = tuple(fields["starts_y"]), tuple(fields["starts_x"])
        return cls(**fields)
