"""Checkpoint formats, key compatibility with the official layout, and strict loading."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from vidtwin import CheckpointError, ConfigError, VidTwin, load_model
from vidtwin.checkpoint import IGNORED_OFFICIAL_KEYS, read_checkpoint_state_dict, split_state_dict
from vidtwin.config import autoencoder_config_from, load_config

from conftest import DATA, OFFICIAL_CKPT, OFFICIAL_CONFIG, PUBLISHED_CONFIG, REPO


def official_manifest():
    shapes = json.loads((DATA / "official_state_dict_shapes.json").read_text())["state_dict_shapes"]
    return {k: tuple(v) for k, v in shapes.items() if not k.startswith("loss.")}


def test_published_config_matches_the_official_key_manifest():
    with torch.device("meta"):  # the published model has 313M parameters: shapes are enough
        model = VidTwin(autoencoder_config_from(load_config(PUBLISHED_CONFIG)))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ignored = re.compile("|".join(f"(?:{p})" for p in IGNORED_OFFICIAL_KEYS))
    official = {k: v for k, v in official_manifest().items() if not ignored.fullmatch(k)}
    assert set(ours) - set(official) == set(), "parameters the official checkpoint cannot fill"
    assert set(official) - set(ours) == set(), "official tensors we do not load"
    assert {k for k in ours if ours[k] != official[k]} == set()
    # The exception list covers exactly the unused official modules and the sin-cos buffers.
    skipped = sorted(k for k in official_manifest() if ignored.fullmatch(k))
    assert skipped == sorted(
        ["encoder.pos_embed", "encoder.pos_embed_temporal", "decoder.pos_embed", "decoder.pos_embed_temporal",
         "encoder.final_layer.scale_shift_table", "encoder.final_layer.linear.weight", "encoder.final_layer.linear.bias",
         "decoder.x_embedder.proj.weight", "decoder.x_embedder.proj.bias"]
    )
    parameters = sum(v.numel() for v in model.state_dict().values())
    assert parameters == 311_518_770


def test_official_lightning_checkpoint_loads_and_ignores_the_loss(official_model):
    state = read_checkpoint_state_dict(OFFICIAL_CKPT)
    autoencoder, loss, rest = split_state_dict(state)
    assert any(k.startswith("discriminator.") for k in loss) and "logvar" in loss
    assert rest == {}
    assert official_model.training is False


def test_save_pretrained_round_trips_bit_exactly(official_model, tmp_path):
    official_model.save_pretrained(tmp_path / "exported")
    # README.md is the model card that push_to_hub uploads with the weights.
    assert sorted(os.listdir(tmp_path / "exported")) == ["README.md", "config.json", "model.safetensors"]
    reloaded = VidTwin.from_pretrained(tmp_path / "exported")
    assert reloaded.config == official_model.config
    for (name, a), (_, b) in zip(official_model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    video = torch.rand(1, 3, 8, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(official_model(video)[0], reloaded(video)[0])


def test_bare_state_dict_and_safetensors_load(official_model, tmp_path):
    state = {k: v.clone() for k, v in official_model.state_dict().items()}
    torch.save(state, tmp_path / "bare.pt")
    save_file(state, str(tmp_path / "weights.safetensors"))
    for path in (tmp_path / "bare.pt", tmp_path / "weights.safetensors"):
        model = load_model(OFFICIAL_CONFIG, path)
        assert torch.equal(model.conv_in.weight, official_model.conv_in.weight)


def test_training_checkpoint_layout_loads_with_ema_preferred(official_model, tmp_path):
    state = {f"autoencoder.{k}": v for k, v in official_model.state_dict().items()}
    ema = {k: v + 1 for k, v in official_model.state_dict().items()}
    torch.save({"state_dict": state, "ema_state_dict": ema}, tmp_path / "run.ckpt")
    with_ema = load_model(OFFICIAL_CONFIG, tmp_path / "run.ckpt")
    raw = load_model(OFFICIAL_CONFIG, tmp_path / "run.ckpt", ema=False)
    assert torch.equal(with_ema.conv_in.weight, official_model.conv_in.weight + 1)
    assert torch.equal(raw.conv_in.weight, official_model.conv_in.weight)


def corrupted(official_model, tmp_path, change):
    state = {k: v.clone() for k, v in official_model.state_dict().items()}
    change(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    return path


def test_wrong_shape_is_an_error_naming_the_key(official_model, tmp_path):
    path = corrupted(official_model, tmp_path, lambda s: s.__setitem__("conv_in.weight", torch.zeros(1, 2, 3, 3)))
    with pytest.raises(CheckpointError, match=r"shape mismatches: conv_in\.weight"):
        load_model(OFFICIAL_CONFIG, path)


def test_missing_and_unexpected_keys_are_errors_naming_them(official_model, tmp_path):
    path = corrupted(official_model, tmp_path, lambda s: s.pop("bottle_down.bias"))
    with pytest.raises(CheckpointError, match=r"missing keys: bottle_down\.bias"):
        load_model(OFFICIAL_CONFIG, path)
    path = corrupted(official_model, tmp_path, lambda s: s.__setitem__("extra.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        load_model(OFFICIAL_CONFIG, path)


def test_config_that_does_not_match_the_checkpoint_is_an_error():
    with pytest.raises(CheckpointError, match="does not match the model config"):
        load_model(REPO / "configs" / "tiny.yaml", OFFICIAL_CKPT)


def test_checkpoint_needing_full_unpickling_is_refused_with_the_opt_in_named(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": ConfigError("a python object")}}, path)
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle=True"):
        load_model(OFFICIAL_CONFIG, path)


def test_missing_and_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(OFFICIAL_CONFIG, tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(OFFICIAL_CONFIG, tmp_path / "junk.ckpt")


def test_official_config_flags_that_are_not_part_of_the_model_are_dropped():
    config = load_config(OFFICIAL_CONFIG, ["model.params.encoder_config.params.enable_flashattn=true"])
    assert autoencoder_config_from(config) == autoencoder_config_from(load_config(OFFICIAL_CONFIG))
    with pytest.raises(ConfigError, match="temporal_group"):
        autoencoder_config_from(load_config(OFFICIAL_CONFIG, ["model.params.encoder_config.params.temporal_group=true"]))


def test_hub_failure_is_a_clear_error(tmp_path):
    # A real process (huggingface_hub reads HF_HUB_* when imported): load_model's error, reported by a
    # command as a user error, one line and exit 2.
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "vidtwin", "convert", "--config", str(OFFICIAL_CONFIG),
                             "--ckpt", "hf://microsoft/vidtwin", "--output", str(tmp_path / "out")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("vidtwin convert: error:")]
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in line and str(tmp_path / "empty") in line
    assert "checkpoints/vidtwin_structure_7_7_8_dynamics_7_8.ckpt of the Hugging Face repo microsoft/vidtwin" in line
    assert not (tmp_path / "out").exists()


def test_convert_writes_a_loadable_directory(official_model, tmp_path, capsys):
    """In this process (a fresh interpreter costs seconds; test_hub_failure_is_a_clear_error runs convert as a real one)."""
    from vidtwin.cli import main

    assert main(["convert", "--config", str(OFFICIAL_CONFIG), "--ckpt", str(OFFICIAL_CKPT),
                 "--output", str(tmp_path / "out")]) == 0
    converted = load_model(None, tmp_path / "out")
    assert torch.equal(converted.bottle_up[0].weight, official_model.bottle_up[0].weight)
    capsys.readouterr()
    assert main(["convert", "--config", str(REPO / "configs" / "tiny.yaml"), "--ckpt", str(OFFICIAL_CKPT),
                 "--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidtwin convert: error: ") and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_compression_report_of_the_published_config(capsys):
    from vidtwin.cli import main

    main(["compression-report", str(PUBLISHED_CONFIG)])
    out = capsys.readouterr().out
    assert "structure    8 x 16 x 7 x 7" in out and "8,064" in out and "0.335%" in out
    main(["compression-report", "vidtwin", "vidtwin_paper"])  # the shipped presets, by name
    paper = capsys.readouterr().out
    assert "4,928" in paper and "0.205%" in paper
