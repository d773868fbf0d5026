"""Sequences of clips with actions, for world models: ``encode-dataset --actions-column`` stores one
action per clip, and ``LatentDataset(sequence_length=N)`` gives windows of N consecutive clips of one
video, which ``LatentDataModule(sequence_length=N, tokens=True)`` batches.

The data are Moving Digits game videos (``vidtwin demo digits --game``) of several
lengths, encoded through the real ``inference.py encode-dataset`` by a micro FSQ model of 8-frame
clips, so each clip the command cuts is one action of the game."""

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtwin import load_model
from vidtwin.data import collate_latent_sequences as collate_from_data
from vidtwin.data.video_io import read_video
from vidtwin.demos.moving_digits import make_moving_digits
from vidtwin.cli import main
from vidtwin.latents import LatentDataset, LatentDatasetError, collate_latent_sequences, collate_latents
from vidtwin.latents.actions import action_vocabulary
from vidtwin.latents.shards import list_shards
from vidtwin.training import LatentDataModule

from _training_utils import FSQ_MICRO, micro_config
from conftest import DATA

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

FRAMES = 8  # frames per game clip, and per clip of the model
FPS = 8.0
# game folder -> clips per video; videos of 4, 1, 3 and 4 clips, listed in this order
GAMES = {"long": 4, "short": 1, "mid": 3}
WINDOW = 3
LEGACY_DATASETS = [DATA / "legacy" / "kl_dataset", DATA / "legacy" / "fsq_dataset", DATA / "latent_dataset_f10a1ce"]


def encode(game: Path, csv_name: str, output: Path, *extra: str) -> int:
    return main(["encode-dataset", "--ckpt", str(game / "fsq_model"), "--input", str(game / csv_name),
                 "--output", str(output), "--dtype", "fp32", "--num-workers", "0", "--accelerator", "cpu",
                 "--sample-fps", str(FPS), "--quiet", *extra])


