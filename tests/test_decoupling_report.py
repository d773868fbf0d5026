"""The decoupling report (`vidtwin decoupling`, vidtwin.inference.decoupling): the temporal bands on
synthetic signals, the order score on an order-blind model, the JSON, the published config, the command."""

import json
import math

import pytest
import torch

from vidtwin import load_model
from vidtwin.cli import main
from vidtwin.config import load_config
from vidtwin.data.video_io import write_video
from vidtwin.inference.decoupling import (
    BANDS, DECODES, BandScore, band_scores, dct_basis, decoupling_report, shuffled_order, split_temporal_bands,
    unique_names, write_decoupling_report,
)
from vidtwin.inference.pipeline import reconstruct_video
from vidtwin.inference.sources import SourceVideo
from vidtwin.metrics import psnr_per_frame, to_unit_range

from conftest import TINY_FRAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

FRAMES = 16


def pixels(signal: torch.Tensor) -> torch.Tensor:
    """A signal along time ``(N,)`` as a small video ``(3, N, 2, 2)``: every pixel and channel the same."""
    return signal.double()[None, :, None, None].expand(3, -1, 2, 2).clone()


def drift() -> torch.Tensor:
    return torch.linspace(-0.5, 0.5, FRAMES)  # a steady movement: slow


def shake() -> torch.Tensor:
    return 0.2 * (-1.0) ** torch.arange(FRAMES)  # +-0.2 on alternate frames: fast


def shares(reference, decoded) -> dict:
    return {band: score.share for band, score in band_scores(reference, decoded).items()}


def clip_frames(seed: int, frames: int = 20, height: int = 40, width: int = 56) -> torch.Tensor:
    """uint8 ``(frames, H, W, 3)``: moving colour waves, different for each seed."""
    generator = torch.Generator().manual_seed(seed)
    speed, angle, phase = torch.rand(3, generator=generator) * torch.tensor([0.6, 3.0, 6.0]) + 0.1
    t = torch.arange(frames, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, height)[None, :, None, None]
    x = torch.linspace(0, 4, width)[None, None, :, None]
    wave = torch.sin(x * torch.cos(angle) + y * torch.sin(angle) + speed * t + phase + torch.tensor([0.0, 2.0, 4.0]))
    return (127.5 + 120 * wave).round().to(torch.uint8)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("tiny")


# ------------------------------------------------------------------------------------------- bands


def test_dct_basis_is_orthonormal_and_the_bands_add_up():
    basis = dct_basis(FRAMES)
    assert torch.allclose(basis @ basis.T, torch.eye(FRAMES, dtype=torch.float64), atol=1e-12)
    video = torch.randn(3, 11, 4, 5, dtype=torch.float64)
    mean, slow, fast = split_temporal_bands(video)
    assert torch.allclose(mean + slow + fast, video, atol=1e-12)
    assert torch.allclose(mean, video.mean(dim=1, keepdim=True).expand_as(video), atol=1e-12)


def test_a_perfect_decode_scores_1_and_a_still_decode_0():
    video = pixels(drift() + shake())
    assert shares(video, video) == {"slow": 1.0, "fast": 1.0}
    still = video.mean(dim=1, keepdim=True).expand_as(video)
    assert shares(video, still) == {"slow": 0.0, "fast": 0.0}
    frozen_first_frame = video[:, :1].expand_as(video)  # a still decode that is not the mean
    assert shares(video, frozen_first_frame) == {"slow": 0.0, "fast": 0.0}  # clipped at 0


def test_a_decode_that_keeps_only_the_slow_change():
    video = pixels(drift() + shake())
    mean, slow, _ = split_temporal_bands(video)
    assert shares(video, mean + slow) == pytest.approx({"slow": 1.0, "fast": 0.0}, abs=1e-9)
    # The drift alone, as a decode would draw it: the DCT keeps a steady drift in the slow band
    # (a plain FFT would put the jump from the last frame back to the first into every band).
    result = shares(video, pixels(drift()))
    assert result["slow"] > 0.97 and result["fast"] < 0.03
    # And the other way round: the shake alone reproduces the fast change, not the slow one.
    result = shares(video, pixels(shake()))
    assert result["slow"] < 0.03 and result["fast"] > 0.97


def test_a_band_the_input_lacks_has_no_share():
    slow_only = pixels(torch.cos(math.pi * (torch.arange(FRAMES) + 0.5) * 2 / FRAMES))  # DCT component k = 2
    assert shares(slow_only, slow_only) == {"slow": 1.0, "fast": None}
    shaken = shares(slow_only, slow_only + pixels(shake()))  # a decode with extra fast change
    assert shaken["fast"] is None and shaken["slow"] == pytest.approx(1.0, abs=0.005)  # the shake leaks a little
    still = pixels(torch.zeros(FRAMES))
    assert shares(still, still) == {"slow": None, "fast": None}
    assert BandScore(error=1.0, energy=4.0, change=4.0).share == 0.75
    assert BandScore(error=0.0, energy=1e-9, change=1.0).share is None


