"""Files written by main 640498a (tests/data/legacy/640498a, see tests/data/README.md) load with
today's code, from every kind of reference, and give the outputs 640498a recorded.

Tolerance: float outputs within 1e-5 (absolute and relative): both codes run the same float32
operations on a CPU, and only the summation order of a different thread count may move the last
bits. Integer outputs (FSQ tokens, world-model rollouts drawn with a fixed seed) must be equal.
"""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from vidtwin import VidTwin, load_model
from vidtwin.generation import LatentGenerator, WorldModel, load_generator, load_world_model
from vidtwin.latents.dataset import LatentDataset

from conftest import DATA

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

FILES = DATA / "legacy" / "640498a"
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def reference():
    return load_file(str(FILES / "reference_outputs.safetensors"))


def _close(actual, expected, name):
    if expected.dtype.is_floating_point:
        torch.testing.assert_close(actual, expected, **TOLERANCE, msg=lambda m: f"{name}: {m}")
    else:
        assert torch.equal(actual, expected), name


def _check_autoencoder(model, reference, tag):
    assert isinstance(model, VidTwin) and not model.training
    video = reference["autoencoder/input"]
    with torch.no_grad():
        latents = model.encode(video)
        for name in ("structure", "dynamics_x", "dynamics_y"):
            _close(getattr(latents, name), reference[f"autoencoder/{tag}/{name}"], name)
        _close(model.decode(latents), reference[f"autoencoder/{tag}/reconstruction"], "reconstruction")
        _close(model.tokenize(video).structure, reference[f"autoencoder/{tag}/structure_tokens"], "tokens")


def test_the_autoencoder_of_640498a_loads_from_its_run_checkpoint_and_saved_folder(reference):
    run = FILES / "autoencoder_run"
    checkpoint = run / "checkpoints" / "last.ckpt"
    for model in (VidTwin.from_pretrained(run), load_model(None, run), load_model(None, checkpoint),
                  load_model(run / "config.yaml", checkpoint)):
        _check_autoencoder(model, reference, "ema")  # the EMA weights that the checkpoint stores
    _check_autoencoder(VidTwin.from_pretrained(checkpoint, ema=False), reference, "raw")
    for model in (VidTwin.from_pretrained(FILES / "autoencoder_pretrained"),
                  load_model(None, FILES / "autoencoder_pretrained")):
        _check_autoencoder(model, reference, "raw")
    # the references tell the two sets of weights apart: the comparison can fail
    assert not torch.allclose(reference["autoencoder/ema/reconstruction"], reference["autoencoder/raw/reconstruction"],
                              **TOLERANCE)


def _check_generator(model, reference, tag):
    assert isinstance(model, LatentGenerator) and not model.training
    sample = model.sample([0, 1], steps=3, guidance=2.0, seed=7, progress=False)
    for name, value in sample.items():
        _close(value, reference[f"generator/{tag}/{name}"], name)


def test_the_generator_of_640498a_loads_from_its_run_checkpoint_and_saved_folder(reference):
    run = FILES / "generator_run"
    for model in (LatentGenerator.from_pretrained(run), load_generator(run), load_generator(run / "checkpoints" / "last.ckpt"),
                  LatentGenerator.from_pretrained(FILES / "generator_pretrained")):
        _check_generator(model, reference, "ema")
    _check_generator(LatentGenerator.from_pretrained(run / "checkpoints" / "last.ckpt", ema=False), reference, "raw")
    assert LatentGenerator.from_pretrained(FILES / "generator_pretrained").config.class_names == ["left", "right"]


def _check_world(model, reference, tag):
    assert isinstance(model, WorldModel) and not model.training
    start = {name: reference[f"world/start/{name}"] for name in ("structure", "dynamics_x", "dynamics_y")}
    clips = model.rollout(start, actions=[[0, 1, 1]], seed=11)
    for name, value in clips.items():
        _close(value, reference[f"world/{tag}/{name}"], name)


def test_the_world_model_of_640498a_loads_from_its_run_checkpoint_and_saved_folder(reference):
    run = FILES / "world_run"
    for model in (WorldModel.from_pretrained(run), load_world_model(run)):
        _check_world(model, reference, "ema")
    for model in (WorldModel.from_pretrained(FILES / "world_pretrained"), load_world_model(FILES / "world_pretrained"),
                  WorldModel.from_pretrained(run / "checkpoints" / "last.ckpt", ema=False)):
        _check_world(model, reference, "pretrained")
    assert WorldModel.from_pretrained(run).autoencoder_files["ckpt"].endswith("autoencoder_run/checkpoints/last.ckpt")


def test_the_latent_dataset_of_640498a_reads_the_same_values(reference):
    dataset = LatentDataset(FILES / "latent_dataset")
    assert len(dataset) == 4 and dataset.classes == ["left", "right"]
    for index in range(len(dataset)):
        item = dataset[index]
        for name in ("structure", "dynamics_x", "dynamics_y"):
            _close(item[name], reference[f"latent_dataset/{index}/{name}"], name)
        assert item["label"] == int(reference[f"latent_dataset/{index}/label"])
    assert len(LatentDataset(FILES / "latent_dataset", sequence_length=2)) == int(reference["latent_dataset/windows"])
    # its clips are the FSQ tokens of the run's autoencoder
    token_shapes = VidTwin.from_pretrained(FILES / "autoencoder_pretrained").config.token_shapes()
    assert {name: list(dataset[0][name].shape) for name in token_shapes} == {k: list(v) for k, v in token_shapes.items()}


def test_a_run_of_640498a_with_a_truncated_newest_checkpoint_loads_the_one_resume_takes(tmp_path, reference):
    run = shutil.copytree(FILES / "generator_run", tmp_path / "run")
    good = run / "checkpoints" / "step_00000002.ckpt"
    (run / "checkpoints" / "last.ckpt").rename(good)
    (run / "checkpoints" / "last.ckpt").write_bytes(good.read_bytes()[:2000])  # killed while saving
    _check_generator(load_generator(run), reference, "ema")
