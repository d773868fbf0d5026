"""Overlapping spatial tiles for reconstructing frames at their native resolution.

``--spatial tile`` runs the model on model-sized windows (``model.input_size[1:]``) of each clip
and blends the decoded windows back into one frame. Neighbouring tiles overlap; inside an overlap
of width ``o`` the two tiles are cross-faded linearly (one ramps from 1 to 0 while the other ramps
from 0 to 1) in the middle of the overlap, away from the tile borders where a model is least
accurate; seams do not show and the weights of the tiles covering a pixel sum to exactly 1. A frame
smaller than a tile along an axis is padded (edge replication by default) up to the tile size and
cropped back after blending.

Tile starts along an axis are spread evenly between 0 and ``length - tile``, so every tile lies
inside the (padded) frame and the actual overlap is at least the requested one.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from vidtwin.latents.layout import TileGrid  # the grid record lives with the latent formats that store it


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``.

    A length no larger than the tile gets one tile at 0 (the frame is padded up to the tile).
    """
    if tile < 1:
        raise ValueError(f"tile size must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, {tile - 1}] for tiles of {tile} pixels, got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    num_tiles = math.ceil((length - tile) / stride) + 1
    span = length - tile
    return [round(i * span / (num_tiles - 1)) for i in range(num_tiles)]


def crossfade_width(starts: list[int], tile: int, overlap: int) -> float:
    """Width of the linear cross-fade between neighbouring tiles.

    The requested overlap, but never wider than the narrowest actual overlap, nor than the distance
    between the centres of neighbouring overlaps: then every cross-fade lies inside both tiles it
    mixes and no two cross-fades touch, so at most two tiles mix at any pixel.
    """
    overlaps = [a + tile - b for a, b in zip(starts, starts[1:])]
    centres = [(a + tile + b) / 2 for a, b in zip(starts, starts[1:])]
    gaps = [b - a for a, b in zip(centres, centres[1:])]
    return float(min([overlap, *overlaps, *gaps]))


def axis_weights(starts: list[int], tile: int, overlap: int) -> torch.Tensor:
    """1-D blending weight of each tile along one axis; along the axis they sum to exactly 1.

    Between tiles ``i`` and ``i + 1`` a cross-fade of width :func:`crossfade_width` sits in the
    middle of their overlap: tile ``i`` ramps linearly from 1 to 0 across it while tile ``i + 1``
    ramps from 0 to 1. Outside the cross-fades one tile has weight 1 and the others 0. With zero
    overlap the tiles meet edge to edge.

    Returns:
        ``(len(starts), tile)`` float32 tensor with values in [0, 1].
    """
    width = crossfade_width(starts, tile, overlap) if len(starts) > 1 else 0.0
    centres = [(a + tile + b) / 2 for a, b in zip(starts, starts[1:])]

    def handed_over(positions: torch.Tensor, centre: float) -> torch.Tensor:
        """How much of a pixel belongs to the right-hand tile of the cross-fade at ``centre``."""
        if width == 0:
            return (positions >= centre).double()
        return ((positions - centre) / width + 0.5).clamp(0.0, 1.0)

    weights = torch.ones(len(starts), tile, dtype=torch.float64)
    for index, start in enumerate(starts):
        positions = start + torch.arange(tile, dtype=torch.float64) + 0.5  # pixel centres on the axis
        if index > 0:
            weights[index] *= handed_over(positions, centres[index - 1])
        if index + 1 < len(starts):
            weights[index] *= 1.0 - handed_over(positions, centres[index])
    return weights.float()


def make_tile_grid(height: int, width: int, tile_size: tuple[int, int], overlap: int) -> TileGrid:
    """Tiles of ``tile_size = (tile_height, tile_width)`` covering a ``height x width`` frame."""
    tile_height, tile_width = tile_size
    if overlap >= min(tile_height, tile_width):
        raise ValueError(
            f"tile overlap {overlap} must be smaller than the tile size {tile_height}x{tile_width}"
        )
    padded_height, padded_width = max(height, tile_height), max(width, tile_width)
    return TileGrid(
        height=height,
        width=width,
        tile_height=tile_height,
        tile_width=tile_width,
        overlap=overlap,
        starts_y=tuple(tile_starts(padded_height, tile_height, overlap)),
        starts_x=tuple(tile_starts(padded_width, tile_width, overlap)),
    )


def tile_weights(grid: TileGrid) -> torch.Tensor:
    """2-D weight of every tile: the outer product of its two axis weights (they sum to 1 per pixel).

    Returns:
        ``(num_tiles, tile_height, tile_width)`` float32, tiles in :meth:`TileGrid.origins` order.
    """
    weights_y = axis_weights(list(grid.starts_y), grid.tile_height, grid.overlap)  # (n_y, th)
    weights_x = axis_weights(list(grid.starts_x), grid.tile_width, grid.overlap)  # (n_x, tw)
    weights = weights_y[:, None, :, None] * weights_x[None, :, None, :]  # (n_y, n_x, th, tw)
    return weights.flatten(0, 1)  # (num_tiles, th, tw)


def blend_weights(grid: TileGrid) -> torch.Tensor:
    """Per-tile weights placed on the padded frame; they sum to 1 at every pixel.

    Returns:
        ``(num_tiles, padded_height, padded_width)`` float32; zero outside each tile.
    """
    weights = tile_weights(grid)
    canvas = torch.zeros(grid.num_tiles, grid.padded_height, grid.padded_width)
    for index, (y0, x0) in enumerate(grid.origins()):
        canvas[index, y0 : y0 + grid.tile_height, x0 : x0 + grid.tile_width] = weights[index]
    return canvas


def pad_to_grid(frames: torch.Tensor, grid: TileGrid, mode: str = "replicate") -> torch.Tensor:
    """Pad ``(..., H, W)`` frames on the bottom/right up to the grid's padded size.

    ``mode`` is ``"replicate"`` (repeat the edge pixels) or ``"reflect"`` (mirror; needs the pad
    to be smaller than the frame).
    """
    pad_bottom = grid.padded_height - frames.shape[-2]
    pad_right = grid.padded_width - frames.shape[-1]
    if pad_bottom == 0 and pad_right == 0:
        return frames
    leading = frames.shape[:-3]
    # F.pad's replicate/reflect modes want (N, C, H, W); fold every leading axis into N.
    folded = frames.reshape(-1, *frames.shape[-3:])  # (prod(leading), C', H, W)
    padded = F.pad(folded, (0, pad_right, 0, pad_bottom), mode=mode)  # (prod(leading), C', Hp, Wp)
    return padded.reshape(*leading, *padded.shape[-3:])  # (..., C', Hp, Wp)


def iter_tiles(clip: torch.Tensor, grid: TileGrid, pad_mode: str = "replicate") -> Iterator[torch.Tensor]:
    """The grid's tiles of a ``(C, T, H, W)`` clip, in grid order, as views ``(C, T, th, tw)``.

    ``(H, W)`` must equal ``(grid.height, grid.width)``; smaller frames are padded first.
    """
    if tuple(clip.shape[-2:]) != (grid.height, grid.width):
        raise ValueError(f"clip is {tuple(clip.shape[-2:])}, the tile grid expects {(grid.height, grid.width)}")
    padded = pad_to_grid(clip, grid, mode=pad_mode)  # (C, T, Hp, Wp)
    for y0, x0 in grid.origins():
        yield padded[..., y0 : y0 + grid.tile_height, x0 : x0 + grid.tile_width]  # (C, T, th, tw)


def extract_tiles(clip: torch.Tensor, grid: TileGrid, pad_mode: str = "replicate") -> torch.Tensor:
    """Cut a ``(C, T, H, W)`` clip into the grid's tiles -> ``(num_tiles, C, T, tile_height, tile_width)``."""
    return torch.stack(list(iter_tiles(clip, grid, pad_mode)))  # (num_tiles, C, T, th, tw)


def blend_tiles(tiles: torch.Tensor | Sequence[torch.Tensor], grid: TileGrid) -> torch.Tensor:
    """Blend decoded tiles into one clip and crop the padding away.

    Args:
        tiles: ``(num_tiles, C, T, tile_height, tile_width)``, or a sequence of ``(C, T, th, tw)``,
            in grid order.

    Returns:
        ``(C, T, grid.height, grid.width)`` in the dtype of the tiles.
    """
    if len(tiles) != grid.num_tiles:
        raise ValueError(f"got {len(tiles)} tiles, the grid has {grid.num_tiles}")
    weights = tile_weights(grid).to(device=tiles[0].device, dtype=torch.float32)  # (num_tiles, th, tw)
    channels, frames = tiles[0].shape[:2]
    canvas = torch.zeros(channels, frames, grid.padded_height, grid.padded_width, device=tiles[0].device)
    for index, (y0, x0) in enumerate(grid.origins()):
        # The weights of all tiles sum to 1 at every pixel, so the weighted sum needs no division.
        window = canvas[..., y0 : y0 + grid.tile_height, x0 : x0 + grid.tile_width]
        window.addcmul_(tiles[index].float(), weights[index])
    return canvas[..., : grid.height, : grid.width].to(tiles[0].dtype)  # (C, T, H, W)
