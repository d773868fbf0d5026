"""Unit tests of the training pieces that need no Trainer: schedules, EMA, freezing, grids, safety checks."""

import math

import pytest
import torch
from torch import nn

from vidtwin.training.callbacks import NonFiniteStateError, _frames_grid, _side_by_side_video, assert_finite_state
from vidtwin.training.ema import EMA
from vidtwin.training.finetune import drop_ignored, freeze_parameters
from vidtwin.training.schedulers import InverseSqrt, WarmupCosine, build_lr_schedule


# ---------------------------------------------------------------- schedules
def test_warmup_cosine_follows_the_official_shape():
    schedule = build_lr_schedule(
        {"target": "vidtok.models.vidtwin_ae.LambdaWarmUpCosineScheduler",
         "params": {"lr_start": 1e-5, "lr_max": 3e-5, "lr_min": 1e-6, "warmup_steps": 100, "frequency": 1}},
        base_lr=123.0,  # ignored: the official schedule returns absolute rates
        total_steps=lambda: 1100,
    )
    assert isinstance(schedule, WarmupCosine)
    assert schedule(0) == pytest.approx(1e-5)
    assert schedule(50) == pytest.approx(2e-5)  # halfway up the linear ramp
    assert schedule(100) == pytest.approx(3e-5)  # peak at the end of warm-up
    assert schedule(600) == pytest.approx((3e-5 + 1e-6) / 2)  # cosine midpoint
    assert schedule(1100) == pytest.approx(1e-6)
    assert schedule(5000) == pytest.approx(1e-6)  # stays at lr_min past the end
    values = [schedule(s) for s in range(100, 1101, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_rate_and_explicit_total_steps():
    schedule = build_lr_schedule({"target": "warmup_cosine",
                                  "params": {"lr_max": 1.0, "total_steps": 200, "warmup_rate": 0.25}}, 0.5)
    assert schedule.warmup_steps == 50 and schedule(50) == pytest.approx(1.0)


def test_cosine_length_run_or_official():
    params = {"lr_start": 0.0, "lr_max": 1.0, "lr_min": 0.0, "warmup_steps": 0}
    run, official = (lambda: 1000), (lambda: 4000)  # the official length of a 4-process run
    ours = build_lr_schedule({"target": "warmup_cosine", "params": params}, 0.1, run, official)
    same = build_lr_schedule({"target": "warmup_cosine", "params": {**params, "total_steps": "run"}}, 0.1, run, official)
    theirs = build_lr_schedule({"target": "warmup_cosine", "params": {**params, "total_steps": "official"}},
                               0.1, run, official)
    assert ours.total_steps == same.total_steps == 1000 and theirs.total_steps == 4000
    assert ours(1000) == pytest.approx(0.0)
    assert theirs(1000) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)  # about 0.85 at the end of the run
    with pytest.raises(ValueError, match="run or official"):
        build_lr_schedule({"target": "warmup_cosine", "params": {**params, "total_steps": "epochs"}}, 0.1, run, official)
    with pytest.raises(ValueError, match="total_steps"):
        build_lr_schedule({"target": "warmup_cosine", "params": {**params, "total_steps": "official"}}, 0.1, run)


def test_official_cosine_length_counts_a_single_process_loader_times_max_epochs():
    from types import SimpleNamespace

    from vidtwin.config import instantiate_from_config, load_config
    from vidtwin.training import VidTwinLightningModule

    from conftest import TINY_CONFIG

    module = instantiate_from_config(load_config(TINY_CONFIG).model)
    assert isinstance(module, VidTwinLightningModule)
    loader = list(range(7))  # 7 batches in one process; DDP would give each rank fewer
    module._trainer = SimpleNamespace(max_epochs=3, datamodule=SimpleNamespace(train_dataloader=lambda: loader))
    assert module.official_total_updates() == 21
    module.grad_accumulation = 2
    assert module.official_total_updates() == 10


def test_inverse_sqrt_matches_transformers():
    transformers = pytest.importorskip("transformers")
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2e-4)
    reference = transformers.get_inverse_sqrt_schedule(optimizer, num_warmup_steps=20)
    ours = build_lr_schedule({"target": "inverse_sqrt", "params": {"num_warmup_steps": 20, "frequency": 1}}, 2e-4)
    assert isinstance(ours, InverseSqrt)
    for step in range(0, 200):
        assert ours(step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15), step
        optimizer.step()
        reference.step()


def test_constant_schedule_and_bad_configs():
    assert build_lr_schedule(None, 3e-4)(10_000) == 3e-4
    warm = build_lr_schedule({"target": "constant", "params": {"warmup_steps": 10}}, 1.0)
    assert warm(5) == pytest.approx(0.5) and warm(10) == 1.0
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        build_lr_schedule({"target": "cosine_annealing"}, 1.0)
    with pytest.raises(ValueError, match="lr_peak"):
        build_lr_schedule({"target": "warmup_cosine", "params": {"lr_peak": 1.0, "total_steps": 5}}, 1.0)
    with pytest.raises(ValueError, match="total_steps"):
        build_lr_schedule({"target": "warmup_cosine", "params": {"lr_max": 1.0}}, 1.0)


