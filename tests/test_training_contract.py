"""The training contract is all a new model needs: train.py trains a stub TrainingModule of a few
lines (tests/_training_utils.py) with its run directory, progress bar, sample videos, summary and
an exact resume, and refuses a model that does not follow the contract."""

import pytest
import torch
from omegaconf import OmegaConf

from _training_utils import clip_overrides, single_thread, tiny_config_files
from vidtwin.config import load_config
from vidtwin.cli.train import main


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _stub_config(tmp_path):
    """The tiny config's data on one real clip, and the stub model."""
    data = load_config(tiny_config_files(), clip_overrides(frames=2, size=16)).data
    config = OmegaConf.create({
        "model": {"target": "_training_utils.StubModule", "params": {"learning_rate": 0.1}},
        "data": data,
        "lightning": {
            "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "log_every_n_steps": 1,
                        "val_check_interval": 2, "check_val_every_n_epoch": None, "limit_val_batches": 1, "num_sanity_val_steps": 0,
                        "enable_model_summary": False},
            "checkpoint": {"every_n_steps": 1, "keep": "official"},
            "callbacks": {"samples": {"target": "vidtwin.training.callbacks.VideoGridLogger",
                                      "params": {"every_n_steps": 2, "max_samples": 1}}},
        },
    })
    path = tmp_path / "stub.yaml"
    OmegaConf.save(config, path)
    return path


def _gain(path):
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint["vidtwin_training"]["train_step"], checkpoint["state_dict"]["gain"]


def test_a_stub_module_trains_resumes_and_reports_through_train_py(tmp_path, capsys):
    stub = _stub_config(tmp_path)
    logs = tmp_path / "logs"
    argv = ["--logdir", str(logs), "--allow-any-target", "--seed", "3"]
    assert main([*argv, "--name", "straight", "--base", str(stub), "lightning.trainer.max_steps=4"]) == 0
    assert main([*argv, "--name", "split", "--base", str(stub)]) == 0
    captured = capsys.readouterr()
    run = logs / "split"

    # Run directory, checkpoints counted in updates, the module's sample videos.
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert (run / "config.yaml").is_file() and (run / "samples" / "step_00000002.mp4").stat().st_size > 0
    assert _gain(run / "checkpoints" / "last.ckpt")[0] == 2
    # Progress in updates and the closing summary, with the module's monitored metric.
    assert "2/2" in captured.err
    summary = captured.out[captured.out.rindex("run finished:"):].splitlines()
    assert summary[0].startswith("run finished: all 2 updates done, 2 updates in ")
    assert any(line.startswith("  best val/loss: ") and "at update 2" in line for line in summary)
    assert any(line.startswith("  best checkpoint: ") for line in summary)
    assert not any("reconstruct" in line for line in summary)  # the stub declares no commands

    # Resume to 4 updates: the same weights as 4 straight updates.
    assert main([*argv, "--resume", str(run), "lightning.trainer.max_steps=4"]) == 0
    assert (run / "configs" / "resume-1.yaml").is_file()
    step, gain = _gain(run / "checkpoints" / "last.ckpt")
    straight_step, straight_gain = _gain(logs / "straight" / "checkpoints" / "last.ckpt")
    assert step == straight_step == 4 and torch.equal(gain, straight_gain)
    assert not torch.equal(gain, _gain(run / "checkpoints" / "best_step_00000002.ckpt")[1])


def test_a_config_from_elsewhere_needs_allow_any_target(tmp_path, capsys):
    stub = _stub_config(tmp_path)
    assert main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(stub)]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train.py: error:")]
    assert "model.target: '_training_utils.StubModule' is outside the packages" in line and "--allow-any-target" in line
    assert not (tmp_path / "logs").exists()
