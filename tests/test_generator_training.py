"""vidtwin train trains the latent generator: statistics fitted in one pass before the first update,
sample videos per class decoded by the recorded autoencoder, a checkpoint that names both, and a
resume that continues exactly where an uninterrupted run goes, with Lightning's gradient
accumulation too."""

from pathlib import Path

import pytest
import torch

from vidtwin.generation import LatentNormalization
from vidtwin.latents.dataset import LatentDataset
from vidtwin.cli import train_main as main

from conftest import REPO, TINY_CONFIG, TINY_FRAMES
from generation_helpers import CLASSES, generator_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


@pytest.fixture(scope="module")
def files(labelled_latents):
    """``tiny.pt`` and its labelled ``latents/``, shared with test_generate_cli.py (conftest.py)."""
    return labelled_latents


def _state(path):
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint


def test_the_generator_trains_resumes_exactly_and_records_its_autoencoder(files, tmp_path, capsys):
    config = generator_config(tmp_path / "gen.yaml", files / "latents", files / "tiny.pt")
    logs = tmp_path / "logs"
    argv = ["--logdir", str(logs), "--seed", "5"]
    assert main([*argv, "--name", "straight", "--base", str(config), "lightning.trainer.max_steps=4"]) == 0
    assert main([*argv, "--name", "split", "--base", str(config)]) == 0
    run = logs / "split"
    out = capsys.readouterr().out
    assert f"vidtwin generate --generator {run} --all-classes" in out  # the summary's command

    checkpoint = _state(run / "checkpoints" / "last.ckpt")
    entry = checkpoint["vidtwin_generator"]
    dataset = LatentDataset(files / "latents")
    assert entry["autoencoder"] == {"config": str(TINY_CONFIG), "ckpt": str(files / "tiny.pt"), "working_dir": str(Path.cwd()),
                                    "weights_fingerprint": dataset.manifest["identity"]["weights_fingerprint"]}
    assert entry["labels"]["classes"] == CLASSES and entry["labels"]["source"] == "folders"
    assert entry["config"]["class_names"] == CLASSES and entry["config"]["num_classes"] == 3
    # The statistics were fitted on the dataset before training and travel in the checkpoint.
    expected = LatentNormalization.fit([{name: torch.stack([dataset[i][name] for i in range(len(dataset))])
                                         for name in ("structure", "dynamics_x", "dynamics_y")}])
    assert entry["config"]["normalization"]["std"]["structure"] == pytest.approx(expected.std["structure"])
    assert checkpoint["state_dict"]["generator.scaler.structure_std"].tolist() == pytest.approx(expected.std["structure"])
    # Sample videos: one per shown class, side by side, with the autoencoder's clip size.
    from vidtwin.data.video_io import probe_video

    info = probe_video(run / "samples" / "step_00000002.mp4")
    assert (info.width, info.height) == (2 * 64, 64)

    assert main([*argv, "--resume", str(run), "lightning.trainer.max_steps=4"]) == 0
    resumed, straight = _state(run / "checkpoints" / "last.ckpt"), _state(logs / "straight" / "checkpoints" / "last.ckpt")
    assert resumed["vidtwin_training"]["train_step"] == straight["vidtwin_training"]["train_step"] == 4
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for key, value in straight["ema_state_dict"].items():
        assert torch.equal(resumed["ema_state_dict"][key], value), key
    assert not torch.equal(resumed["state_dict"]["generator.tokens.inputs.0.weight"],
                           checkpoint["state_dict"]["generator.tokens.inputs.0.weight"])


def test_a_dataset_of_another_autoencoder_is_refused_in_one_line(files, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(TINY_CONFIG.read_text().replace(f"input_size: [{TINY_FRAMES}, 64, 64]", "input_size: [16, 64, 64]"))
    config = generator_config(tmp_path / "gen.yaml", files / "latents", None,
                              autoencoder={"config": str(other), "ckpt": str(files / "tiny.pt")})
    assert main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config)]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidtwin train: error:")]
    assert "makes latents of shapes" in line and "name the autoencoder that encoded it" in line
    assert not (tmp_path / "logs").exists()


def test_an_unlabelled_dataset_needs_conditional_false(files, tmp_path, capsys):
    import json
    import shutil

    shutil.copytree(files / "latents", tmp_path / "latents")
    manifest = json.loads((tmp_path / "latents" / "manifest.json").read_text())
    del manifest["labels"]
    (tmp_path / "latents" / "manifest.json").write_text(json.dumps(manifest))
    config = generator_config(tmp_path / "gen.yaml", tmp_path / "latents", None)
    assert main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config)]) == 2
    assert "has no class labels" in capsys.readouterr().err
    assert main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config),
                 "model.params.conditional=false", "lightning.trainer.max_steps=1"]) == 0


