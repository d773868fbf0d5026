"""train.py trains the world model: a checkpoint that names its autoencoder and actions, sample
videos of rollouts, and a resume that continues exactly where an uninterrupted run goes.

The windows are Moving Digits game videos encoded by a small FSQ autoencoder through the real
``encode-dataset --actions-column`` and read by LatentDataModule(sequence_length=K + 1, tokens=True)."""

import pytest
import torch

from vidtwin.generation import load_world_model
from vidtwin.cli import train_main as main
from vidtwin.latents.shards import read_manifest

from world_helpers import encode_game_tokens, make_play_files, world_training_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = make_play_files(tmp_path_factory.mktemp("world_training"))
    encode_game_tokens(root, root / "game", root / "tokens")
    return root


def test_the_world_model_trains_resumes_exactly_and_records_its_autoencoder(files, tmp_path, capsys):
    config = world_training_config(tmp_path / "world.yaml", files / "tokens", (files / "ae.yaml", files / "ae.pt"))
    logs = tmp_path / "logs"
    argv = ["--logdir", str(logs), "--seed", "5"]
    assert main([*argv, "--name", "straight", "--base", str(config), "lightning.trainer.max_steps=6"]) == 0
    assert main([*argv, "--name", "split", "--base", str(config), "lightning.trainer.max_steps=3"]) == 0
    run = logs / "split"
    assert f"vidtwin play {run} --start START.mp4 --actions RRUULD" in capsys.readouterr().out

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    entry = checkpoint["vidtwin_world_model"]
    recorded = entry["autoencoder"]
    assert {key: recorded[key] for key in ("config", "ckpt")} == {"config": str(files / "ae.yaml"), "ckpt": str(files / "ae.pt")}
    assert recorded["weights_fingerprint"] == read_manifest(files / "tokens")["identity"]["weights_fingerprint"]
    assert entry["config"]["actions"] == ["D", "L", "R", "U"] and entry["config"]["context_clips"] == 2
    model = load_world_model(run)  # EMA weights, strict keys
    assert model.autoencoder_files == entry["autoencoder"]
    assert all(torch.equal(value, checkpoint["ema_state_dict"][key]) for key, value in model.state_dict().items())
    from vidtwin.data.video_io import probe_video

    info = probe_video(run / "samples" / "step_00000002.mp4")  # real | rollout, 3 clips of 8 frames each
    assert (info.width, info.height, info.num_frames) == (2 * 64, 64, 3 * 8)

    assert main([*argv, "--resume", str(run), "lightning.trainer.max_steps=6"]) == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    straight = torch.load(logs / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["vidtwin_training"]["train_step"] == straight["vidtwin_training"]["train_step"] == 6
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for key, value in straight["ema_state_dict"].items():
        assert torch.equal(resumed["ema_state_dict"][key], value), key
    assert not torch.equal(resumed["state_dict"]["world.heads.0.weight"], checkpoint["state_dict"]["world.heads.0.weight"])


def test_windows_of_another_length_than_the_context_are_refused_in_one_line(files, tmp_path, capsys):
    config = world_training_config(tmp_path / "world.yaml", files / "tokens")
    assert main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config),
                 "data.params.sequence_length=2"]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidtwin train: error:")]
    assert "sequence_length is 2" in line and "set sequence_length: 3" in line


def test_a_start_window_model_trains_on_windows_of_its_length_and_world_loss_scores_each_step(files, tmp_path, capsys):
    import json

    from vidtwin.cli import main as vidtwin

    config = world_training_config(tmp_path / "world.yaml", files / "tokens")
    argv = ["--logdir", str(tmp_path / "logs"), "--base", str(config), "model.params.world.start_window=4"]
    assert main([*argv, "--name", "short"]) == 2  # windows of K + 1 = 3 clips
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidtwin train: error:")]
    assert "sequence_length is 3" in line and "start_window 4" in line and "set sequence_length: 4" in line
    assert main([*argv, "--name", "run", "data.params.sequence_length=4"]) == 0
    run = tmp_path / "logs" / "run"
    assert load_world_model(run).config.start_window == 4
    tokens = str(files / "tokens")
    assert vidtwin(["demo", "world-loss", str(run), "--data", tokens, "--windows", "4",
                    "--json", str(tmp_path / "loss.json")]) == 0
    rows = json.loads((tmp_path / "loss.json").read_text())["rows"]
    assert [row["target_clip"] for row in rows] == [1, 2, 3] and all(row["windows"] == 4 for row in rows)
    assert "step 3" in capsys.readouterr().out


def test_the_shipped_world_config_trains_on_windows_of_the_games_8_clip_videos(files, tmp_path):
    from _training_utils import build
    from conftest import REPO
    from vidtwin.config import load_config

    tokens = encode_game_tokens(files, tmp_path / "game", tmp_path / "tokens", train_videos=2, clips_per_video=8)
    config = load_config([str(REPO / "configs" / "world" / "tiny_digits.yaml")],
                         [f"data.params.root={tokens}", f"model.params.autoencoder.config={files / 'ae.yaml'}",
                          f"model.params.autoencoder.ckpt={files / 'ae.pt'}", "data.params.batch_size=2"])
    module, datamodule = build(config)
    # The last clip and the kept start clip, from windows of the videos' 8 clips.
    assert module.world.config.context_clips == 1
    assert module.world.config.start_window == datamodule.sequence_length == 8
    assert module.world.config.actions == ["D", "L", "R", "U"] and module.world.config.depth == 3
    assert len(datamodule.dataset) == 2  # one window per video
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["actions"].shape == (2, 8)
    loss = module.world.training_loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss > 0


