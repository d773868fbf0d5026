"""train.py never mixes two runs, keeps one newest last.ckpt, resumes from the newest readable
checkpoint, and never leaves a torn checkpoint under its final name (real kills and a full disk)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from _training_utils import StubModule, clip_overrides, micro_overrides, single_thread, tiny_config_files
from conftest import REPO, mount_tmpfs
from vidtwin.cli import train_main as main
from vidtwin.training.run_dir import (
    CLAIMED_RUN_ENV,
    LAUNCH_ID_ENV,
    AtomicCheckpointIO,
    CheckpointWriteError,
    check_run_directory,
    claim_run_directory,
    config_history,
    newest_valid_checkpoint,
    remove_stale_temp_files,
    resolve_resume,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _train(tmp_path, *extra, name="run", resume=None, flags=()):
    argv = ["--logdir", str(tmp_path), "--seed", "5", *flags]
    argv += ["--resume", str(resume)] if resume else ["--name", name, "--base", *tiny_config_files()]
    return main(argv + micro_overrides("lightning.checkpoint.every_n_steps=2", *extra))


def _error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("vidtwin train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _update(path):
    return torch.load(path, weights_only=True)["vidtwin_training"]["train_step"]


def test_an_existing_run_is_refused_then_resumed_or_overwritten(tmp_path, capsys):
    assert _train(tmp_path, "lightning.trainer.max_steps=2") == 0
    run = tmp_path / "run"
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    config_before = (run / "config.yaml").read_text()

    assert _train(tmp_path, "lightning.trainer.max_steps=3", "model.params.learning_rate=1e-5") == 2
    line = _error_line(capsys.readouterr().err)
    assert f"vidtwin train --resume {run}" in line and "--overwrite" in line
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before
    assert (run / "config.yaml").read_text() == config_before

    # --overwrite starts over: nothing of the first run is left beside the new one.
    assert _train(tmp_path, "lightning.trainer.max_steps=1", flags=["--overwrite"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert _update(run / "checkpoints" / "last.ckpt") == 1


def test_every_rank_takes_the_same_decision(tmp_path, monkeypatch):
    """Ranks started separately (torchrun, srun) recognise the directory that rank 0 of their own
    launch claimed; a later launch, or a run from before, is refused on every rank."""
    for var in (LAUNCH_ID_ENV, CLAIMED_RUN_ENV, "RANK", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.setenv(var, "")  # recorded, so that what the claims below set is undone after the test
        monkeypatch.delenv(var)
    launch = {"WORLD_SIZE": "2", "MASTER_ADDR": "node1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "job7"}
    run = tmp_path / "run"

    def as_rank(rank, **env):
        for var in (LAUNCH_ID_ENV, CLAIMED_RUN_ENV):
            monkeypatch.delenv(var, raising=False)
        for var, value in {**launch, **env, "RANK": str(rank)}.items():
            monkeypatch.setenv(var, value)

    as_rank(1)  # rank 1 before rank 0 has written anything
    assert check_run_directory(run, overwrite=False) is False
    as_rank(0)
    assert check_run_directory(run, overwrite=False) is False
    claim_run_directory(run, clear=False)
    (run / "config.yaml").write_text("written by rank 0")
    as_rank(1)  # rank 1 after rank 0 has written its config: the same launch, so the same decision
    assert check_run_directory(run, overwrite=False) is False

    for rank in (0, 1):  # the next launch of the same job script
        as_rank(rank, MASTER_PORT="29501")
        with pytest.raises(Exception, match="already holds a run"):
            check_run_directory(run, overwrite=False)
        assert check_run_directory(run, overwrite=True) is True


def test_two_separately_started_ranks_both_refuse_an_existing_run(tmp_path):
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run.parent / "config.yaml").write_text("model: {}\n")
    torch.save({"vidtwin_training": {"train_step": 1}, "state_dict": {}}, run / "last.ckpt")  # an earlier run
    earlier = (run / "last.ckpt").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}
    env.pop(LAUNCH_ID_ENV, None)
    ranks = [subprocess.Popen([sys.executable, str(REPO / "train.py"), "--logdir", str(tmp_path), "--name", "run",
                               "--base", *tiny_config_files(), *micro_overrides()],
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for rank in ranks:
        _, err = rank.communicate(timeout=120)
        assert rank.returncode == 2 and "--resume" in _error_line(err)
    assert (run / "last.ckpt").read_bytes() == earlier


def _snapshot(folder):
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_a_resume_that_does_not_fit_changes_nothing_and_each_resume_keeps_its_config(tmp_path, capsys):
    from vidtwin import load_model
    from vidtwin.config import load_config

    assert _train(tmp_path, "lightning.trainer.max_steps=2") == 0
    run = tmp_path / "run"
    stale = run / "checkpoints" / ".last.ckpt.tmp-killed"  # left by a killed save
    stale.write_bytes(b"torn")
    before = _snapshot(run)

    # The checkpoint does not load into a model of another size: one line naming the changed key,
    # and the run directory is exactly as it was, so the run still resumes and loads.
    assert _train(tmp_path, "lightning.trainer.max_steps=3", "model.params.autoencoder.mlp_ratio=2.0", resume=run) == 2
    line = _error_line(capsys.readouterr().err)
    assert "model.params.autoencoder.mlp_ratio: (unset) -> 2.0" in line and "weights change shape" in line
    assert _snapshot(run) == before
    load_model(run / "config.yaml", run / "checkpoints" / "last.ckpt")
    # The weights fit but the optimizer states do not (another set of trainable parameters):
    # Lightning finds it while it restores, before any checkpoint or config is written.
    assert _train(tmp_path, "lightning.trainer.max_steps=3", "model.params.freeze=[^decoder]", resume=run) == 2
    line = _error_line(capsys.readouterr().err)
    assert "model.params.freeze: (unset) -> ['^decoder']" in line and "parameter group" in line
    logs_aside = lambda snapshot: {k: v for k, v in snapshot.items() if "tensorboard" not in k}  # noqa: E731
    assert logs_aside(_snapshot(run)) == logs_aside(before)

    # Resumes that fit: config.yaml stays the first config, each resume's merged config is kept,
    # and the next resume starts from the newest one.
    assert _train(tmp_path, "lightning.trainer.max_steps=3", "model.params.learning_rate=1e-5", resume=run) == 0
    assert not stale.exists()
    assert (run / "config.yaml").read_bytes() == before[str(run / "config.yaml")][1]
    assert _train(tmp_path, "lightning.trainer.max_steps=4", resume=run) == 0
    history = config_history(run)
    assert [p.relative_to(run).as_posix() for p in history] == ["config.yaml", "configs/resume-1.yaml",
                                                                 "configs/resume-2.yaml"]
    assert [load_config(p).model.params.learning_rate for p in history[1:]] == [1e-5, 1e-5]
    assert [load_config(p).lightning.trainer.max_steps for p in history] == [2, 3, 4]
    assert _update(run / "checkpoints" / "last.ckpt") == 4


def test_default_run_names_differ_within_one_second():
    from vidtwin.cli.train import parse_args, resolve_run_name

    args = parse_args(["--base", *tiny_config_files()])
    first, second = resolve_run_name(args), resolve_run_name(args)
    assert first != second and first.startswith("tiny_") and second.startswith("tiny_")


def test_one_last_ckpt_always_the_newest_and_resume_says_which(tmp_path, caplog):
    # Ends before the first interval checkpoint: last.ckpt comes from the final-checkpoint callback.
    assert _train(tmp_path, "lightning.trainer.max_steps=1") == 0
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="vidtwin"):
        assert _train(tmp_path, "lightning.trainer.max_steps=3", resume=run) == 0
    assert "resuming from" in caplog.text and "at update 1" in caplog.text
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step_00000002.ckpt"]  # no last-v1.ckpt
    assert _update(run / "checkpoints" / "last.ckpt") == 3

    # A truncated last.ckpt is skipped, with a warning, for the newest readable one.
    data = (run / "checkpoints" / "last.ckpt").read_bytes()
    (run / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 2])
    caplog.clear()
    with caplog.at_level("INFO", logger="vidtwin"):
        assert newest_valid_checkpoint(run / "checkpoints") == (run / "checkpoints" / "step_00000002.ckpt", 2)
    assert "skipping" in caplog.text and "last.ckpt" in caplog.text


def test_resume_without_a_readable_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {}\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 torn")
    assert main(["--resume", str(run)]) == 2
    assert "none of its 1 .ckpt files is readable" in _error_line(capsys.readouterr().err)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert main(["--resume", str(video)]) == 2
    assert "give a run directory or a .ckpt" in _error_line(capsys.readouterr().err)


_WRITER = textwrap.dedent("""
    import sys, torch
    from vidtwin.training.run_dir import AtomicCheckpointIO
    io = AtomicCheckpointIO()
    io.save_checkpoint({"vidtwin_training": {"train_step": 0}, "weights": torch.zeros(10)}, sys.argv[1])
    print("first saved", flush=True)
    big = torch.randn(32, 1024, 1024)  # 128 MB: the kill lands while it is being written
    for update in range(1, 1000):
        io.save_checkpoint({"vidtwin_training": {"train_step": update}, "weights": big}, sys.argv[1])
