"""Clip splitting, tile grids and blending, and the latent file format (no model needed)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vidtwin.inference.clips import ClipLayout, merge_clips, split_clips
from vidtwin.latents.latent_file import EncodedVideo, LatentFileError, config_identity, load_latents, save_latents
from vidtwin.inference.tiling import (
    axis_weights,
    crossfade_width,
    blend_tiles,
    blend_weights,
    extract_tiles,
    make_tile_grid,
    tile_starts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

# ------------------------------------------------------------------------------------- clips


@pytest.mark.parametrize("num_frames", [1, 7, 8, 9, 250])
def test_clip_layout_pads_last_clip_by_repeating_last_frame(num_frames):
    layout = ClipLayout(num_frames=num_frames, clip_len=8)
    assert layout.num_clips == -(-num_frames // 8)
    indices = [layout.clip_frame_indices(i) for i in range(layout.num_clips)]
    flat = [i for clip in indices for i in clip]
    assert flat[:num_frames] == list(range(num_frames))
    assert flat[num_frames:] == [num_frames - 1] * layout.num_padding_frames
    assert sum(layout.valid_frames(i) for i in range(layout.num_clips)) == num_frames


@pytest.mark.parametrize("num_frames", [1, 5, 16, 21])
def test_split_then_merge_returns_the_video(num_frames):
    video = torch.randn(3, num_frames, 4, 5)
    clips = split_clips(video, clip_len=8)
    assert clips.shape == (-(-num_frames // 8), 3, 8, 4, 5)
    # The padding repeats the last frame.
    assert torch.equal(clips[-1, :, -1], video[:, -1])
    assert torch.equal(merge_clips(clips, num_frames), video)


def test_merge_rejects_wrong_clip_count():
    with pytest.raises(ValueError, match="need 2 clips"):
        merge_clips(torch.zeros(3, 3, 8, 2, 2), num_frames=9)


# ------------------------------------------------------------------------------------- tiles


@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 16), (65, 64, 16), (640, 64, 16), (272, 64, 0), (100, 32, 31), (20, 64, 8)])
def test_tile_starts_cover_the_axis_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    padded = max(length, tile)
    assert starts[0] == 0 and starts[-1] + tile == padded
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize(
    "length,tile,overlap", [(640, 64, 16), (272, 64, 16), (150, 64, 32), (128, 64, 0), (100, 64, 50), (300, 64, 63)]
)
def test_axis_weights_cross_fade_linearly_and_sum_to_one(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    weights = axis_weights(starts, tile, overlap)
    total = torch.zeros(length)
    mixing = torch.zeros(length)
    for start, weight in zip(starts, weights):
        total[start : start + tile] += weight
        mixing[start : start + tile] += (weight > 0).float()
    torch.testing.assert_close(total, torch.ones(length), rtol=0, atol=1e-6)
    assert mixing.max() <= 2  # never more than two tiles mix at a pixel
    width = crossfade_width(starts, tile, overlap)
    assert 0 < width <= overlap if overlap else width == 0
    # Inside each cross-fade the weight changes by the same step from pixel to pixel (a straight line).
    # The first tile only fades out and the last only fades in; check both ramps.
    if len(starts) > 1:
        for weight, slope in ((weights[0], -1.0 / max(width, 1)), (weights[-1], 1.0 / max(width, 1))):
            ramp = weight[(weight > 0) & (weight < 1)]
            assert len(ramp) in ((int(width), int(width) + 1) if width else (0,))
            if len(ramp) > 1:
                steps = ramp[1:] - ramp[:-1]
                torch.testing.assert_close(steps, torch.full_like(steps, slope), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "height,width,overlap", [(64, 64, 16), (272, 640, 16), (100, 70, 8), (130, 200, 40), (50, 90, 0), (150, 150, 60)]
)
def test_blend_weights_sum_to_one_everywhere(height, width, overlap):
    grid = make_tile_grid(height, width, (64, 64), overlap)
    weights = blend_weights(grid)
    assert weights.shape == (grid.num_tiles, grid.padded_height, grid.padded_width)
    assert weights.min() >= 0 and weights.max() <= 1 + 1e-6
    torch.testing.assert_close(weights.sum(0), torch.ones(grid.padded_height, grid.padded_width), rtol=0, atol=1e-6)
    for index, (y0, x0) in enumerate(grid.origins()):
        outside = weights[index].clone()
        outside[y0 : y0 + 64, x0 : x0 + 64] = 0
        assert outside.abs().max() == 0  # a tile contributes nothing outside its window


@pytest.mark.parametrize("height,width,overlap", [(64, 64, 16), (72, 130, 16), (40, 50, 8), (64, 200, 0), (97, 64, 33)])
def test_extract_then_blend_is_the_identity(height, width, overlap):
    """An identity 'model' must give the input back exactly, including frames smaller than a tile."""
    grid = make_tile_grid(height, width, (64, 64), overlap)
    clip = torch.rand(3, 2, height, width)
    tiles = extract_tiles(clip, grid)
    assert tiles.shape == (grid.num_tiles, 3, 2, 64, 64)
    torch.testing.assert_close(blend_tiles(tiles, grid), clip, rtol=0, atol=1e-6)


def test_small_frames_are_padded_by_replication():
    grid = make_tile_grid(40, 50, (64, 64), 8)
    clip = torch.rand(3, 1, 40, 50)
    (tile,) = extract_tiles(clip, grid)
    assert torch.equal(tile[..., 40:, :50], clip[..., 39:40, :].expand(-1, -1, 24, -1))
    assert torch.equal(tile[..., :40, 50:], clip[..., :, 49:50].expand(-1, -1, -1, 14))


def test_blending_hides_a_seam_between_disagreeing_tiles():
    """Tiles decoded with different constant offsets blend into a smooth linear ramp, not a step."""
    grid = make_tile_grid(64, 112, (64, 64), 16)
    assert grid.starts_x == (0, 48)
    tiles = torch.stack([torch.zeros(1, 1, 64, 64), torch.ones(1, 1, 64, 64)])
    row = blend_tiles(tiles, grid)[0, 0, 0]  # (112,)
    assert torch.all(row[:48] == 0) and torch.all(row[64:] == 1)
    assert torch.all(row[49:64] > row[48:63])  # strictly increasing through the overlap


def test_tile_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap"):
        make_tile_grid(100, 100, (64, 64), 64)


# ------------------------------------------------------------------------------------- latent file

CONFIG = {"input_size": [8, 64, 64], "hidden_size": 64, "depth": 2, "attention_backend": "sdpa"}


def _encoded(config=CONFIG, tiles=None, num_frames=19):
    num_clips = -(-num_frames // 8)
    units = tiles.num_tiles if tiles else 1
    return EncodedVideo(
        structure=torch.randn(num_clips, units, 4, 4, 4, 4),
        dynamics_x=torch.randn(num_clips, units, 4, 8, 4),
        dynamics_y=torch.randn(num_clips, units, 4, 8, 4),
        fps=29.97,
        num_frames=num_frames,
        clip_len=8,
        original_size=(100, 120) if tiles else (272, 640),
        output_size=(100, 120) if tiles else (64, 64),
        spatial="tile" if tiles else "resize",
        config=dict(config),
        tile_grid=tiles,
        source="clip.mp4",
    )


@pytest.mark.parametrize("tiled", [False, True])
def test_latent_file_round_trip(tmp_path, tiled):
    grid = make_tile_grid(100, 120, (64, 64), 16) if tiled else None
    encoded = _encoded(tiles=grid)
    path = save_latents(encoded, tmp_path / "clip.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.safetensors"]  # no temporary file left
    loaded = load_latents(path, expected_config=CONFIG)
    for name in ("structure", "dynamics_x", "dynamics_y"):
        assert torch.equal(getattr(loaded, name), getattr(encoded, name))
    assert (loaded.fps, loaded.num_frames, loaded.clip_len) == (29.97, 19, 8)
    assert (loaded.original_size, loaded.output_size, loaded.spatial) == (encoded.original_size, encoded.output_size, encoded.spatial)
    assert loaded.tile_grid == grid
    assert loaded.config_sha256 == config_identity(CONFIG)[0]


def test_latent_file_from_another_config_is_refused(tmp_path):
    path = save_latents(_encoded(), tmp_path / "clip.safetensors")
    other = {**CONFIG, "hidden_size": 128}
    with pytest.raises(LatentFileError, match="hidden_size: file=64 model=128"):
        load_latents(path, expected_config=other)
    # Fields that only choose an implementation do not change the identity.
    load_latents(path, expected_config={**CONFIG, "attention_backend": "flash"})


def test_files_that_are_not_latent_files_are_refused(tmp_path):
    with pytest.raises(LatentFileError, match="does not exist"):
        load_latents(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(LatentFileError, match="not a VidTwin latent file"):
        load_latents(tmp_path / "weights.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(LatentFileError, match="not a readable latent file"):
        load_latents(tmp_path / "junk.safetensors")


def test_tampered_config_is_detected(tmp_path):
    path = save_latents(_encoded(), tmp_path / "clip.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        metadata = dict(reader.metadata())
        tensors = {k: reader.get_tensor(k) for k in reader.keys()}
    metadata["config_json"] = json.dumps({**CONFIG, "depth": 3})
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(LatentFileError, match="corrupt"):
        load_latents(path)
