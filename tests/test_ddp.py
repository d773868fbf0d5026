"""Two-process CPU DDP (gloo) through train.py: both ranks train the same number of updates and
end with identical weights."""

import os
import subprocess
import sys

import torch

from _training_utils import micro_overrides, tiny_config_files
from conftest import REPO
from vidtwin.cli import train_main
from vidtwin.cli.train import RUN_NAME_ENV
from vidtwin.training.run_dir import CLAIMED_RUN_ENV, LAUNCH_ID_ENV


def test_two_process_cpu_ddp(tmp_path, monkeypatch, capsys):
    record = tmp_path / "ranks"
    record.mkdir()
    command = [
        sys.executable, str(REPO / "train.py"), "--logdir", str(tmp_path), "--name", "ddp",
        "--base", *tiny_config_files(), "--accelerator", "cpu", "--devices", "2", "--allow-any-target",
        *micro_overrides("lightning.trainer.strategy=ddp", "lightning.trainer.max_steps=2",
                         "model.params.loss.params.disc_start=1",
                         # Two different clips: the distributed sampler gives each rank its own, so
                         # equal weights at the end mean the gradients were averaged across ranks.
                         "data.params.train.clips_per_video=2",
                         f"lightning.callbacks.ranks={{target: _training_utils.WorldSizeRecorder, params: {{directory: {record}}}}}"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    for var in (LAUNCH_ID_ENV, CLAIMED_RUN_ENV, RUN_NAME_ENV):  # left by an in-process prepare() of another test
        env.pop(var, None)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    files = sorted(p.name for p in record.iterdir())
    assert [name.rsplit(".", 1)[0] for name in files] == ["rank0_of2_steps2", "rank1_of2_steps2"]
    # DDP averages the gradients, so both replicas hold the same weights after every update.
    sums = [float((record / name).read_text()) for name in files]
    assert sums[0] == sums[1]
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["vidtwin_training"]["train_step"] == 2

    # Relaunching the same job script must not write into the finished run: refused before any
    # process is started, with the command that continues it. Refused in this process, as a new
    # launch (no launch identity left by another test); the launch above ran as real processes.
    for var in (LAUNCH_ID_ENV, CLAIMED_RUN_ENV, RUN_NAME_ENV):
        monkeypatch.setenv(var, "")  # recorded, so that what the refused launch sets is undone after the test
        monkeypatch.delenv(var)
    assert train_main(command[2:]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("vidtwin train: error:")]
    assert f"--resume {tmp_path / 'ddp'}" in line and "Traceback" not in err
    assert torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)["vidtwin_training"]["train_step"] == 2