def test_shuffled_order_permutes_within_each_clip_and_never_keeps_the_order():
    generator = torch.Generator().manual_seed(0)
    order = shuffled_order(21, 8, generator)
    for start, end in ((0, 8), (8, 16), (16, 21)):
        block = order[start:end]
        assert sorted(block) == list(range(start, end)) and block != list(range(start, end))
    assert shuffled_order(9, 8, torch.Generator().manual_seed(0))[8] == 8  # a clip of one frame stays
    assert shuffled_order(2, 8, torch.Generator().manual_seed(0)) == [1, 0]


def test_unique_names():
    assert unique_names(["x/a.mp4", "y/b.mp4"]) == ["a", "b"]
    assert unique_names(["x/a.mp4", "x/a.mkv"]) == ["a.mp4", "a.mkv"]
    assert unique_names(["x/a.mp4", "y/a.mp4"]) == ["01_a.mp4", "02_a.mp4"]


# ------------------------------------------------------------------------------------------- order


def order_blind_model():
    """A tiny model whose structure latent cannot see the frames' order: temporal attention neither
    causal nor given positions, so the encoder treats frames as a set, as the Q-Former does."""
    torch.manual_seed(0)
    model = load_model(load_config("tiny", ["model.params.autoencoder.temporal_causal=false"]))
    model.encoder.pos_embed_temporal.zero_()
    return model


def test_order_ratio_is_0_for_an_order_blind_structure_and_not_for_the_published_design(tiny):
    videos = [clip_frames(1), clip_frames(2), clip_frames(3)]
    blind = decoupling_report(order_blind_model(), videos, fps=8.0, dtype="fp32", names=["a", "b", "c"])
    order = blind.summary["overall"]["order"]
    assert order["between_videos"] > 0 and order["ratio"] < 1e-3
    assert all(video["order"]["ratio"] < 1e-3 for video in blind.summary["videos"])
    causal = decoupling_report(tiny, videos, fps=8.0, dtype="fp32", names=["a", "b", "c"])
    # Causal temporal attention sees the order: 0.0071 for the untrained 4-frame tiny model, seed 0,
    # against below 1e-3 when blind.
    assert causal.summary["overall"]["order"]["ratio"] > 3e-3


def test_one_video_reports_the_raw_change_and_says_the_ratio_needs_two(tiny):
    source = SourceVideo(clip_frames(1, frames=20), fps=8.0, name="waves.mp4")  # a source is cut to the clips too
    report = decoupling_report(tiny, [source], dtype="fp32")
    assert [(v["name"], v["frames"]) for v in report.summary["videos"]] == [("waves", TINY_FRAMES)]
    overall = report.summary["overall"]
    assert overall["order"]["ratio"] is None and overall["order"]["structure_change"] > 0
    assert "two or more videos" in overall["order"]["note"]
    assert overall["cross"] is None and report.pairs == [] and report.summary["pairs"] == []


# ------------------------------------------------------------------------------------------- report