@pytest.mark.parametrize("name", ["tiny_digits", "ucf101"])
def test_the_shipped_generator_configs_build_on_a_latent_dataset(files, name):
    from _training_utils import build
    from vidtwin.config import load_config

    config = load_config([str(REPO / "configs" / "generator" / f"{name}.yaml")],
                         [f"data.params.root={files / 'latents'}", f"model.params.autoencoder.config={TINY_CONFIG}",
                          f"model.params.autoencoder.ckpt={files / 'tiny.pt'}"])
    module, datamodule = build(config)
    assert module.generator.config.class_names == CLASSES and len(datamodule.dataset) == 12
    assert module.generator.config.depth == {"tiny_digits": 4, "ucf101": 18}[name]


RESUME_ARGS = ["--seed", "5", "data.params.batch_size=4"]


@pytest.fixture(scope="module")
def straight_six_updates(files, tmp_path_factory):
    """The last checkpoint of an uninterrupted 6-update run, which every split of the test below must reach."""
    root = tmp_path_factory.mktemp("straight")
    config = generator_config(root / "gen.yaml", files / "latents", files / "tiny.pt", max_steps=6)
    assert main(["--logdir", str(root / "logs"), *RESUME_ARGS, "--name", "straight", "--base", str(config)]) == 0
    return _state(root / "logs" / "straight" / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("split", [2, 3, 4])  # mid-epoch, at the epoch boundary, in the next epoch
def test_a_resume_anywhere_in_an_epoch_continues_with_the_uninterrupted_runs_batches(files, tmp_path, split,
                                                                                    straight_six_updates):
    """12 clips in batches of 4: three batches per epoch, so a resume lands inside an epoch or at its end."""
    config = generator_config(tmp_path / "gen.yaml", files / "latents", files / "tiny.pt", max_steps=split)
    logs = tmp_path / "logs"
    assert main(["--logdir", str(logs), *RESUME_ARGS, "--name", "split", "--base", str(config)]) == 0
    assert main(["--logdir", str(logs), "--seed", "5", "--resume", str(logs / "split"), "lightning.trainer.max_steps=6"]) == 0
    resumed, straight = _state(logs / "split/checkpoints/last.ckpt"), straight_six_updates
    assert resumed["vidtwin_training"]["train_step"] == straight["vidtwin_training"]["train_step"] == 6
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_lightning_accumulates_gradients_for_the_generator_and_a_resume_stays_exact(files, tmp_path):
    """Two batches of 4 clips per update (Lightning's accumulate_grad_batches): the resumed run
    starts at batch train_step * batches_per_update, where the uninterrupted run went on."""
    config = generator_config(tmp_path / "gen.yaml", files / "latents", None, max_steps=1)
    logs = tmp_path / "logs"
    argv = ["--logdir", str(logs), "--seed", "5", "data.params.batch_size=4", "lightning.trainer.accumulate_grad_batches=2"]
    assert main([*argv, "--name", "straight", "--base", str(config), "lightning.trainer.max_steps=3"]) == 0
    assert main([*argv, "--name", "split", "--base", str(config)]) == 0
    assert main(["--logdir", str(logs), "--seed", "5", "--resume", str(logs / "split"), "lightning.trainer.max_steps=3"]) == 0
    resumed, straight = _state(logs / "split/checkpoints/last.ckpt"), _state(logs / "straight/checkpoints/last.ckpt")
    assert resumed["vidtwin_training"]["train_step"] == straight["vidtwin_training"]["train_step"] == 3
    assert straight["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 6  # 2 batches per update
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_the_update_order_stream_is_a_function_of_the_batch_number():
    from torch.utils.data import DistributedSampler

    from vidtwin.training.latent_data import UpdateOrderSampler

    items = list(range(10))

    def stream(rank, start, drop_last=True, batches=9):
        sampler = UpdateOrderSampler(items, num_replicas=2, rank=rank, seed=3, batch_size=2, drop_last=drop_last,
                                     start_batch=start)
        out = iter(sampler)
        return [[next(out) for _ in range(2)] for _ in range(batches)]

    whole = stream(0, 0)
    assert stream(0, 3, batches=6) == whole[3:]  # a resume at batch 3 sees batches 3, 4, ...
    # Epoch e is DistributedSampler's order for seed + e, cut to whole batches (5 items: 2 batches).
    reference = DistributedSampler(items, num_replicas=2, rank=0, shuffle=True, seed=3)
    reference.set_epoch(1)
    assert sum(whole[2:4], []) == list(reference)[:4]
    # The two processes share each epoch's items without overlap.
    first_epoch = sum(whole[:2], []) + sum(stream(1, 0, batches=2), [])
    assert len(set(first_epoch)) == 8
    # Without drop_last the partial batch is filled up from the start of its epoch.
    assert stream(0, 0, drop_last=False, batches=3)[2][1] == stream(0, 0, drop_last=False, batches=1)[0][0]
