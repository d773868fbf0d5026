"""Training FSQ models: a short run learns and logs codebook use, the entropy and commitment losses
each move the codes as they target, and a KL checkpoint fine-tunes into FSQ.
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
from vidtwin.models.config import LATENT_NAMES, replace
from vidtwin.models.regularizers import ENTROPY_INV_TEMPERATURE
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
    for key in ("train/aux_loss", "train/entropy_loss", "train/commitment_loss", *USAGE_KEYS):
        assert key in last, key

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/aux_loss", "train/entropy_loss", "train/commitment_loss", *USAGE_KEYS} <= scalars
    assert "train/kl_loss" not in scalars


# The FSQ losses as the autoencoder's whole objective: the pixel loss, summed over every pixel of
# every frame, outweighs them by orders of magnitude, and over a few updates its pull on the codes
# would decide where they go. A small learning rate, because the entropy loss's softmax over the
# codes is sharp (inverse temperature 100): larger steps overshoot and it rises as often as it falls.
FSQ_LOSSES_ONLY = ["model.params.loss.params.pixelloss_weight=0.0", "model.params.learning_rate=3e-4"]
AUX_OFF = "model.params.loss.params.regularization_weights={aux_loss: 0.0}"


def _fsq_terms_after_training(tmp_path, updates: int, *overrides: str) -> dict:
    """What the entropy and commitment losses target, measured here from the regularizers' inputs
    and codes (not by the losses' own code, whose sign error would hide), on the training clip
    after ``updates`` updates of the micro FSQ model from the same initialisation. Each is summed
    over the three latents."""
    config = load_config(tiny_config_files(), micro_overrides(*FSQ_MICRO, *FSQ_LOSSES_ONLY, *overrides))
    torch.manual_seed(0)
    module, data = build(config)
    trainer_for(module, updates, tmp_path).fit(module, datamodule=data)
    autoencoder = module.autoencoder.eval()
    seen = []  # (inputs (N, C), codes (N, C), codebook (K, C)) per latent: structure, dynamics_x, dynamics_y

    def rows(x):
        return x.detach().float().movedim(1, -1).reshape(-1, x.shape[1])  # (B, C, ...) -> (N, C): one token per row

    def record(regularizer, args, output):
        every_code = torch.arange(regularizer.codebook_size)[None]  # (1, K) -> codes (1, C, K)
        seen.append((rows(args[0]), rows(output[0]), rows(regularizer.indices_to_codes(every_code))))

    hooks = [regularizer.register_forward_hook(record)
             for regularizer in (autoencoder.structure_regularizer, autoencoder.dynamics_regularizer)]
    with torch.no_grad():
        autoencoder.encode(data.train_dataset[0]["video"][None])
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(LATENT_NAMES)
    commitment = sum((inputs - codes).square().mean() for inputs, codes, _ in seen)
    entropy = 0.0
    for inputs, _, codebook in seen:  # VidTok's entropy loss, written out: confident per token, spread over the batch
        probabilities = (2.0 * ENTROPY_INV_TEMPERATURE * inputs @ codebook.t()).softmax(dim=-1)  # (N, K)
        per_token = -(probabilities * probabilities.clamp_min(1e-5).log()).sum(-1).mean()
        mean = probabilities.mean(dim=0)  # (K,)
        entropy = entropy + per_token + (mean * mean.clamp_min(1e-5).log()).sum()
    return {"entropy_loss": float(entropy), "commitment_loss": float(commitment)}


def test_the_fsq_losses_move_the_codes_the_way_they_target(tmp_path):
    """Each FSQ loss, trained alone, lowers the quantity it targets against the same updates with
    the aux weight at 0; a loss that never reaches the gradient (dropped, detached, unweighted)
    leaves the two runs equal, and one of the wrong sign raises its quantity: both fail this."""
    updates = 10
    untrained = _fsq_terms_after_training(tmp_path / "off", updates, AUX_OFF)
    commitment = _fsq_terms_after_training(tmp_path / "commitment", updates,
                                           "model.params.autoencoder.entropy_loss_weight=0.0")
    entropy = _fsq_terms_after_training(tmp_path / "entropy", updates,
                                        "model.params.autoencoder.commitment_loss_weight=0.0")
    print(f"after {updates} updates: aux weight 0 {untrained}, commitment loss {commitment}, entropy loss {entropy}")
    # Over seeds 0-7 the commitment loss ends at 20-44% of the untrained distance, and the entropy
    # loss 0.7-1.4 below the untrained value (its range is about -9.2 to 0 over the three latents).
    assert commitment["commitment_loss"] < 0.7 * untrained["commitment_loss"]
    assert entropy["entropy_loss"] < untrained["entropy_loss"] - 0.25


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
