"""train.py end to end: run directory, checkpoints that load_model reads, exact resume, EMA export,
bad configs and bad data reported in one line."""

import shutil

import pytest
import torch

from _training_utils import FSQ_MICRO, carphone_path, micro_overrides, single_thread, tiny_config_files
from vidtwin import load_model
from vidtwin.cli import train_main as main


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _run(tmp_path, name, *extra, resume=None):
    argv = ["--logdir", str(tmp_path), "--seed", "5"]
    if resume:
        argv += ["--resume", str(resume)]
    else:
        argv += ["--name", name, "--base", *tiny_config_files()]
    return main(argv + micro_overrides(*extra))


def _ckpt(path):
    return torch.load(path, weights_only=True)


def test_run_directory_checkpoints_and_samples(tmp_path):
    code = _run(tmp_path, "run", "lightning.trainer.max_steps=3", "lightning.checkpoint.every_n_steps=2",
                "lightning.trainer.log_every_n_steps=1",
                "lightning.trainer.val_check_interval=2", "lightning.trainer.limit_val_batches=1",
                "model.params.ema_decay=0.5",
                "lightning.callbacks.video_logger={target: vidtwin.training.callbacks.VideoGridLogger, "
                "params: {every_n_steps: 2, max_samples: 1}}")
    assert code == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step_00000002.ckpt"]
    assert (run / "samples" / "step_00000002.mp4").stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val/rec_loss", "val/psnr", "val/ssim", "train/rec_loss", "train/step", "train/lr_g"} <= scalars
    psnr = events.Scalars("val/psnr")[0].value
    assert 3 < psnr < 40  # dB of a barely trained model on a real clip
    assert "samples/train" in events.Tags()["images"]

    last = _ckpt(run / "checkpoints" / "last.ckpt")
    # max_steps counts updates: 3 updates = 6 Lightning optimizer steps.
    assert last["vidtwin_training"]["train_step"] == 3 and last["global_step"] == 6
    assert set(last["state_dict"]) == {k for k in last["state_dict"] if k.startswith(("autoencoder.", "loss."))}

    # Every checkpoint loads with load_model(run/config.yaml, ckpt); by default it takes the EMA weights.
    for path in (run / "checkpoints").iterdir():
        saved = _ckpt(path)
        model = load_model(run / "config.yaml", path)
        for name, value in model.state_dict().items():
            assert torch.equal(value, saved["ema_state_dict"][name]), name
        raw = load_model(run / "config.yaml", path, ema=False)
        for name, value in raw.state_dict().items():
            assert torch.equal(value, saved["state_dict"][f"autoencoder.{name}"]), name
    ema, weights = last["ema_state_dict"], last["state_dict"]
    assert not torch.equal(ema["decoder.final_layer.linear.weight"], weights["autoencoder.decoder.final_layer.linear.weight"])

    # Our own checkpoints are also fine-tuning starting points: training weights, discriminator, logvar.
    from omegaconf import OmegaConf

    from vidtwin.config import load_config
    from vidtwin.training import VidTwinLightningModule

    params = OmegaConf.to_container(load_config(run / "config.yaml").model.params, resolve=True)
    params.update(ckpt_path=str(run / "checkpoints" / "last.ckpt"), ema_decay=None)
    module = VidTwinLightningModule(**params)
    for name, value in module.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert module.init_report.loss_groups == ["discriminator", "logvar"]


