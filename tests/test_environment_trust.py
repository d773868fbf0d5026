"""Issue 32's environment and bad-value cases: the load sample and OMP_NUM_THREADS (vidtwin.cpu_threads),
`vidtwin play`'s options, start video and terminal, and encode-dataset's duplicate sources and resumed
progress bar. Each test fails on the code before its fix."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from vidtwin import cpu_threads
from vidtwin.cli import main as vidtwin

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


# ---------------------------------------------------------------------------- the load sample
def stand_in_command(monkeypatch, name: str = "vidtwin.cli.make_meta") -> list:
    """Replace a subcommand's module by one that records that it ran; returns the record."""
    ran = []
    stand_in = types.ModuleType(name)
    stand_in.add_arguments = lambda parser: None
    stand_in.run = lambda args: ran.append(True) or 0
    monkeypatch.setitem(sys.modules, name, stand_in)
    return ran


@pytest.mark.parametrize("line", ["cpu0 12 abc 3 4 5 6 7 8", "cpu0 1 2", "cpu0 1 2 3 -4 5"])
def test_a_cpu_line_that_is_not_counters_falls_back_to_the_load_average(line, monkeypatch, tmp_path, caplog):
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  1 2 3 4 5 6 7 8\n{line}\nintr 1 2\n")
    monkeypatch.setattr(cpu_threads, "PROC_STAT", str(stat))
    monkeypatch.setattr(cpu_threads.os, "getloadavg", lambda: (0.7, 0.0, 0.0))
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh process: the command samples the load at start
    ran = stand_in_command(monkeypatch)
    assert vidtwin(["make-meta"]) == 0 and ran == [True]  # the command ran
    assert cpu_threads._startup_busy_cores == 0.7
    monkeypatch.undo()  # torch back in sys.modules, for the thread policy below
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", 0.7)
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="vidtwin.cpu_threads"):
            cpu_threads.apply_cpu_thread_policy()  # where --verbose says how the load was measured
    finally:
        torch.set_num_threads(before)
    assert "load sample: busy cores from the 1-minute load average (0.7)" in caplog.text
    assert f"{str(stat)} has a CPU line that is not counters: {line!r}" in caplog.text


def test_without_proc_stat_nor_a_load_average_nothing_is_busy(monkeypatch, tmp_path):
    def no_load_average():
        raise OSError("none here")

    monkeypatch.setattr(cpu_threads.os, "getloadavg", no_load_average)
    assert cpu_threads.busy_cores_now(2, stat_path=str(tmp_path / "missing")) == 0.0
    assert "no load average either" in cpu_threads.load_sample_note()


# ---------------------------------------------------------------------------- OMP_NUM_THREADS
@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "2,x"])
def test_an_omp_num_threads_that_openmp_ignores_is_said_to_be_ignored(value, monkeypatch, caplog):
    """OpenMP ignores these (GNU OpenMP prints 'Invalid value' and uses every core): the policy
    chooses, and the report says the value was ignored instead of crediting it."""
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 1.0)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", None)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        choice = cpu_threads.apply_cpu_thread_policy()
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert not choice.from_env and choice.threads == threads == 1
    assert choice.describe() == (f"torch CPU threads: 1 of 2 cores (1.0 cores busy with other work; "
                                 f"OMP_NUM_THREADS={value!r} was ignored, as OpenMP ignores it: give a whole number "
                                 "of 1 or more)")


def test_an_ignored_omp_num_threads_leaves_the_wait_policy_to_the_load(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 1.8)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", None)
    environ = {"OMP_NUM_THREADS": "abc"}
    assert cpu_threads.prepare_cpu_threads(environ) == "PASSIVE"
    environ = {"OMP_NUM_THREADS": " 2,1 "}  # a list of levels: OpenMP takes it
    assert cpu_threads.prepare_cpu_threads(environ) is None