def test_the_learning_rate_can_decay_along_a_cosine_to_its_floor(files, tmp_path, capsys):
    from vidtwin.training.latent_module import learning_rate_factor

    assert [learning_rate_factor(step, 2, 6, None) for step in (0, 1, 2, 5)] == [0.5, 1.0, 1.0, 1.0]
    assert [round(learning_rate_factor(step, 2, 6, 0.1), 4) for step in (1, 2, 4, 6, 9)] == [1.0, 1.0, 0.55, 0.1, 0.1]
    config = world_training_config(tmp_path / "world.yaml", files / "tokens", (files / "ae.yaml", files / "ae.pt"))
    argv = ["--logdir", str(tmp_path / "logs"), "--base", str(config), "lightning.trainer.max_steps=6",
            "model.params.warmup_steps=2", "model.params.learning_rate=0.001"]
    assert main([*argv, "--name", "decay", "model.params.min_learning_rate=0.0001"]) == 0
    checkpoint = torch.load(tmp_path / "logs" / "decay" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(1e-4)  # the floor at the last update
    assert main([*argv, "--name", "above", "model.params.min_learning_rate=0.01"]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidtwin train: error:")]
    assert "min_learning_rate must lie in [0, learning_rate = 0.001]" in line


def test_a_run_saved_before_the_embedding_rename_resumes_as_its_renamed_copy_does(files, tmp_path):
    """Runs made before ``factorized_codes`` named each group's table ``token_embeddings.<g>.weight``
    (in the weights and in the EMA entry); ``--resume`` renames them as it loads."""
    import shutil

    config = world_training_config(tmp_path / "world.yaml", files / "tokens", (files / "ae.yaml", files / "ae.pt"))
    logs = tmp_path / "logs"
    argv = ["--logdir", str(logs), "--seed", "5"]
    assert main([*argv, "--name", "current", "--base", str(config), "lightning.trainer.max_steps=3"]) == 0
    shutil.copytree(logs / "current", logs / "old")
    for name in ("last.ckpt", *(path.name for path in (logs / "old" / "checkpoints").glob("step_*.ckpt"))):
        path = logs / "old" / "checkpoints" / name
        checkpoint = torch.load(path, weights_only=True)
        for entry, prefix in (("state_dict", "world."), ("ema_state_dict", "")):
            for group in (0, 1):
                checkpoint[entry][f"{prefix}token_embeddings.{group}.weight"] = \
                    checkpoint[entry].pop(f"{prefix}token_embeddings.{group}.0.weight")
        torch.save(checkpoint, path)
    assert "world.token_embeddings.0.weight" in torch.load(logs / "old" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    for name in ("current", "old"):
        assert main([*argv, "--resume", str(logs / name), "lightning.trainer.max_steps=5"]) == 0
    current, old = (torch.load(logs / name / "checkpoints" / "last.ckpt", weights_only=True) for name in ("current", "old"))
    assert old["vidtwin_training"]["train_step"] == 5
    for entry in ("state_dict", "ema_state_dict"):
        assert current[entry].keys() == old[entry].keys()
        for key, value in current[entry].items():
            assert torch.equal(old[entry][key], value), (entry, key)


def test_world_loss_scores_checkpoints_on_token_datasets_with_the_same_windows_and_masks(files, tmp_path, capsys):
    import json
    import math

    from vidtwin.cli import main as vidtwin
    from vidtwin.demos.world_loss import WorldLossError, dataset_windows, world_losses

    config = world_training_config(tmp_path / "world.yaml", files / "tokens")
    run = tmp_path / "logs" / "run"
    assert main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config),
                 "lightning.trainer.max_steps=4", "lightning.checkpoint.every_n_steps=2"]) == 0
    first = run / "checkpoints" / "step_00000002.ckpt"
    tokens = str(files / "tokens")
    assert vidtwin(["demo", "world-loss", str(first), str(run), "--data", tokens, tokens, "--windows", "8",
                    "--json", str(tmp_path / "loss.json")]) == 0
    rows = json.loads((tmp_path / "loss.json").read_text())["rows"]
    assert [(row["world"], row["context_clips"]) for row in rows] == \
        [(str(first), 1), (str(first), 2)] * 2 + [(str(run), 1), (str(run), 2)] * 2
    assert all(row["windows"] == 8 and 0 < row["loss"] < 2 * math.log(1000) for row in rows)
    assert [row["loss"] for row in rows[:2]] == [row["loss"] for row in rows[2:4]]  # same windows, same masks
    assert [row["loss"] for row in rows[:2]] != [row["loss"] for row in rows[4:6]]  # two updates apart
    assert "context" in capsys.readouterr().out

    world = load_world_model(run)
    world.config.actions = ["A", "B"]
    with pytest.raises(WorldLossError, match="encode it with --actions-column"):
        dataset_windows(world, tokens, 4, 0)
    with pytest.raises(WorldLossError, match="--windows must be >= 1"):
        world_losses([str(run)], [tokens], windows=0)
