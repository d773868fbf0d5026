"""The training contract is all a new model needs: vidtwin train trains a stub TrainingModule of a
few lines (tests/_training_utils.py) with its run directory, progress bar, sample videos, summary
and an exact resume, and refuses a model that does not follow the contract. The contract's shared
pieces work for any module: update counting under Lightning's gradient accumulation, the trainer
settings each kind of module refuses, the EMA in checkpoints, and the stop on a non-finite loss."""

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from _training_utils import clip_overrides, single_thread, tiny_config_files
from vidtwin.config import ConfigError, load_config
from vidtwin.training.contract import EMA_STATE_KEY, TRAINING_STATE_KEY, NonFiniteLossError, TrainingModule
from vidtwin.training.latent_module import LatentModelModule
from vidtwin.cli import train_main as main


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
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidtwin train: error:")]
    assert "model.target: '_training_utils.StubModule' is outside the packages" in line and "--allow-any-target" in line
    assert not (tmp_path / "logs").exists()


# ---------------------------------------------------------------- the contract's members, without train.py
class _Averaged(TrainingModule):
    """A linear map trained towards 2x, with the contract's EMA and non-finite-loss stop."""

    def __init__(self, ema_decay=0.5, poison_at=None):
        super().__init__()
        self.net = torch.nn.Linear(1, 1)
        self.use_ema("net", ema_decay)
        self.poison_at = poison_at  # the update whose loss is NaN

    def training_step(self, batch, batch_idx):
        x = batch[0]  # (B, 1)
        loss = ((self.net(x) - 2 * x) ** 2).mean()
        if self.train_step == self.poison_at:
            loss = loss * float("nan")
        self.stop_on_nonfinite_loss(loss, "the test loss")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _UpdateLog(pl.Callback):
    def __init__(self):
        self.rows, self.total = [], None

    def on_train_start(self, trainer, pl_module):
        self.total = pl_module.total_updates()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((pl_module.train_step, pl_module.update_in_progress, pl_module.batches_per_update))


def _loader(batches=4):
    x = torch.linspace(-1, 1, batches * 2).reshape(batches * 2, 1)
    return DataLoader(TensorDataset(x), batch_size=2)


def _fit(module, tmp_path, callbacks=(), ckpt_path=None, **options):
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    trainer = pl.Trainer(callbacks=list(callbacks), **{**settings, **options})
    trainer.fit(module, train_dataloaders=_loader(), ckpt_path=ckpt_path, weights_only=False)
    return trainer


def test_lightning_accumulates_for_an_automatic_module_and_the_contract_counts_its_updates(tmp_path):
    log = _UpdateLog()
    module = _Averaged(ema_decay=None)
    _fit(module, tmp_path, [log], max_epochs=1, accumulate_grad_batches=2)
    # 4 batches, 2 per update: the first batch of each update leaves it in progress (no checkpoint then).
    assert log.rows == [(0, True, 2), (1, False, 2), (1, True, 2), (2, False, 2)]
    assert log.total == 2 and module.train_step == 2


def test_the_trainer_settings_each_kind_of_module_refuses(tmp_path):
    from vidtwin.cli.train import UsageError, build_trainer_kwargs
    from vidtwin.training import VidTwinLightningModule

    accumulate = OmegaConf.create({"lightning": {"trainer": {"accumulate_grad_batches": 4, "max_steps": 3}}})
    clip = OmegaConf.create({"lightning": {"trainer": {"gradient_clip_val": 1.0}}})
    # Automatic optimization: Lightning accumulates and clips.
    assert build_trainer_kwargs(accumulate, _Averaged()) == {"accumulate_grad_batches": 4, "max_steps": 3}
    assert build_trainer_kwargs(clip, _Averaged()) == {"gradient_clip_val": 1.0}
    # The generator and the world model accumulate through Lightning but clip themselves.
    latent = LatentModelModule()
    assert build_trainer_kwargs(accumulate, latent)["accumulate_grad_batches"] == 4
    with pytest.raises(UsageError,
                       match="gradient_clip_val does not apply to LatentModelModule: set model.params.grad_clip"):
        build_trainer_kwargs(clip, latent)
    # The autoencoder optimizes manually: both are its own settings.
    autoencoder = VidTwinLightningModule.__new__(VidTwinLightningModule)
    torch.nn.Module.__init__(autoencoder)
    autoencoder.automatic_optimization = False
    autoencoder.loss = SimpleNamespace(get_trainable_parameters=lambda: [])  # no discriminator
    with pytest.raises(UsageError, match="accumulate_grad_batches does not apply to VidTwinLightningModule: "
                                         "set model.params.grad_accumulation"):
        build_trainer_kwargs(accumulate, autoencoder)
    with pytest.raises(UsageError, match="set model.params.grad_clip"):
        build_trainer_kwargs(clip, autoencoder)
    # Lightning's defaults are no request at all.
    assert build_trainer_kwargs(OmegaConf.create({"lightning": {"trainer": {"accumulate_grad_batches": 1}}}),
                                autoencoder) == {}