def test_report_json_and_pictures(tiny, tmp_path):
    videos = [clip_frames(1, frames=20), clip_frames(2, frames=5)]  # 20 frames cut to 2 clips; 5 frames, the last clip padded
    report = decoupling_report(tiny, videos, fps=8.0, dtype="fp32", clips=2, names=["long", "short"])
    summary = report.summary
    assert set(summary) == {"settings", "definitions", "overall", "videos", "pairs", "picture"}
    assert [(v["name"], v["frames"], v["clips"]) for v in summary["videos"]] == [
        ("long", 2 * TINY_FRAMES, 2), ("short", 5, -(-5 // TINY_FRAMES))]
    for entry in [*summary["videos"], summary["overall"]]:
        assert set(entry["psnr"]) == set(DECODES) and set(entry["bands"]) == set(DECODES)
        assert all(set(entry["bands"][d]) == set(BANDS) for d in DECODES)
        assert all(0.0 <= entry["bands"][d][b] <= 1.0 for d in DECODES for b in BANDS)
    assert summary["videos"][0]["picture"] == "videos/long.png"
    [pair] = summary["pairs"]
    assert (pair["a"], pair["b"], pair["frames"]) == ("long", "short", 5)
    assert [(c["structure"], c["dynamics"]) for c in pair["crossed"]] == [("long", "short"), ("short", "long")]
    assert summary["settings"]["clips_per_video"] == 2 and summary["settings"]["frames_per_clip"] == TINY_FRAMES

    # The full decode's PSNR is the reconstruction's, as `vidtwin evaluate` scores it.
    result = reconstruct_video(tiny, videos[0], fps=8.0, dtype="fp32", max_frames=2 * TINY_FRAMES)
    expected = psnr_per_frame(to_unit_range(result.video)[None], to_unit_range(result.inputs)[None], max_value=100.0)
    assert summary["videos"][0]["psnr"]["full"] == pytest.approx(float(expected.mean()), abs=1e-3)

    # Pictures: four rows (input and three decodes; A, B and the two crossings) of 4 frames.
    assert [len(strips.rows) for strips in (*report.videos, *report.pairs)] == [4, 4, 4]
    assert report.videos[0].rows[0].shape == (4, 64, 64, 3) and report.videos[1].positions == [0, 1, 3, 4]
    paths = write_decoupling_report(report, tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == [
        "report.json", "report.png", "videos/long.png", "videos/short.png"]
    assert json.loads(paths[0].read_text()) == summary
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in paths[1:])
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["long.png", "report.json", "report.png",
                                                                    "short.png", "videos"]  # no temporary files


def test_the_model_stays_in_its_mode_and_options_are_checked(tiny):
    tiny.train()
    try:
        report = decoupling_report(tiny, [clip_frames(1)], fps=8.0, dtype="fp32")
        again = decoupling_report(tiny, [clip_frames(1)], fps=8.0, dtype="fp32")
        assert tiny.training  # restored
        assert report.summary == again.summary  # eval-mode encoding: posterior means, no sampling
    finally:
        tiny.eval()
    for wrong in ({"spatial": "tile"}, {"clips": 0}, {"band_cutoff": 0.5}):
        with pytest.raises(ValueError):
            decoupling_report(tiny, [clip_frames(1)], fps=8.0, **wrong)


def test_the_published_config_with_random_weights():
    # The published architecture (16x224x224, hidden 768, the published latents) with one transformer
    # block in the encoder and decoder instead of 16: the 16 blocks cost about 100 s for one video on
    # 2 CPU cores (17 s an encode, 22 s a decode; this report needs 2 encodes and 3 decodes).
    torch.manual_seed(0)
    model = load_model(load_config("vidtwin", ["model.params.autoencoder.depth=1"]))
    assert model.input_size == (16, 224, 224)
    report = decoupling_report(model, [clip_frames(1, frames=16)], fps=8.0, dtype="fp32")
    [video] = report.summary["videos"]
    assert video["frames"] == 16 and video["order"]["structure_change"] > 0
    assert all(math.isfinite(video["psnr"][d]) for d in DECODES)
    assert report.videos[0].rows[0].shape == (4, 128, 128, 3)  # frames shrunk for the picture


# ------------------------------------------------------------------------------------------- command


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("decoupling")
    torch.save(tiny.state_dict(), root / "tiny.pt")
    for seed in (1, 2):
        write_video(root / f"clip{seed}.mp4", clip_frames(seed), fps=8.0)
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_command_writes_the_report_and_refuses_to_replace_it(files, tmp_path, capsys):
    output = tmp_path / "report"
    common = ["--config", "tiny", "--ckpt", files / "tiny.pt", "--device", "cpu", "--dtype", "fp32", "--quiet"]
    argv = ["decoupling", "--input", files / "clip1.mp4", files / "clip2.mp4", "--output", output, *common]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "order: shuffling the frames moves the structure latent" in out and "cross-reenactment" in out
    summary = json.loads((output / "report.json").read_text())
    assert [v["name"] for v in summary["videos"]] == ["clip1", "clip2"]
    assert summary["settings"]["ckpt"] == str(files / "tiny.pt") and summary["settings"]["config"] == ["tiny"]
    for picture in ("report.png", "videos/clip1.png", "videos/clip2.png"):
        assert (output / picture).read_bytes().startswith(b"\x89PNG")

    before = (output / "report.json").read_bytes()
    code, _, err = run(argv, capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (output / "report.json").read_bytes() == before
    assert run([*argv, "--overwrite"], capsys)[0] == 0

    # Errors are one line each, before the model loads; nothing is left in the output folder.
    fresh = tmp_path / "fresh"
    for arguments, message in (([files / "clip1.mp4", files / "broken.mp4"], "broken.mp4"),
                               ([files / "clip1.mp4", "--band-cutoff", "0.7"], "--band-cutoff")):
        code, _, err = run(["decoupling", "--input", *arguments, "--output", fresh, *common], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
        assert not fresh.exists() or not any(fresh.rglob("*"))