@pytest.fixture(scope="module")
def game(tmp_path_factory) -> Path:
    """Game videos of 4, 1, 3 and 4 clips in one meta CSV, a micro FSQ model of 8-frame clips, and
    their token dataset encoded with --actions-column actions."""
    root = tmp_path_factory.mktemp("game")
    rows = []
    for folder, clips in GAMES.items():
        make_moving_digits(root / folder, seed=len(rows), frame_size=32, digit_size=16, num_frames=FRAMES, speed=1,
                           fps=FPS, game=True, clips_per_video=clips, train_videos=2 if folder == "long" else 1,
                           val_videos=1, progress=False)
        with open(root / folder / "train.csv", newline="") as handle:
            rows += [{**row, "videos": f"{folder}/{row['videos']}"} for row in csv.DictReader(handle)]
    rows = [rows[0], rows[2], rows[3], rows[1]]  # long, short, mid, long: a short video between longer ones
    with open(root / "meta.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["videos", "digit", "actions"])
        writer.writeheader()
        writer.writerows(rows)
    torch.manual_seed(0)
    load_model(micro_config(*FSQ_MICRO, f"model.params.autoencoder.input_size=[{FRAMES},32,32]")).save_pretrained(
        root / "fsq_model")
    assert encode(root, "meta.csv", root / "tokens", "--actions-column", "actions") == 0
    return root


def game_actions(game: Path) -> dict:
    with open(game / "meta.csv", newline="") as handle:
        return {row["videos"]: row["actions"] for row in csv.DictReader(handle)}


def digit_centre(frame: torch.Tensor) -> np.ndarray:
    """(x, y) of the brightness-weighted centre of a frame (H, W, 3) uint8: where the digit is."""
    weight = (frame.float().mean(-1) - 40).clamp(min=0)  # (H, W); the dark background and coding noise weigh nothing
    rows, columns = torch.meshgrid(torch.arange(frame.shape[0]), torch.arange(frame.shape[1]), indexing="ij")
    return np.array([float((weight * columns).sum() / weight.sum()), float((weight * rows).sum() / weight.sum())])


MOTION = {"R": (1, 0), "L": (-1, 0), "D": (0, 1), "U": (0, -1)}  # (x, y) direction of each action on screen


def test_each_clip_cut_is_one_game_action_and_carries_it(game):
    dataset = LatentDataset(game / "tokens")
    actions = game_actions(game)
    assert dataset.actions == action_vocabulary(actions) == sorted(set("".join(actions.values())))
    assert dataset.manifest["actions"] == {"source": "column actions", "vocabulary": dataset.actions}
    assert len(dataset) == sum(len(letters) for letters in actions.values()) == 12
    frames = {video: read_video(game / video)[0] for video in actions}  # (F, H, W, 3) each
    for index in range(len(dataset)):
        item = dataset[index]
        letter = actions[item["video"]][item["clip"]]
        assert item["action"].dtype == torch.int64 and item["action"].shape == ()
        assert dataset.actions[int(item["action"])] == letter
        # Clip k covers frames [k*F, (k+1)*F) of the video, the frames during which action k moves the digit.
        assert (item["first_frame"], item["num_frames"]) == (item["clip"] * FRAMES, FRAMES)
        clip_frames = frames[item["video"]][item["first_frame"]:item["first_frame"] + item["num_frames"]]
        moved = digit_centre(clip_frames[-1]) - digit_centre(clip_frames[0])
        assert np.dot(moved, MOTION[letter]) > 0.7 * (FRAMES - 1), (item["video"], item["clip"], letter, moved)
    batch = collate_latents([dataset[0], dataset[5]])
    assert batch["action"].tolist() == [dataset.actions.index(actions[dataset[i]["video"]][dataset[i]["clip"]]) for i in (0, 5)]
    with open(game / "tokens" / "index.csv", newline="") as handle:  # letters, for people reading the index
        assert "".join(row["action"] for row in csv.DictReader(handle)) == "".join(actions.values())


def test_windows_are_consecutive_clips_of_one_video(game):
    clips = LatentDataset(game / "tokens")
    dataset = LatentDataset(game / "tokens", sequence_length=WINDOW)
    actions = game_actions(game)
    lengths = [len(letters) for letters in actions.values()]  # 4, 1, 3, 4
    assert len(dataset) == sum(max(0, n - WINDOW + 1) for n in lengths) == 5
    assert dataset.sequence_windows.shape == (5, 2)
    seen = []
    for index in range(len(dataset)):
        item = dataset[index]
        first, video = dataset.sequence_windows[index].tolist()
        assert dataset.videos[video] == item["video"]
        members = [clips[first + offset] for offset in range(WINDOW)]
        assert {member["video"] for member in members} == {item["video"]}  # never across a video boundary
        assert [member["clip"] for member in members] == list(range(item["first_clip"], item["first_clip"] + WINDOW))
        for name in ("structure", "dynamics_x", "dynamics_y"):
            assert item[name].dtype == torch.int64
            assert torch.equal(item[name], torch.stack([member[name] for member in members]))  # (N, ...)
        letters = actions[item["video"]][item["first_clip"]:item["first_clip"] + WINDOW]
        assert "".join(dataset.actions[a] for a in item["actions"].tolist()) == letters
        seen.append((item["video"], item["first_clip"]))
    short = next(video for video in actions if video.startswith("short/"))
    assert short not in {video for video, _ in seen}  # one clip: shorter than a window
    assert seen == [(video, start) for video, n in zip(actions, lengths) for start in range(n - WINDOW + 1)]
    assert len(LatentDataset(game / "tokens", sequence_length=1)) == len(clips)
    assert len(LatentDataset(game / "tokens", sequence_length=5)) == 0  # no video has 5 clips


def test_sequence_batches_stack_windows_and_actions(game):
    dataset = LatentDataset(game / "tokens", sequence_length=WINDOW)
    assert collate_from_data is collate_latent_sequences
    batch = collate_latent_sequences([dataset[0], dataset[3]])
    tokens = LatentDataset(game / "tokens")[0]
    assert batch["structure"].shape == (2, WINDOW, *tokens["structure"].shape)  # (B, N, Q, h_S, w_S)
    assert batch["dynamics_x"].shape == (2, WINDOW, *tokens["dynamics_x"].shape)  # (B, N, T, w_D)
    assert batch["dynamics_y"].shape == (2, WINDOW, *tokens["dynamics_y"].shape)  # (B, N, T, h_D)
    assert batch["actions"].shape == (2, WINDOW) and batch["actions"].dtype == torch.int64
    assert torch.equal(batch["actions"][1], dataset[3]["actions"])
    assert batch["video"] == [dataset[0]["video"], dataset[3]["video"]]
    assert batch["first_clip"].tolist() == [dataset[0]["first_clip"], dataset[3]["first_clip"]]


def test_datamodule_gives_batches_of_token_windows(game):
    datamodule = LatentDataModule(str(game / "tokens"), batch_size=2, sequence_length=WINDOW, tokens=True)
    loader = datamodule.train_dataloader()
    assert loader.sampler.batches_per_epoch == 2  # 5 windows, the last smaller batch left out
    batches = list(itertools.islice(loader, 4))  # an endless stream: two epochs
    first_epoch = {(batch["video"][i], batch["first_clip"][i].item()) for batch in batches[:2] for i in range(2)}
    assert len(first_epoch) == 4  # four different windows in one epoch
    clip = LatentDataset(game / "tokens")[0]
    for batch in batches:
        assert batch["structure"].shape == (2, WINDOW, *clip["structure"].shape)
        assert batch["dynamics_x"].shape == (2, WINDOW, *clip["dynamics_x"].shape)
        assert batch["actions"].shape == (2, WINDOW)
    with pytest.raises(ValueError, match="holds FSQ tokens"):  # the flow-matching generator's data module, as before
        LatentDataModule(str(game / "tokens"), sequence_length=WINDOW)
    with pytest.raises(ValueError, match="tokens: true needs the FSQ tokens"):
        LatentDataModule(str(DATA / "legacy" / "kl_dataset"), sequence_length=2, tokens=True)
    with pytest.raises(ValueError, match="no video of the latent dataset .* has 5 clips"):
        LatentDataModule(str(game / "tokens"), sequence_length=5, tokens=True)
    with pytest.raises(LatentDatasetError, match="sequence_length must be a whole number >= 1"):
        LatentDataset(game / "tokens", sequence_length=0)


@pytest.mark.parametrize("root", LEGACY_DATASETS, ids=lambda path: path.name)
def test_datasets_written_before_actions_read_as_sequences(root):
    dataset = LatentDataset(root)
    assert dataset.actions is None and "action" not in dataset[0]
    windows = LatentDataset(root, sequence_length=2)
    assert len(windows) == 1  # both have one video of two clips
    item = windows[0]
    assert "actions" not in item and item["first_clip"] == 0
    assert torch.equal(item["structure"], torch.stack([dataset[0]["structure"], dataset[1]["structure"]]))  # (2, ...)
    assert "actions" not in collate_latent_sequences([item])


def test_a_rerun_with_another_column_rewrites_the_actions_without_encoding_again(game, tmp_path):
    output = tmp_path / "tokens"
    shutil.copytree(game / "tokens", output)
    shards = {path.name: path.read_bytes() for path in list_shards(output)}
    with open(game / "meta.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    mirrored = str.maketrans("LRUD", "RLDU")  # another action set over the same clips
    with open(game / "mirrored.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["videos", "digit", "actions", "mirrored"])
        writer.writeheader()
        writer.writerows({**row, "mirrored": row["actions"].translate(mirrored).lower()} for row in rows)

    assert encode(game, "mirrored.csv", output, "--actions-column", "mirrored") == 0
    dataset = LatentDataset(output)
    assert dataset.actions == ["d", "l", "r", "u"] and dataset.manifest["actions"]["source"] == "column mirrored"
    assert [dataset.actions[int(dataset[i]["action"])] for i in range(len(dataset))] == list(
        "".join(row["actions"] for row in rows).translate(mirrored).lower())
    assert {path.name: path.read_bytes() for path in list_shards(output)} == shards  # no clip encoded again

    assert encode(game, "mirrored.csv", output) == 0  # as labels: a rerun without the option records none
    dataset = LatentDataset(output)
    assert dataset.actions is None and "actions" not in dataset.manifest and "action" not in dataset[0]
    assert "action" not in dataset.index.columns


@pytest.mark.parametrize("vocabulary, problem", [(["D", "D", "L", "R"], "is not a list of distinct letters"),
                                                 (["D"], "holds actions outside its vocabulary of 1")])
def test_a_damaged_action_vocabulary_is_named(game, tmp_path, vocabulary, problem):
    output = tmp_path / "tokens"
    shutil.copytree(game / "tokens", output)
    manifest = json.loads((output / "manifest.json").read_text())
    manifest["actions"]["vocabulary"] = vocabulary
    (output / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LatentDatasetError, match=problem):
        LatentDataset(output)