@pytest.mark.parametrize("regularizer", ["kl", "fsq"])
def test_resume_continues_exactly(tmp_path, regularizer):
    # Deterministic: fixed clip, no posterior sampling, no dropout. EMA and the GAN are on so that
    # their state is part of what must survive the restart. FSQ adds the annealed entropy weight,
    # which follows the restored update counter.
    deterministic = (*(FSQ_MICRO if regularizer == "fsq" else ()),
                     "model.params.sample_posterior=false", "model.params.ema_decay=0.9",
                     "model.params.loss.params.disc_start=2", "lightning.checkpoint.every_n_steps=2",
                     # The cosine length is fixed explicitly: by default it follows max_steps, which differs
                     # between the two halves here.
                     "model.params.lr_scheduler_g={target: warmup_cosine, params: {lr_max: 1e-3, warmup_steps: 2, total_steps: 5}}")
    assert _run(tmp_path, "straight", "lightning.trainer.max_steps=5", *deterministic) == 0
    assert _run(tmp_path, "split", "lightning.trainer.max_steps=3", *deterministic) == 0
    assert _ckpt(tmp_path / "split" / "checkpoints" / "last.ckpt")["vidtwin_training"]["train_step"] == 3
    assert _run(tmp_path, None, "lightning.trainer.max_steps=5", *deterministic, resume=tmp_path / "split") == 0

    straight = _ckpt(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = _ckpt(tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert resumed["vidtwin_training"]["train_step"] == 5 and resumed["global_step"] == straight["global_step"] == 10
    for key in ("state_dict", "ema_state_dict"):
        assert straight[key].keys() == resumed[key].keys()
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), f"{key}: {name}"
    for a, b in zip(straight["optimizer_states"], resumed["optimizer_states"]):
        for index, state in a["state"].items():
            assert all(torch.equal(v, b["state"][index][k]) for k, v in state.items() if torch.is_tensor(v))
    # Without the restore the runs would differ: the checkpoint after 3 updates is not the final state.
    middle = _ckpt(tmp_path / "straight" / "checkpoints" / "step_00000004.ckpt")
    assert not torch.equal(middle["state_dict"]["autoencoder.decoder.final_layer.linear.weight"],
                           straight["state_dict"]["autoencoder.decoder.final_layer.linear.weight"])


def test_corrupt_video_is_skipped_counted_and_strict_names_it(tmp_path, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    shutil.copy(carphone_path(), data / "carphone.mp4")
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    folder = ["data.params.train.video_paths=null", f"data.params.train.data_dir={data}",
              "data.params.train.max_bad_fraction=0.5", "lightning.trainer.max_steps=3"]

    from vidtwin.cli.train import parse_args, prepare

    args = parse_args(["--logdir", str(tmp_path), "--name", "skip", "--base", *tiny_config_files(),
                                      *micro_overrides(*folder)])
    run = prepare(args)
    trainer, module, datamodule = run.trainer, run.module, run.datamodule
    trainer.fit(module, datamodule=datamodule)
    assert module.train_step == 3  # training went on with the readable video
    assert datamodule.train_dataset.bad_files == [str(data / "broken.mp4")]
    assert trainer.callback_metrics["train/bad_videos"] == 1  # counted and logged

    code = _run(tmp_path, "strict", *folder, "data.params.train.strict=true")
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.mp4" in err and "Traceback" not in err


def _last_line(text):
    return [line for line in text.strip().splitlines() if line.strip()][-1]


def test_bad_config_is_one_line_exit_2(tmp_path, capsys):
    # An unknown model parameter. In this process: test_two_separately_started_ranks_both_refuse_an_existing_run
    # sees train.py's exit 2 and one error line as real processes.
    code = main(["--logdir", str(tmp_path), "--base", *tiny_config_files(), "model.params.learning_rat=1e-4"])
    err = capsys.readouterr().err
    assert code == 2
    line = _last_line(err)
    assert line.startswith("vidtwin train: error: model:") and "learning_rat" in line
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written for a run that never started


@pytest.mark.parametrize("override, message", [
    ("data.params.train.data_dir=/no/such/folder", "data_dir /no/such/folder does not exist"),
    ("data.target=vidtwin.data.NoSuchModule", "does not import"),
    ("model.params.autoencoder.hidden_sise=64", "hidden_sise"),
    ("lightning.trainer.accumulate_grad_batches=4", "model.params.grad_accumulation"),
    ("lightning.trainer.max_stepz=4", "max_stepz"),
    ("model.params.loss.params.disc_strat=4", "disc_strat"),
])
def test_bad_configs_name_the_problem(tmp_path, capsys, override, message):
    extra = ["data.params.train.video_paths=null"] if "data_dir" in override else []
    code = main(["--logdir", str(tmp_path), "--base", *tiny_config_files(), *extra, override])
    err = capsys.readouterr().err
    assert code == 2
    assert message in _last_line(err) and "Traceback" not in err


def test_command_line_errors(tmp_path, capsys):
    assert main(["--resume", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["--base", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    if __import__("importlib").util.find_spec("wandb") is None:
        assert main(["--base", *tiny_config_files(), "--wandb"]) == 2
        assert "pip install wandb" in capsys.readouterr().err
