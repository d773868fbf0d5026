"""The Python inference API with the tiny model: round trips, tiles, partial decodes, cross-reenactment."""

import pytest
import torch

from vidtwin import load_model
from vidtwin.data.transforms import preprocess_clip
from vidtwin.inference import (
    InferenceError,
    LatentFileError,
    cross_reenact,
    decode_latents,
    encode_video,
    load_latents,
    load_source,
    reconstruct_video,
    save_latents,
    to_uint8_frames,
)
from vidtwin.inference.pipeline import frames_to_float

from conftest import TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(TINY_CONFIG)  # random weights: the pipeline, not the quality, is under test


def _frames(num_frames, height, width, seed=0):
    """Smooth moving colour gradients as uint8 (N, H, W, 3): structured enough for tiles to differ."""
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(3, generator=generator) * 6.28
    t = torch.arange(num_frames, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, height)[None, :, None, None]
    x = torch.linspace(0, 4, width)[None, None, :, None]
    image = 127.5 + 120 * torch.sin(x + 0.7 * y + 0.3 * t + phase)  # (N, H, W, 3)
    return image.round().clamp(0, 255).to(torch.uint8)


# Tests that compare with a float32 computation ask for dtype="fp32": the default "auto" runs bf16
# on CPUs with native bf16 instructions.