def test_the_values_openmp_takes():
    read = cpu_threads.omp_threads_from_env
    assert read({}) == (None, None) and read({"OMP_NUM_THREADS": " "}) == (None, None)
    assert read({"OMP_NUM_THREADS": "3"}) == ("3", 3) and read({"OMP_NUM_THREADS": "4, 2"}) == ("4, 2", 4)
    for ignored in ("0", "-1", "abc", "1.5", "", "2,", "\u0663"):  # the last: an Arabic-Indic three
        assert read({"OMP_NUM_THREADS": ignored or ","})[1] is None


# ---------------------------------------------------------------------------- vidtwin play's options
def no_model(*args, **kwargs):
    pytest.fail("the model loaded before the options were checked")


@pytest.mark.parametrize("option, value, message", [
    ("--temperature", "nan", "--temperature must be a finite number >= 0"),
    ("--temperature", "inf", "--temperature must be a finite number >= 0"),
    ("--temperature", "-0.5", "--temperature must be a finite number >= 0"),
    ("--top-k", "0", "--top-k must be >= 1, got 0"),
    ("--seed", str(2 ** 70), f"--seed must be a whole number from {-2 ** 63} to {2 ** 64 - 1}"),
    ("--seed", str(-2 ** 63 - 1), "--seed must be a whole number"),
    ("--sample-fps", "nan", "--sample-fps must be a finite number > 0"),
    ("--sample-fps", "0", "--sample-fps must be a finite number > 0"),
])
def test_play_refuses_a_bad_sampling_option_before_the_model_loads(option, value, message, monkeypatch, tmp_path, capsys):
    import vidtwin.cli.play as play

    monkeypatch.setattr(play, "load_player", no_model)
    assert vidtwin(["play", str(tmp_path / "world"), "--start", str(tmp_path / "start.mp4"), "--actions", "R",
                    "--output", str(tmp_path / "out.mp4"), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vidtwin play: error: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists()


def test_torch_takes_every_seed_that_play_accepts():
    generator = torch.Generator()
    for seed in (-2 ** 63, -1, 0, 2 ** 63, 2 ** 64 - 1):
        generator.manual_seed(seed)


@pytest.mark.parametrize("option, value, message", [
    ("--temperature", "nan", "--temperature must be a finite number >= 0"),
    ("--seed", "-1", "--seed must be a whole number from 0 to"),  # numpy's generator of the action strings
    ("--seed", str(2 ** 64), "--seed must be a whole number from 0 to"),
])
def test_check_world_refuses_a_bad_sampling_option_before_the_model_loads(option, value, message, monkeypatch,
                                                                         tmp_path, capsys):
    import vidtwin.cli.demo_check_world as check_world

    monkeypatch.setattr(check_world, "load_player", no_model)
    assert vidtwin(["demo", "check-world", str(tmp_path / "world"), "--data", str(tmp_path), option, value]) == 2
    assert capsys.readouterr().err.startswith(f"vidtwin demo check-world: error: {message}")


@pytest.mark.parametrize("stdin", ["none", "closed", "file"])
def test_interactive_without_a_terminal_is_one_line(stdin, monkeypatch, tmp_path, capsys):
    import io

    import vidtwin.cli.play as play

    stream = {"none": None, "closed": io.StringIO(), "file": io.StringIO("RRq")}[stdin]
    if stdin == "closed":
        stream.close()
    monkeypatch.setattr(sys, "stdin", stream)
    monkeypatch.setattr(play, "load_player", no_model)
    assert vidtwin(["play", str(tmp_path / "world"), "--start", str(tmp_path / "start.mp4"), "--interactive",
                    "--output", str(tmp_path / "out.mp4")]) == 2
    assert capsys.readouterr().err.startswith("vidtwin play: error: --interactive needs a terminal")


# ---------------------------------------------------------------------------- vidtwin play's start video
@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    """A world model run (2 updates) on a token dataset that encode-dataset sampled at --sample-fps 8,
    with the small FSQ autoencoder and start videos of the same game at 32 fps and at 4 fps."""
    from vidtwin.cli import train_main as train
    from vidtwin.data.video_io import read_video, write_video
    from world_helpers import encode_game_tokens, make_play_files, world_training_config

    root = tmp_path_factory.mktemp("world_run")
    files = make_play_files(root / "files")
    encode_game_tokens(files, root / "game", root / "tokens", train_videos=3)
    config = world_training_config(root / "world.yaml", root / "tokens", (files / "ae.yaml", files / "ae.pt"))
    assert train(["--logdir", str(root / "logs"), "--name", "world", "--base", str(config),
                  "data.params.batch_size=3"]) == 0
    frames, fps = read_video(root / "game" / "val" / "00000.mp4")  # 8 fps
    assert fps == pytest.approx(8.0)
    write_video(root / "fast.mp4", frames.repeat_interleave(4, dim=0), fps=32.0)  # the same motion at 32 fps
    write_video(root / "slow.mp4", frames[::2], fps=4.0)
    return root, files


def test_a_faster_start_video_is_resampled_as_the_training_clips_were(world_run, tmp_path, capsys):
    from vidtwin.data.video_io import probe_video

    root, _ = world_run
    output = tmp_path / "rollout.mp4"
    assert vidtwin(["play", str(root / "logs" / "world"), "--start", str(root / "fast.mp4"), "--actions", "R",
                    "--output", str(output), "--device", "cpu"]) == 0
    info = probe_video(output)
    assert info.fps == pytest.approx(8.0) and info.num_frames == 2 * 8
    err = capsys.readouterr().err
    assert (f"--start {root / 'fast.mp4'}: resampled from 32 to 8 fps (every 4th frame), as the world model's training "
            f"clips were (encode-dataset --sample-fps 8, recorded in the token dataset {root / 'tokens'})") in err
    # --sample-fps chooses otherwise, and the line says so.
    assert vidtwin(["play", str(root / "logs" / "world"), "--start", str(root / "fast.mp4"), "--actions", "R",
                    "--output", str(output), "--device", "cpu", "--overwrite", "--sample-fps", "16"]) == 0
    assert probe_video(output).fps == pytest.approx(16.0)
    assert "as --sample-fps 16 asks; the world model was trained on clips of 8 fps" in capsys.readouterr().err


def test_a_slower_start_video_is_refused_before_the_model_loads(world_run, tmp_path, monkeypatch, capsys):
    import vidtwin.cli.play as play

    root, _ = world_run
    monkeypatch.setattr(play, "load_player", no_model)
    assert vidtwin(["play", str(root / "logs" / "world"), "--start", str(root / "slow.mp4"), "--actions", "R",
                    "--output", str(tmp_path / "out.mp4"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"vidtwin play: error: --start {root / 'slow.mp4'} is 4 fps, and the world model was trained on clips of 8 fps "
        f"(the token dataset {root / 'tokens'}); give a video of at least 8 fps, or --sample-fps to play it anyway")


def test_a_model_that_records_no_rate_says_the_start_video_plays_at_its_own(world_run, tmp_path, capsys):
    root, files = world_run
    assert vidtwin(["play", str(files / "world"), "--start", str(root / "fast.mp4"), "--actions", "R",
                    "--output", str(tmp_path / "out.mp4"), "--device", "cpu"]) == 0
    assert (f"--start {root / 'fast.mp4'}: played at its own 32 fps; the world model records no frame rate of its "
            "training clips") in capsys.readouterr().err


def test_an_unknown_key_is_named_under_the_picture(world_run, monkeypatch, capsys):
    """The keys of a session: x (no action), an escape sequence that is no arrow, R, then q."""
    import contextlib
    import io

    import vidtwin.cli.play as play
    from vidtwin.generation.player import WorldPlayer, read_start_clip

    root, files = world_run
    player = WorldPlayer(files / "world", device="cpu")
    start, _ = read_start_clip(files / "start.mp4", player.clip_size)
    monkeypatch.setattr(play, "RawTerminal", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\x1b[5~Rq"))
    clips = play.play_interactive(player, start, seed=0, temperature=1.0, top_k=None)
    assert len(clips) == 2  # the start clip and R's
    out = capsys.readouterr().out
    keys = "D/L/R/U or the arrow keys; q quits and saves"
    assert f"\r\x1b[K'x' is not an action of this world model; keys: {keys}" in out
    assert f"\r\x1b[Kthat key is not an action of this world model; keys: {keys}" in out
    assert out.count("\x1b[2J") == 2  # drawn twice (start, R): a line under the picture redraws nothing


# ---------------------------------------------------------------------------- encode-dataset
@pytest.fixture(scope="module")
def small_videos(tmp_path_factory):
    """Three six-frame 40x40 videos in train/, and a tiny autoencoder checkpoint."""
    from vidtwin import load_model
    from vidtwin.data.video_io import write_video

    from conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("small_videos")
    (root / "train").mkdir()
    generator = torch.Generator().manual_seed(0)
    for name in ("x.mp4", "y.mp4", "z.mp4"):
        frames = torch.randint(0, 255, (6, 40, 40, 3), generator=generator, dtype=torch.uint8)
        write_video(root / "train" / name, frames, fps=8.0)
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), root / "tiny.pt")
    return root


def encode_small(root, source, output, *extra: str) -> int:
    from conftest import TINY_CONFIG

    return vidtwin(["encode-dataset", "--config", str(TINY_CONFIG), "--ckpt", str(root / "tiny.pt"), "--input",
                    str(source), "--output", str(output), "--dtype", "fp32", "--num-workers", "0", "--max-frames", "4",
                    "--accelerator", "cpu", *extra])


@pytest.mark.parametrize("column", ["kind", "actions"])
def test_one_video_under_two_spellings_with_two_values_is_refused(column, small_videos, tmp_path, capsys):
    meta = small_videos / f"two_{column}.csv"
    meta.write_text("videos,kind,actions\ntrain/x.mp4,cat,R\ntrain/y.mp4,dog,L\n./train/x.mp4,dog,L\n")
    option = "--label-column" if column == "kind" else "--actions-column"
    assert encode_small(small_videos, meta, tmp_path / "latents", option, column, "--quiet") == 2
    plural = "classes" if column == "kind" else "actions"
    first, second = ("cat", "dog") if column == "kind" else ("R", "L")
    assert capsys.readouterr().err.strip() == (
        f"vidtwin encode-dataset: error: {meta} lists train/x.mp4 twice (row 2 as train/x.mp4, row 4 as ./train/x.mp4), "
        f"with the {plural} {first!r} and {second!r}; a video has one")
    assert not (tmp_path / "latents").exists()


def test_one_video_under_two_spellings_is_encoded_once(small_videos, tmp_path):
    from vidtwin.latents.dataset import LatentDataset

    (small_videos / "linked").mkdir(exist_ok=True)
    link = small_videos / "linked" / "x.mp4"
    if not link.exists():
        link.symlink_to(small_videos / "train" / "x.mp4")
    meta = small_videos / "repeats.csv"
    meta.write_text("videos,kind\ntrain/x.mp4,cat\ntrain/y.mp4,dog\n./train/x.mp4,cat\ntrain//x.mp4,cat\n"
                    "linked/x.mp4,cat\ntrain/../train/y.mp4,dog\n")
    assert encode_small(small_videos, meta, tmp_path / "latents", "--label-column", "kind", "--quiet") == 0
    dataset = LatentDataset(tmp_path / "latents")
    assert dataset.videos == ["train/x.mp4", "train/y.mp4"] and dataset.classes == ["cat", "dog"]


def test_a_resumed_encode_dataset_counts_each_video_once(small_videos, tmp_path, capsys):
    """Two videos encoded, then a third added: the bar of the rerun starts at 2 and ends at 3 of 3."""
    import re
    import shutil

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("x.mp4", "y.mp4"):
        shutil.copy(small_videos / "train" / name, folder / name)
    assert encode_small(small_videos, folder, tmp_path / "latents", "--quiet") == 0
    shutil.copy(small_videos / "train" / "z.mp4", folder / "z.mp4")
    capsys.readouterr()
    assert encode_small(small_videos, folder, tmp_path / "latents") == 0
    counts = re.findall(r"videos: +\d+%\|[^|]*\| (\d+)/(\d+)", capsys.readouterr().err)
    assert counts and counts[0] == ("2", "3") and counts[-1] == ("3", "3")
    assert all(int(done) <= int(total) for done, total in counts)
