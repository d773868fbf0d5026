"""What train.py shows: progress counted in updates, and the summary that ends every run."""

import logging
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from _training_utils import micro_overrides, single_thread, tiny_config_files
from vidtwin.cli import train_main as main
from vidtwin.training.run_report import RunRecorder, run_summary


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _forget_cli_log_handler():
    """main() adds a stderr handler to the "vidtwin" logger once per process, bound to the stderr of
    that moment (here pytest's capture, closed after the test): remove it for the tests that follow."""
    import logging

    yield
    package_logger = logging.getLogger("vidtwin")
    for handler in [h for h in package_logger.handlers if getattr(h, "_vidtwin_cli", False)]:
        package_logger.removeHandler(handler)


def test_a_finished_run_ends_with_a_summary_whose_reconstruct_command_runs(tmp_path, capfd, caplog):
    # capfd and caplog: Lightning's log handlers hold the stderr of their import time, which capsys
    # cannot see, and pytest collects log records apart from the output.
    # Lightning's INFO records as in a fresh train.py process: an encode-dataset run earlier in this
    # process (another test) lowers Lightning's logger to WARNING, as its own command wants.
    caplog.set_level(logging.INFO, logger="pytorch_lightning")
    shown = ("lightning.trainer.enable_progress_bar=false", "lightning.trainer.enable_model_summary=false")
    overrides = [o for o in micro_overrides() if o not in shown]
    code = main(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(), *overrides,
                 "lightning.trainer.max_steps=3", "lightning.checkpoint.every_n_steps=2",
                 "lightning.trainer.val_check_interval=2", "lightning.trainer.limit_val_batches=1"])
    captured = capfd.readouterr()
    assert code == 0
    run = tmp_path / "run"
    lines = captured.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run finished:"))
    summary = lines[start:]
    assert summary[0].startswith("run finished: all 3 updates done, 3 updates in ")
    assert f"  run directory:   {run}" in summary
    assert f"  last checkpoint: {run / 'checkpoints' / 'last.ckpt'}" in summary
    assert any(line.startswith("  best val/rec_loss: ") and "at update 2" in line for line in summary)
    assert f"  TensorBoard:     tensorboard --logdir {run / 'tensorboard'}" in summary
    # The progress bar counted the 3 updates (not Lightning's 6 optimizer steps, no epochs), and
    # Lightning's own end line in global steps is gone.
    assert "3/3" in captured.err and "Epoch" not in captured.err
    assert "`Trainer.fit` stopped" not in captured.out + captured.err
    # The bar shows the batch's L1 error and PSNR, not the log-likelihood loss; the chosen thread
    # count is said; Lightning's tip, zero FLOPs and its own deprecation warning are not.
    assert "rec=" in captured.err and "psnr=" in captured.err and "loss=" not in captured.err
    everything = captured.out + captured.err + caplog.text
    assert "torch CPU threads: 1 " in everything
    assert "Total params" in everything
    assert not any(noise in everything for noise in ("litlogger", "FLOPs", "Flops", "is deprecated"))

    (command,) = [line.split(":", 1)[1].strip() for line in summary if line.startswith("  reconstruct:")]
    argv = shlex.split(command)
    assert argv[:2] == ["vidtwin", "reconstruct"]
    from vidtwin.cli import main as inference_main

    assert inference_main(argv[1:] + ["--quiet", "--device", "cpu"]) == 0
    assert any((run / "reconstructions").iterdir())


def test_a_failed_run_ends_with_a_summary_naming_the_error(tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    code = main(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(), *micro_overrides(),
                 f"data.params.train.video_paths=[{broken}]", "data.params.train.strict=true",
                 "lightning.trainer.max_steps=3"])
    captured = capsys.readouterr()
    assert code != 0
    summary = captured.out[captured.out.index("run failed: "):].splitlines()
    assert summary[0].startswith("run failed: VideoReadError: ") and "broken.mp4" in summary[0]
    assert ", 0 updates in " in summary[0]
    assert "  last checkpoint: none written" in summary and "  best metric:     no validation ran" in summary
    assert not any(line.startswith("  reconstruct:") for line in summary)


def _fake_run(train_step, max_updates=10, exception=None, max_epochs=-1, current_epoch=0):
    recorder = RunRecorder()
    recorder.started = 0.0
    recorder.exception = exception
    trainer = SimpleNamespace(max_epochs=max_epochs, current_epoch=current_epoch)
    module = SimpleNamespace(train_step=train_step, total_updates=lambda: max_updates)
    return recorder, recorder.outcome(trainer, module)


def test_stopped_and_failed_runs_say_so(tmp_path):
    _, finished = _fake_run(10)
    assert (finished.status, finished.reason) == ("finished", "all 10 updates done")
    _, stopped = _fake_run(4, exception=KeyboardInterrupt())
    assert (stopped.status, stopped.reason, stopped.updates) == ("stopped", "interrupted (Ctrl+C)", 4)
    _, early = _fake_run(4)
    assert early.status == "stopped"
    recorder, failed = _fake_run(7, exception=RuntimeError("CUDA out of\nmemory"))
    assert (failed.status, failed.reason) == ("failed", "RuntimeError: CUDA out of memory")

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    text = run_summary(failed, run, recorder)
    assert text.splitlines()[0].startswith("run failed: RuntimeError: CUDA out of memory, 7 updates in 0m")
    assert "last checkpoint: none written" in text and "no validation ran" in text
    assert "reconstruct:" not in text  # nothing to reconstruct with
    (run / "checkpoints" / "step_00000005.ckpt").write_bytes(b"")
    from vidtwin.training import VidTwinLightningModule

    autoencoder = SimpleNamespace(summary_commands=lambda *a: VidTwinLightningModule.summary_commands(None, *a))
    text = run_summary(failed, run, recorder, datamodule=None, module=autoencoder)
    command = next(line for line in text.splitlines() if "reconstruct:" in line)
    assert str(Path(run / "checkpoints" / "step_00000005.ckpt")) in command and "--input VIDEO.mp4" in command