def test_reconstruct_resize_matches_the_model_on_each_clip(model):
    frames = _frames(19, 80, 100)
    result = reconstruct_video(model, frames, fps=10.0, batch_clips=2, dtype="fp32")
    assert result.video.shape == (3, 19, 64, 64) and result.fps == 10.0
    # Independent computation: preprocess the padded clips by hand and run the model on them.
    length = model.config.input_size[0]  # frames per clip
    count = -(-19 // length)  # clips, the last one padded with the last frame
    padded = torch.cat([frames, frames[-1:].expand(count * length - 19, -1, -1, -1)])  # (count x length, H, W, 3)
    starts = range(0, count * length, length)
    clips = torch.stack([preprocess_clip(padded[i : i + length], (64, 64)) for i in starts])  # (count, 3, length, 64, 64)
    with torch.no_grad():
        expected = model(clips)[0]  # (count, 3, length, 64, 64)
    expected = expected.transpose(0, 1).reshape(3, count * length, 64, 64)[:, :19]
    torch.testing.assert_close(result.video, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(result.inputs, clips.transpose(0, 1).reshape(3, count * length, 64, 64)[:, :19], rtol=0, atol=0)


@pytest.mark.parametrize("spatial", ["resize", "tile"])
def test_encode_then_decode_equals_reconstruct(model, tmp_path, spatial):
    frames = _frames(11, 72, 90)
    reconstructed = reconstruct_video(model, frames, fps=8.0, spatial=spatial, batch_clips=3)
    encoded = encode_video(model, frames, fps=8.0, spatial=spatial, batch_clips=3)
    path = save_latents(encoded, tmp_path / "latents.safetensors")
    decoded = decode_latents(model, load_latents(path, expected_config=model.config), batch_clips=2)
    expected_size = (72, 90) if spatial == "tile" else (64, 64)
    assert decoded.video.shape == (3, 11, *expected_size) and decoded.fps == 8.0
    assert (reconstructed.video - decoded.video).abs().max() <= 1e-4


def test_tiled_frame_of_exactly_one_tile_equals_untiled(model):
    frames = _frames(9, 64, 64)
    tiled = reconstruct_video(model, frames, fps=5.0, spatial="tile", dtype="fp32")
    untiled = reconstruct_video(model, frames, fps=5.0, spatial="resize", dtype="fp32")
    length = model.config.input_size[0]  # frames per clip
    count = -(-9 // length)
    index = [min(i, 8) for i in range(count * length)]  # the last clip padded with the last frame
    direct_input = torch.stack([frames_to_float(frames[index[i : i + length]]) for i in range(0, count * length, length)])
    with torch.no_grad():
        direct = model(direct_input)[0].transpose(0, 1).reshape(3, count * length, 64, 64)[:, :9]
    assert torch.equal(tiled.video, untiled.video)
    torch.testing.assert_close(tiled.video, direct, rtol=0, atol=1e-5)


def test_tiled_reconstruction_keeps_native_size_and_blends_tiles(model):
    length = model.config.input_size[0]  # one clip
    frames = _frames(length, 70, 150)
    result = reconstruct_video(model, frames, fps=5.0, spatial="tile", tile_overlap=16, dtype="fp32")
    assert result.video.shape == (3, length, 70, 150)
    assert torch.isfinite(result.video).all()
    # The top-left corner comes from the first tile alone: it must equal that tile's reconstruction.
    # (Rows: tiles start at 0 and 6, so the 16-pixel cross-fade centred at 35 begins at row 27;
    # columns: tiles start at 0, 43, 86, so the first cross-fade begins at column 45.)
    first_tile = frames_to_float(frames)[:, :, :64, :64][None]
    with torch.no_grad():
        expected = model(first_tile)[0][0]  # (3, length, 64, 64)
    torch.testing.assert_close(result.video[:, :, :27, :45], expected[:, :, :27, :45], rtol=0, atol=1e-5)
    assert (result.video[:, :, 30:64, 50:64] - expected[:, :, 30:64, 50:64]).abs().max() > 1e-3  # blended there


def test_batching_does_not_change_the_result(model):
    frames = _frames(21, 64, 80)
    one = reconstruct_video(model, frames, fps=5.0, batch_clips=1).video
    many = reconstruct_video(model, frames, fps=5.0, batch_clips=5).video
    torch.testing.assert_close(one, many, rtol=0, atol=1e-5)


def test_partial_decodes_and_cross_reenactment(model):
    video_a, video_b = _frames(17, 64, 64, seed=1), _frames(12, 80, 96, seed=2)
    encoded_a = encode_video(model, video_a, fps=10.0, dtype="fp32")
    full = decode_latents(model, encoded_a).video
    structure_only = decode_latents(model, encoded_a, only="structure").video
    dynamics_only = decode_latents(model, encoded_a, only="dynamics").video
    assert structure_only.shape == dynamics_only.shape == full.shape == (3, 17, 64, 64)
    assert (structure_only - full).abs().max() > 1e-3 and (dynamics_only - full).abs().max() > 1e-3

    # Cross with itself is the reconstruction; with another video it takes the shorter length.
    itself = cross_reenact(model, video_a, encoded_a, fps=10.0).video
    torch.testing.assert_close(itself, reconstruct_video(model, video_a, fps=10.0).video, rtol=0, atol=1e-5)
    crossed = cross_reenact(model, video_a, video_b, fps=10.0, dtype="fp32")
    assert crossed.video.shape == (3, 12, 64, 64)
    swapped = cross_reenact(model, video_b, video_a, fps=10.0).video
    assert swapped.shape == (3, 12, 64, 64) and (swapped - crossed.video).abs().max() > 1e-3
    # The first frames of a cross use A's structure latents with B's dynamics latents, clip by clip.
    encoded_b = encode_video(model, video_b, fps=10.0, dtype="fp32")
    from vidtwin.models.vidtwin_ae import VidTwinLatents

    with torch.no_grad():
        mixed = model.decode(VidTwinLatents(encoded_a.structure[:1, 0], encoded_b.dynamics_x[:1, 0], encoded_b.dynamics_y[:1, 0]))
    torch.testing.assert_close(crossed.video[:, :model.config.input_size[0]], mixed[0], rtol=0, atol=1e-5)


def test_tiled_cross_needs_equal_sizes(model):
    with pytest.raises(InferenceError, match="same size"):
        cross_reenact(model, _frames(8, 64, 80), _frames(8, 64, 100), fps=5.0, spatial="tile")


def test_latents_of_another_config_are_refused(model):
    encoded = encode_video(model, _frames(8, 64, 64), fps=5.0)
    encoded.config = {**encoded.config, "depth": 3}
    with pytest.raises(LatentFileError, match="depth: file=3 model=2"):
        decode_latents(model, encoded)


def test_reduced_precision_runs_close_to_fp32(model):
    frames = _frames(8, 64, 64)
    reference = reconstruct_video(model, frames, fps=5.0, dtype="fp32").video
    bf16 = reconstruct_video(model, frames, fps=5.0, dtype="bf16").video
    assert bf16.dtype == torch.float32 and bf16.shape == reference.shape
    assert 0 < (bf16 - reference).abs().mean() < 0.05  # autocast really ran, and stayed close


def test_frame_sources_and_sampling():
    frames = _frames(30, 16, 16)
    source = load_source(frames, fps=30.0, sample_fps=10.0)
    assert source.num_frames == 10 and source.fps == 10.0
    assert torch.equal(source.frames, frames[::3])
    assert load_source(frames, fps=30.0, max_frames=4).num_frames == 4
    with pytest.raises(InferenceError, match="fps is required"):
        load_source(frames)
    with pytest.raises(InferenceError, match="uint8"):
        load_source(frames.float(), fps=5.0)


def test_uint8_conversion_rounds_and_clamps():
    video = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 3.0]).view(1, 6, 1, 1).expand(3, -1, -1, -1)
    frames = to_uint8_frames(video)
    assert frames.shape == (6, 1, 1, 3)
    assert frames[:, 0, 0, 0].tolist() == [0, 0, 128, 255, 255, 255]