def test_the_ema_lives_in_the_checkpoint_and_restarts_from_weights_saved_without_it(tmp_path):
    module = _Averaged(ema_decay=0.5)
    start = {name: value.clone() for name, value in module.net.state_dict().items()}
    trainer = _fit(module, tmp_path, max_steps=3)
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    ema = checkpoint[EMA_STATE_KEY]
    assert set(ema) == set(module.net.state_dict())  # the averaged module's own names, no prefix
    assert checkpoint[TRAINING_STATE_KEY]["ema_num_updates"] == 3 and checkpoint[TRAINING_STATE_KEY]["ema_decay"] == 0.5
    trained = module.net.weight.detach().clone()
    assert not torch.equal(ema["weight"], trained) and not torch.equal(ema["weight"], start["weight"])
    with module.ema_weights():
        assert torch.equal(module.net.weight, ema["weight"])
        with pytest.raises(RuntimeError, match="swapped in"):
            trainer.save_checkpoint(tmp_path / "swapped.ckpt")
    assert torch.equal(module.net.weight, trained)

    # A checkpoint without the average: the resumed average starts from the loaded weights.
    del checkpoint[EMA_STATE_KEY]
    torch.save(checkpoint, tmp_path / "no_ema.ckpt")
    resumed = _Averaged(ema_decay=0.5)
    log = _UpdateLog()
    _fit(resumed, tmp_path, [log], max_steps=3, ckpt_path=str(tmp_path / "no_ema.ckpt"))
    assert log.rows == []  # nothing left to train: fit stops at once, after on_fit_start
    assert torch.equal(resumed.ema.shadow["weight"], trained) and resumed.train_step == 3


def test_a_non_finite_loss_stops_the_run_before_its_update(tmp_path):
    module = _Averaged(poison_at=1)
    with pytest.raises(NonFiniteLossError, match="the test loss is not finite at update 1"):
        _fit(module, tmp_path, max_steps=3)
    assert module.train_step == 1


class _Clipped(LatentModelModule):
    """One linear layer under the latent models' optimizer and clipping; it records the gradient
    norm each update steps with."""

    def __init__(self, grad_clip=0.5):
        super().__init__()
        self.model = torch.nn.Linear(1, 1)
        self.setup_training(learning_rate=0.1, weight_decay=0.0, betas=(0.9, 0.95), warmup_steps=0,
                            grad_clip=grad_clip, ema_decay=None, seed=0, autoencoder={})
        self.stepped_norms = []

    def training_step(self, batch, batch_idx):
        x = batch[0]  # (B, 1)
        return ((self.model(x) - 100 * x) ** 2).mean()  # gradients far above the clip

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        gradients = [parameter.grad for parameter in self.model.parameters()]
        self.stepped_norms.append(float(torch.nn.utils.get_total_norm(gradients)))


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_the_latent_models_step_with_fused_adamw_and_still_clip(tmp_path, precision):
    module = _Clipped(grad_clip=0.5)
    trainer = _fit(module, tmp_path, max_steps=3, precision=precision)
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(module.stepped_norms) == 3
    assert max(module.stepped_norms) <= 0.5 * (1 + 1e-5)  # clipped, from norms in the hundreds
    unclipped = _Clipped(grad_clip=None)
    _fit(unclipped, tmp_path, max_steps=1, precision=precision)
    assert unclipped.stepped_norms[0] > 10


def test_a_gradient_scaler_keeps_the_unfused_adamw_so_lightning_unscales_before_clipping():
    module = _Clipped()
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object()))  # 16-mixed's
    assert module.configure_optimizers()["optimizer"].defaults["fused"] is None
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=None))
    assert module.configure_optimizers()["optimizer"].defaults["fused"] is True
    # A fused optimizer the config asked for is refused under a scaler, in words, not clipped wrong.
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object()))
    fused = torch.optim.AdamW(module.model.parameters(), fused=True)
    with pytest.raises(ConfigError, match="fused optimizer cannot be clipped under precision 16-mixed"):
        module.clip_gradient_norm(fused, 1.0)
