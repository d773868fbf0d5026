"""What clusters do to a real train.py process: SIGTERM or SIGUSR1 before a kill (the run stops at
the next update with a checkpoint of it, exits 128 + N and says how to resume), and a peer process
of a multi-process run that dies (the other one says so in one line)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _training_utils import micro_overrides, single_thread, tiny_config_files
from conftest import REPO
from vidtwin.cli import train_main
from vidtwin.cli.train import RUN_NAME_ENV
from vidtwin.training.run_dir import CLAIMED_RUN_ENV, LAUNCH_ID_ENV

# Without the launch identity that an in-process prepare() of another test may leave behind.
ENV = {var: value for var, value in os.environ.items() if var not in (LAUNCH_ID_ENV, CLAIMED_RUN_ENV, RUN_NAME_ENV)}
ENV.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _start(tmp_path, *extra, overrides=(), resume=False):
    """train.py in a session of its own, so that a signal can go to its whole process group; with
    ``resume``, the run ``tmp_path / "run"`` continued."""
    run = ["--resume", str(tmp_path / "run")] if resume else [
        "--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files()]
    command = [sys.executable, str(REPO / "train.py"), *run, *extra,
               *micro_overrides("lightning.trainer.max_steps=100000", "lightning.checkpoint.every_n_steps=1",
                                *overrides)]
    return subprocess.Popen(command, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(path: Path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _update(path):
    return torch.load(path, weights_only=True)["vidtwin_training"]["train_step"]


def _children(pid):
    """Child process ids, from /proc (the processes that Lightning starts for the other ranks)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_a_signal_stops_at_the_next_update_with_a_checkpoint_of_it(tmp_path, monkeypatch, caplog):
    # With a data-loading worker; SLURM signals every process of the job, workers included. SIGTERM
    # stops the run, SIGUSR1 stops its resume: each signal stops a real process, one start fewer than
    # a new run per signal.
    checkpoints = tmp_path / "run" / "checkpoints"
    stopped_at = 0
    for signum, resume in ((signal.SIGTERM, False), (signal.SIGUSR1, True)):
        process = _start(tmp_path, overrides=["data.params.num_workers=1"], resume=resume)
        first_update = stopped_at + 2
        _wait_for(checkpoints / f"step_{first_update:08d}.ckpt", process)
        os.killpg(process.pid, signum)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 128 + signum, err[-3000:]  # 143 for SIGTERM, as a shell reports a kill
        if resume:  # the resume started from the update SIGTERM interrupted
            assert "resuming from" in err and f"at update {stopped_at}" in err, err[-3000:]
        (line,) = [line for line in err.splitlines() if line.startswith("vidtwin train: stopped")]
        assert f"stopped by {signal.Signals(signum).name} at update " in line
        assert f"resume with `vidtwin train --resume {tmp_path / 'run'}`" in line
        assert "Traceback" not in err
        assert f"run stopped: {signal.Signals(signum).name} received, checkpoint written" in out

        # last.ckpt holds the update the signal interrupted: nothing after the newest periodic checkpoint is lost.
        stopped_at = int(line.split(" at update ")[1].split()[0])
        newest_periodic = max(_update(p) for p in checkpoints.glob("step_*.ckpt"))
        assert _update(checkpoints / "last.ckpt") == stopped_at >= newest_periodic >= first_update

    # The last resume runs in this process: what it shows is the checkpoint, not the process.
    for var in (LAUNCH_ID_ENV, CLAIMED_RUN_ENV, RUN_NAME_ENV):
        monkeypatch.setenv(var, "")  # recorded, so that what the resume sets is undone after the test
        monkeypatch.delenv(var)
    with single_thread(), caplog.at_level("INFO", logger="vidtwin"):
        code = train_main(["--resume", str(tmp_path / "run"),
                           *micro_overrides(f"lightning.trainer.max_steps={stopped_at + 1}")])
    assert code == 0
    assert "resuming from" in caplog.text and f"at update {stopped_at}" in caplog.text
    assert _update(checkpoints / "last.ckpt") == stopped_at + 1


@pytest.mark.parametrize("killed", ["rank 1", "rank 0"])
def test_a_dead_peer_process_is_named_in_one_line(tmp_path, killed):
    process = _start(tmp_path, "--accelerator", "cpu", "--devices", "2", "lightning.trainer.strategy=ddp")
    _wait_for(tmp_path / "run" / "checkpoints" / "step_00000001.ckpt", process)
    (child,) = _children(process.pid)  # rank 1, started by Lightning
    os.kill(child if killed == "rank 1" else process.pid, signal.SIGKILL)
    # The survivor's stderr is the same pipe: communicate() returns when both processes have ended.
    _, err = process.communicate(timeout=300)
    (line,) = [line for line in err.splitlines() if line.startswith("vidtwin train: error:")]
    assert "a peer process of this 2-process run died" in line
    assert f"resume with `vidtwin train --resume {tmp_path / 'run'}`" in line
    assert "Traceback" not in err and "internal error" not in err
    if killed == "rank 1":
        assert process.returncode == 1


def test_a_signal_to_one_process_stops_every_process_at_the_same_update(tmp_path):
    # Kubernetes signals only the container's first process: rank 0 here.
    process = _start(tmp_path, "--accelerator", "cpu", "--devices", "2", "lightning.trainer.strategy=ddp")
    checkpoints = tmp_path / "run" / "checkpoints"
    _wait_for(checkpoints / "step_00000001.ckpt", process)
    (child,) = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("vidtwin train: stopped by SIGTERM at update ")]
    stopped_at = int(line.split(" at update ")[1].split()[0])
    assert _update(checkpoints / "last.ckpt") == stopped_at
    # Both ranks stopped at that update (each says so), and rank 1 is gone too.
    assert err.count(f"stopping on SIGTERM: writing {checkpoints / 'last.ckpt'} at update {stopped_at}") == 2
    deadline = time.monotonic() + 60
    while Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "rank 1 did not stop"
        time.sleep(0.1)
