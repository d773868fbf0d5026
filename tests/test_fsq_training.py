"""Training FSQ models: a short run learns and logs codebook use; a KL checkpoint fine-tunes into FSQ.
(Exact resume of FSQ runs is checked in test_train_cli.py next to the KL one.)"""


import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from _training_utils import (
    FSQ_MICRO,
    UpdateRecorder,
    build,
    micro_overrides,
    single_thread,
    tiny_config_files,
    trainer_for,
)
from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG
from vidtwin.checkpoint import CheckpointError
from vidtwin.config import ConfigError, autoencoder_config_from, load_config
from vidtwin.models.config import replace
from vidtwin.training import VidTwinLightningModule

USAGE_KEYS = tuple(f"train/{name}/{stat}" for name in ("structure", "dynamics_x", "dynamics_y")
                   for stat in ("codebook_usage", "perplexity"))


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _eval_l1(module, clip):
    module.autoencoder.eval()
    with torch.no_grad():
        reconstruction, _ = module.autoencoder(clip)
    module.autoencoder.train()
    return (reconstruction.clamp(-1, 1) - clip).abs().mean().item()


def test_short_fsq_run_learns_and_logs_codebook_usage(tmp_path):
    updates = 12
    config = load_config(tiny_config_files(), micro_overrides(*FSQ_MICRO, "model.params.learning_rate=3e-3",
                                                              "lightning.trainer.log_every_n_steps=1"))
    module, data = build(config)
    clip = data.val_dataset[0]["video"][None]  # (1, 3, 4, 32, 32): the carphone clip
    loss_before = _eval_l1(module, clip)
    recorder = UpdateRecorder(keys=("train/rec_loss", "train/aux_loss", "train/entropy_loss",
                                    "train/commitment_loss", *USAGE_KEYS))
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    trainer_for(module, updates, tmp_path, callbacks=[recorder], logger=logger,
                log_every_n_steps=1).fit(module, datamodule=data)
    loss_after = _eval_l1(module, clip)
    print(f"FSQ micro run, {updates} updates: L1 {loss_before:.3f} -> {loss_after:.3f}")
    assert module.train_step == updates
    assert loss_after < 0.8 * loss_before

    last = recorder.rows[-1]
    for key in USAGE_KEYS:
        assert key in last, key
    for name, codes in (("structure", 45), ("dynamics_x", 15), ("dynamics_y", 15)):
        usage, perplexity = last[f"train/{name}/codebook_usage"], last[f"train/{name}/perplexity"]
        assert 1 / codes <= usage <= 1 and 1 <= perplexity <= codes
    assert last["train/commitment_loss"] > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/aux_loss", "train/entropy_loss", "train/commitment_loss", *USAGE_KEYS} <= scalars
    assert "train/kl_loss" not in scalars


def test_fsq_aux_losses_need_an_aux_loss_weight():
    config = load_config(tiny_config_files(), micro_overrides(*FSQ_MICRO))
    config.model.params.loss.params.regularization_weights = {"kl_loss": 0.001}
    with pytest.raises(ConfigError, match="regularization_weights with aux_loss"):
        build(config)


def _fsq_from_official(**kwargs):
    """A VidTwinLightningModule with an FSQ variant of the tiny official config, initialised from the KL checkpoint."""
    official = autoencoder_config_from(OFFICIAL_CONFIG)
    # 3 structure and 3 dynamics channels instead of 4: bottle_up and motion_emb change shape too.
    fsq = replace(official, regularizer="fsq", structure_levels=(8, 5, 5), dynamics_levels=(5, 5, 5))
    loss = {"target": "vidtwin.losses.VidTwinLoss",
            "params": {"disc_start": 0, "perceptual_weight": 0.0, "learn_logvar": True}}
    return VidTwinLightningModule(autoencoder=fsq.to_dict(), loss=loss, ckpt_path=OFFICIAL_CKPT, **kwargs)


BOTTLENECK_KEYS = [r"bottle_down\.", r"bottle_up\.0\.", r"motion_emb\.0\.", r"motion_head\."]


def test_kl_checkpoint_fine_tunes_into_fsq_with_the_bottleneck_reinitialised():
    with pytest.raises(CheckpointError, match=r"6 tensors have other shapes.*ignore_keys: \['bottle_down\\\.', "
                                              r"'bottle_up\\\.0\\\.', 'motion_emb\\\.0\\\.', 'motion_head\\\.'\]"):
        _fsq_from_official()

    torch.manual_seed(0)
    module = _fsq_from_official(ignore_keys=BOTTLENECK_KEYS)
    official = torch.load(OFFICIAL_CKPT, weights_only=True)["state_dict"]
    state = module.autoencoder.state_dict()
    fresh = {k for k in state if k.startswith(("bottle_down.", "bottle_up.0.", "motion_emb.0.", "motion_head."))}
    assert sorted(module.init_report.kept_initialisation) == sorted(fresh) and len(fresh) == 8
    for name, value in state.items():
        if name not in fresh:
            assert torch.equal(value, official[name]), name
    assert module.init_report.loss_groups[:2] == ["discriminator", "logvar"]
    # The shape-compatible half of the re-initialised layers (e.g. motion_emb.0.bias) was not taken from the checkpoint.
    assert not torch.equal(state["motion_emb.0.bias"], official["motion_emb.0.bias"])
    tokens = module.autoencoder.eval().tokenize(torch.rand(1, 3, 8, 64, 64) * 2 - 1)
    assert tokens.structure.shape == (1, 4, 2, 2) and int(tokens.structure.max()) < 200