# ---------------------------------------------------------------- EMA
def test_ema_tracks_the_exponential_average_and_swaps_weights_back():
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    expected = {k: v.detach().clone() for k, v in model.named_parameters()}
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step + 1))
        ema.update(model)
        for name, p in model.named_parameters():
            expected[name] = 0.9 * expected[name] + 0.1 * p.detach()
    for name in expected:
        assert torch.allclose(ema.shadow[name], expected[name], atol=1e-6)

    live = {k: v.detach().clone() for k, v in model.named_parameters()}
    with ema.swapped_in(model):
        assert torch.allclose(model.weight, expected["weight"], atol=1e-6)
    assert all(torch.equal(p, live[n]) for n, p in model.named_parameters())

    exported = ema.export_state_dict(model)
    assert set(exported) == set(model.state_dict())
    fresh = EMA(nn.Linear(3, 2), decay=0.9)
    fresh.load_shadow(exported, ema.num_updates)
    assert fresh.num_updates == 5 and torch.allclose(fresh.shadow["bias"], expected["bias"], atol=1e-6)


def test_ema_warmup_uses_a_smaller_decay_at_first():
    ema = EMA(nn.Linear(2, 2), decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    ema.num_updates = 10_000
    assert ema.current_decay() == pytest.approx(0.999)
    with pytest.raises(ValueError):
        EMA(nn.Linear(2, 2), decay=1.0)


# ---------------------------------------------------------------- fine-tuning helpers
def test_freeze_patterns_train_only_the_decoder():
    model = nn.ModuleDict({"encoder": nn.Linear(2, 2), "decoder": nn.Linear(2, 2), "cont_emb": nn.Linear(2, 2)})
    frozen = freeze_parameters(model, [r"^(?!decoder\.)"])
    assert sorted(frozen) == ["cont_emb.bias", "cont_emb.weight", "encoder.bias", "encoder.weight"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["decoder.weight", "decoder.bias"]
    with pytest.raises(ValueError, match="matches no autoencoder parameter"):
        freeze_parameters(model, [r"^decodr\."])
    with pytest.raises(ValueError, match="every autoencoder parameter"):
        freeze_parameters(nn.Linear(2, 2), [".*"])


def test_ignore_keys_match_from_the_start_of_official_names():
    state = {"decoder.final_layer.linear.weight": torch.zeros(1), "encoder.x": torch.zeros(1),
             "loss.discriminator.main.0.weight": torch.zeros(1)}
    kept, dropped = drop_ignored(state, [r"decoder\.final_layer\.", r"loss\.discriminator\."])
    assert list(kept) == ["encoder.x"]
    assert dropped == ["decoder.final_layer.linear.weight", "loss.discriminator.main.0.weight"]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        drop_ignored(state, ["("])


# ---------------------------------------------------------------- callbacks helpers
def test_sample_grids_put_inputs_above_reconstructions():
    video = torch.full((2, 3, 4, 8, 6), -1.0)  # black inputs
    reconstruction = torch.ones(2, 3, 4, 8, 6)  # white reconstructions
    reconstruction[1, :, 3] = 0.0  # clip 1, frame 3 is grey
    grid = _frames_grid([video, reconstruction])
    assert grid.shape == (3, 2 * 2 * 8, 4 * 6)
    assert grid[:, 0:8].max() == 0 and grid[:, 8:16].min() == 1  # clip 0: input row, then reconstruction row
    assert torch.allclose(grid[:, 24:32, 18:24], torch.tensor(0.5))  # clip 1 reconstruction, frame 3
    frames = _side_by_side_video([video, reconstruction])
    assert frames.shape == (4, 2 * 8, 2 * 6, 3) and frames.dtype == torch.uint8
    assert frames[0, :, :6].max() == 0 and frames[0, :, 6:].min() == 255
    assert frames[3, 8:, 6:].unique().tolist() == [128]


def test_finite_state_check_names_the_tensor():
    state = {"a": torch.ones(2), "steps": torch.tensor(3), "b": torch.tensor([1.0, math.nan])}
    with pytest.raises(NonFiniteStateError, match="refusing to save.*update 7: b holds NaN"):
        assert_finite_state(state, 7)
    assert_finite_state({"a": torch.ones(2)}, 7)


# ---------------------------------------------------------------- checkpoint policy
def test_official_checkpoint_policy_keeps_the_best_three_by_val_rec_loss_and_last(tmp_path):
    from omegaconf import OmegaConf
    from pytorch_lightning.callbacks import ModelCheckpoint

    from vidtwin.cli.train import UsageError, build_callbacks

    def checkpoints(section):
        config = OmegaConf.create({"lightning": {"checkpoint": section}})
        return [c for c in build_callbacks(config, tmp_path, 2) if isinstance(c, ModelCheckpoint)]

    periodic, best = checkpoints({"every_n_steps": 10, "keep": "official"})
    assert periodic.save_last and periodic.save_top_k == 0 and periodic._every_n_train_steps == 20
    assert (best.monitor, best.mode, best.save_top_k, best.save_last) == ("val/rec_loss", "min", 3, False)
    assert best._every_n_train_steps == 0 and best._every_n_epochs == 1  # after each validation
    (every,) = checkpoints({"every_n_steps": 10})
    assert every.save_top_k == -1 and every.monitor is None
    with pytest.raises(UsageError, match="keep must be one of all, official"):
        checkpoints({"keep": "best"})