""")


def test_a_killed_save_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert writer.stdout.readline().strip() == "first saved"
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".last.ckpt") for p in target.parent.iterdir()):
            assert time.monotonic() < deadline, "the second save never started"
            time.sleep(0.01)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    saved = torch.load(target, weights_only=True)  # whole: either the first save or a later complete one
    update = saved["vidtwin_training"]["train_step"]
    assert saved["weights"].numel() == (10 if update == 0 else 32 * 1024 * 1024)
    # The torn temporary file is left hidden beside it, is never taken for a checkpoint, and goes
    # when the run is resumed.
    (stale,) = [p for p in target.parent.iterdir() if p.name.startswith(".last.ckpt.tmp-")]
    assert newest_valid_checkpoint(target.parent) == (target, update)
    (target.parent.parent / "config.yaml").write_text("model: {}\n")
    assert resolve_resume(str(target.parent.parent)).checkpoint == target
    assert stale.exists()  # nothing in the run changes before the resume has been checked
    remove_stale_temp_files(target.parent)  # what train.py does then
    assert not stale.exists()


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    full = tmp_path / "full"
    mounted = mount_tmpfs(full, "2m")
    if not mounted:  # not allowed to mount here: a write that fails like a full disk does
        import vidtwin.training.run_dir as run_dir

        real_write = run_dir._WriteErrorRecorder.write

        def write(self, data):
            if self.handle.tell() + len(data) > 2 * 1024 * 1024:
                self.handle.write(data[:100])
                raise OSError(28, "No space left on device")
            return real_write(self, data)

        monkeypatch.setattr(run_dir._WriteErrorRecorder, "write", write)
    try:
        target = full / "checkpoints" / "last.ckpt"
        (full / "config.yaml").write_text("model: {}\n")
        first = {"vidtwin_training": {"train_step": 3}, "weights": torch.zeros(10)}
        AtomicCheckpointIO().save_checkpoint(first, target)
        bigger = {"vidtwin_training": {"train_step": 4}, "weights": torch.zeros(1024 * 1024)}
        with pytest.raises(CheckpointWriteError, match=r"No space left on device; the newest complete checkpoint, "
                                                       rf"last.ckpt \(update 3\), is kept.*--resume {full}`"):
            AtomicCheckpointIO().save_checkpoint(bigger, target)
        assert torch.equal(torch.load(target, weights_only=True)["weights"], torch.zeros(10))
        assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    finally:
        if mounted:
            subprocess.run(["umount", str(full)], check=True)


def _full_disk(monkeypatch):
    """Every checkpoint write fails as on a full disk."""
    import vidtwin.training.run_dir as run_dir

    def write(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_dir._WriteErrorRecorder, "write", write)


def test_a_full_disk_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, capsys, monkeypatch):
    import shlex

    with monkeypatch.context() as patch:
        _full_disk(patch)
        assert _train(tmp_path, "lightning.trainer.max_steps=2") == 1
    line = _error_line(capsys.readouterr().err)
    run = tmp_path / "run"
    assert "no complete checkpoint of this run exists yet, so there is nothing to resume" in line
    assert "kept" not in line and "--resume" not in line
    # Once there is space again: the same name says what the folder holds, and the command given starts it over.
    assert _train(tmp_path, "lightning.trainer.max_steps=2") == 2
    assert "wrote no complete checkpoint, so there is nothing to resume" in _error_line(capsys.readouterr().err)
    hint = line[line.index("start it over with `") + len("start it over with `"):].rstrip("`")
    words = shlex.split(hint)
    assert words[:2] == ["vidtwin", "train"] and "--overwrite" in words
    assert main(words[2:]) == 0
    assert _update(run / "checkpoints" / "last.ckpt") == 2


class DataCheckingStub(StubModule):
    """The stub model of the training contract, with its own check that the data module fits it."""

    def check_datamodule(self, datamodule):
        from vidtwin.config import ConfigError

        raise ConfigError(f"data.params.batch_size is {datamodule.batch_size}; this model needs 7")


def test_a_module_refuses_its_data_before_the_run_directory_is_claimed(tmp_path, capsys):
    from omegaconf import OmegaConf

    from vidtwin.config import load_config

    config = OmegaConf.create({
        "model": {"target": f"{__name__}.DataCheckingStub"},
        "data": load_config(tiny_config_files(), clip_overrides(frames=2, size=16)).data,
        "lightning": {"trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1}},
    })
    OmegaConf.save(config, tmp_path / "stub.yaml")
    assert _train(tmp_path, "lightning.trainer.max_steps=1") == 0  # an earlier run of the name
    earlier = _snapshot(tmp_path / "run")
    argv = ["--logdir", str(tmp_path), "--allow-any-target", "--base", str(tmp_path / "stub.yaml")]
    assert main([*argv, "--name", "new"]) == 2
    assert "this model needs 7" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()
    assert main([*argv, "--name", "run", "--overwrite"]) == 2  # refused before the earlier run is deleted
    assert _snapshot(tmp_path / "run") == earlier


class FitStartCheckingStub(StubModule):
    """A model whose check of its config runs only once fitting starts."""

    def on_fit_start(self):
        from vidtwin.config import ConfigError

        super().on_fit_start()
        raise ConfigError("model.params.learning_rate does not suit this data")


def test_a_new_run_that_fails_before_its_first_update_leaves_no_run_directory(tmp_path, capsys):
    from omegaconf import OmegaConf

    from vidtwin.config import load_config

    config = OmegaConf.create({
        "model": {"target": f"{__name__}.FitStartCheckingStub"},
        "data": load_config(tiny_config_files(), clip_overrides(frames=2, size=16)).data,
        "lightning": {"trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1, "enable_model_summary": False}},
    })
    OmegaConf.save(config, tmp_path / "stub.yaml")
    argv = ["--logdir", str(tmp_path / "logs"), "--allow-any-target", "--name", "run", "--base", str(tmp_path / "stub.yaml")]
    for _ in range(2):  # and the same command again says the same, not --resume
        assert main(argv) == 2
        assert "does not suit this data" in _error_line(capsys.readouterr().err)
        assert not (tmp_path / "logs" / "run").exists()


@pytest.fixture(scope="module")
def game_tokens(tmp_path_factory):
    """The Moving Digits game encoded into FSQ tokens by a small untrained autoencoder (tests/world_helpers.py)."""
    from world_helpers import encode_game_tokens, make_play_files

    root = make_play_files(tmp_path_factory.mktemp("world_files"))
    return encode_game_tokens(root, root / "game", root / "tokens", train_videos=2, clips_per_video=3)


@pytest.mark.parametrize("override, message", [
    ("data.params.sequence_length=2", "sequence_length is 2, but the world model's context_clips 2 needs windows of 3"),
    ("model.params.world.start_window=4", "sequence_length is 3, but the world model's start_window 4"),
])
def test_a_world_model_run_with_windows_that_do_not_fit_leaves_no_run_directory(tmp_path, capsys, game_tokens,
                                                                                 override, message):
    from world_helpers import world_training_config

    config = world_training_config(tmp_path / "world.yaml", game_tokens)
    argv = ["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config), override]
    for _ in range(2):  # the same command again says the same, not --resume
        assert main(argv) == 2
        assert message in _error_line(capsys.readouterr().err)
        assert not (tmp_path / "logs").exists()
