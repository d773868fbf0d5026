"""A config is data until it is built: `vidtwin train` (new runs and --resume) and the training
benchmark check what every `target` is, a class of the kind its slot builds, before they import a
module outside the allowed packages or call anything; --allow-any-target lifts the package rule
and nothing else; and no config can allow unsafe unpickling, which only --allow-unsafe-pickle or a
Python argument can."""

import importlib
import sys
from argparse import Namespace

import pytest
import torch
from omegaconf import OmegaConf

from _training_utils import micro_overrides, single_thread, tiny_config_files
from conftest import REPO, TINY_CONFIG
from vidtwin.cli import train_main as main
from vidtwin.config import (
    TRAINING_MODULE,
    ConfigError,
    build_from_config,
    check_config_targets,
    instantiate_from_config,
    load_config,
)
from vidtwin.errors import UserError


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("vidtwin train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for a pickle's payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _hostile_callbacks(tmp_path):
    """Callback entries of the three targets the fault pass ran, each of which leaves ``ran`` behind if called."""
    marker = tmp_path / "ran"
    torch.save({"payload": _Payload(marker)}, tmp_path / "evil.pt")
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return marker, {
        "torch.load": {"target": "torch.load", "params": {"f": str(tmp_path / "evil.pt"), "weights_only": False}},
        "torch.hub.load": {"target": "torch.hub.load", "params": {"repo_or_dir": str(hub), "model": "x",
                                                                  "source": "local"}},
        "vidtwin.atomic_io.atomic_write_text": {"target": "vidtwin.atomic_io.atomic_write_text",
                                                "params": {"path": str(marker), "text": "written by a config"}},
    }


def _config_with_callback(tmp_path, callback, name="evil.yaml"):
    path = tmp_path / name
    OmegaConf.save(OmegaConf.create({"lightning": {"callbacks": {"x": callback}}}), path)
    return path


@pytest.mark.parametrize("target", ["torch.load", "torch.hub.load", "vidtwin.atomic_io.atomic_write_text"])
def test_a_function_in_a_callback_slot_is_refused_before_it_runs(tmp_path, capsys, target):
    marker, callbacks = _hostile_callbacks(tmp_path)
    evil = _config_with_callback(tmp_path, callbacks[target])
    logs = tmp_path / "logs"
    assert main(["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), str(evil),
                 *micro_overrides()]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"lightning.callbacks.x: {target} is a function, not a Lightning Callback class" in line
    assert not marker.exists() and not logs.exists()


def test_a_function_in_a_resumed_runs_config_is_refused_before_it_runs(tmp_path, capsys):
    marker, callbacks = _hostile_callbacks(tmp_path)
    assert main(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(),
                 *micro_overrides("lightning.trainer.max_steps=1")]) == 0
    run = tmp_path / "run"  # a run folder from elsewhere, its config.yaml given a hostile callback
    config = OmegaConf.load(run / "config.yaml")
    config.lightning.callbacks.x = callbacks["vidtwin.atomic_io.atomic_write_text"]
    OmegaConf.save(config, run / "config.yaml")
    before = {str(p): p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert main(["--resume", str(run), "lightning.trainer.max_steps=2"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "lightning.callbacks.x: vidtwin.atomic_io.atomic_write_text is a function" in line
    assert not marker.exists() and {str(p): p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_allow_any_target_lifts_the_package_rule_but_never_calls_a_function(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = _config_with_callback(tmp_path, {"target": "os.system", "params": {"command": f"touch {marker}"}})
    logs = tmp_path / "logs"
    argv = ["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), str(evil), *micro_overrides()]
    assert main(argv) == 2
    assert "lightning.callbacks.x.target: 'os.system' is outside the packages" in _error_line(capsys.readouterr().err)
    assert main(["--allow-any-target", *argv]) == 2
    assert "lightning.callbacks.x: os.system is a function, not a Lightning Callback class" in \
        _error_line(capsys.readouterr().err)
    assert not marker.exists() and not logs.exists()


def test_a_module_that_runs_when_imported_is_not_imported(tmp_path, capsys):
    # vidtwin.__main__ runs the vidtwin command when it is imported: a private module name is refused unimported.
    sys.modules.pop("vidtwin.__main__", None)
    logs = tmp_path / "logs"
    assert main(["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), *micro_overrides(),
                 "lightning.callbacks.x={target: vidtwin.__main__.main}"]) == 2
    assert "lightning.callbacks.x.target: 'vidtwin.__main__.main' names a private module" in \
        _error_line(capsys.readouterr().err)
    assert "vidtwin.__main__" not in sys.modules and not logs.exists()


@pytest.mark.parametrize("slot, target, message", [
    ("model.params.optimizer", "torch.nn.Identity", "model.params.optimizer: torch.nn.Identity is not a torch.optim"),
    ("model.params.loss", "torch.optim.AdamW", "model.params.loss: torch.optim.AdamW is not a torch.nn.Module class"),
    ("model.params.lr_scheduler_g", "torch.optim.lr_scheduler.LambdaLR",
     "model.params.lr_scheduler_g: torch.optim.lr_scheduler.LambdaLR is not a learning-rate schedule name"),
    ("data", "torch.nn.Identity", "data: torch.nn.Identity is not a LightningDataModule class"),
])
def test_each_slot_takes_its_own_kind(slot, target, message):
    config = load_config(tiny_config_files(), [f"{slot}.target={target}"])
    with pytest.raises(ConfigError, match=message):
        check_config_targets(config)


def test_the_official_schedule_names_are_names_and_are_never_imported(tmp_path):
    official = "vidtok.models.vidtwin_ae.LambdaWarmUpCosineScheduler"
    assert main(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(),
                 *micro_overrides("lightning.trainer.max_steps=1", f"model.params.lr_scheduler_g.target={official}")]) == 0
    assert "vidtok" not in sys.modules


def test_the_library_builds_only_classes_of_a_config_kind(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError, match="atomic_write_text is a function"):
        instantiate_from_config({"target": "vidtwin.atomic_io.atomic_write_text",
                                 "params": {"path": str(marker), "text": "x"}})
    with pytest.raises(ConfigError, match="is outside the packages"):
        instantiate_from_config({"target": "os.system", "params": {"command": f"touch {marker}"}})
    assert not marker.exists()
    assert isinstance(instantiate_from_config({"target": "torch.nn.Identity"}), torch.nn.Identity)


# ---------------------------------------------------------------------------- unsafe unpickling
def _micro_checkpoint(tmp_path):
    """``last.ckpt`` of a one-update micro run, and a copy that only full unpickling opens."""
    assert main(["--logdir", str(tmp_path), "--name", "first", "--base", *tiny_config_files(),
                 *micro_overrides("lightning.trainer.max_steps=1")]) == 0
    checkpoint = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["notes"] = Namespace(origin="an older trainer")  # not a tensor: weights_only refuses it
    torch.save(checkpoint, tmp_path / "trusted.ckpt")
    return tmp_path / "trusted.ckpt"


def test_a_config_cannot_allow_unsafe_unpickling(tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"payload": _Payload(marker)}, tmp_path / "evil.ckpt")
    logs = tmp_path / "logs"
    assert main(["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), *micro_overrides(),
                 f"model.params.ckpt_path={tmp_path / 'evil.ckpt'}", "model.params.allow_unsafe_pickle=true"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "model.params.allow_unsafe_pickle: a config cannot allow unsafe unpickling" in line
    assert "--allow-unsafe-pickle" in line
    assert not marker.exists() and not logs.exists()
    # The library refuses it in a config as well; the caller's own argument is what allows it.
    node = {"target": "vidtwin.training.VidTwinLightningModule", "params": {"allow_unsafe_pickle": True}}
    with pytest.raises(ConfigError, match="a config cannot allow unsafe unpickling"):
        instantiate_from_config(node)
    assert not marker.exists()


def test_allow_unsafe_pickle_on_the_command_line_fine_tunes_from_a_trusted_pickle(tmp_path, capsys):
    trusted = _micro_checkpoint(tmp_path)
    argv = ["--logdir", str(tmp_path), "--base", *tiny_config_files(),
            *micro_overrides("lightning.trainer.max_steps=1", f"model.params.ckpt_path={trusted}")]
    assert main(["--name", "refused", *argv]) == 2
    assert "allow_unsafe_pickle" in _error_line(capsys.readouterr().err)
    assert main(["--name", "tuned", "--allow-unsafe-pickle", *argv]) == 0
    saved = torch.load(tmp_path / "tuned" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "allow_unsafe_pickle" not in saved["hyper_parameters"]  # the permission is not passed on
    assert "allow_unsafe_pickle" not in OmegaConf.load(tmp_path / "tuned" / "config.yaml").model.params


def test_build_from_config_takes_the_permission_as_the_callers_argument_only():
    config = load_config(tiny_config_files(), micro_overrides())
    module = build_from_config(config.model, "model", TRAINING_MODULE, extra={"allow_unsafe_pickle": True})
    assert module.hparams.get("allow_unsafe_pickle") is None


# ---------------------------------------------------------------------------- other tools
def test_the_training_benchmark_checks_targets_as_vidtwin_train_does(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    benchmark = importlib.import_module("scripts.benchmark_train")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"model: {{target: os.system, params: {{command: 'touch {marker}'}}}}\n")
    with pytest.raises(UserError, match="model.target: 'os.system' is outside the packages"):
        benchmark.main(["--base", str(evil)])
    with pytest.raises(UserError, match="model: os.system is a function"):
        benchmark.main(["--base", str(evil), "--allow-any-target"])
    assert not marker.exists()
