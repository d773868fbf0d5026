"""`vidtwin play` and `vidtwin demo check-world` on a tiny untrained world model and FSQ autoencoder."""

import pytest
import torch

from vidtwin.cli import main as vidtwin
from vidtwin.data.video_io import probe_video

from world_helpers import make_play_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_play_files(tmp_path_factory.mktemp("world_play"))


def test_play_writes_the_start_clip_and_one_clip_per_action(files, tmp_path, capsys):
    output = tmp_path / "rollout.mp4"
    assert vidtwin(["play", str(files / "world"), "--start", str(files / "start.mp4"), "--actions", "RUL",
                    "--output", str(output), "--top-k", "5", "--device", "cpu"]) == 0
    info = probe_video(output)
    assert (info.num_frames, info.height, info.width) == ((1 + 3) * 8, 64, 64)
    assert info.fps == pytest.approx(8.0)
    assert "the start clip and 3 predicted clips" in capsys.readouterr().out
    first = output.read_bytes()
    assert vidtwin(["play", str(files / "world"), "--start", str(files / "start.mp4"), "--actions", "RUL",
                    "--output", str(output), "--top-k", "5", "--device", "cpu", "--overwrite"]) == 0
    assert output.read_bytes() == first  # the same seed: the same video


def test_the_terminal_view_and_the_keys():
    from vidtwin.cli.play import half_block_image, read_keys
    import io

    frame = torch.zeros(4, 3, 3, dtype=torch.uint8).numpy()
    frame[0, 0] = (255, 0, 0)
    text = half_block_image(frame)
    assert len(text.splitlines()) == 2 and text.startswith("\x1b[38;2;255;0;0m\x1b[48;2;0;0;0m\u2580")
    assert list(read_keys(io.StringIO("\x1b[A\x1b[Dxq"))) == ["U", "L", "x", "q"]


def test_check_world_scores_each_step(files, tmp_path, monkeypatch, capsys):
    """The checker on a two-video game data set, with a stand-in reader that sees every clip move right."""
    import json

    from vidtwin.demos.digit_checker import DigitChecker
    from vidtwin.demos.moving_digits import make_moving_digits

    data = tmp_path / "game"
    make_moving_digits(data, game=True, num_frames=8, speed=2, clips_per_video=4, train_videos=1, val_videos=2,
                       progress=False)
    monkeypatch.setattr(DigitChecker, "_train", lambda self: None)
    monkeypatch.setattr(DigitChecker, "read", lambda self, frames: (7, "right"))
    assert vidtwin(["demo", "check-world", str(files / "world"), "--data", str(data), "--length", "3", "--ceiling",
                    "--json", str(tmp_path / "out.json"), "--device", "cpu", "--batch", "1"]) == 0
    figures = json.loads((tmp_path / "out.json").read_text())
    assert [row["step"] for row in figures["steps"]] == [1, 2, 3] and figures["rollouts"] == 2
    assert len(figures["ceiling"]["real"]) == len(figures["ceiling"]["tokens"]) == 3
    table = capsys.readouterr().out
    assert "following" in table and "real: following" in table and "tokens: kept" in table
    for row in figures["steps"]:
        assert 0 <= row["action_following"] <= 1 and row["digit_kept"] in (0.0, 0.5, 1.0)


def test_the_game_pipeline_end_to_end(files, tmp_path, capsys):
    """Game videos -> encode-dataset --actions-column -> vidtwin train on windows -> vidtwin play, through the real
    data interface."""
    from vidtwin.cli import train_main as train
    from world_helpers import encode_game_tokens, world_training_config

    game = tmp_path / "game"
    encode_game_tokens(files, game, tmp_path / "tokens", train_videos=3)
    config = world_training_config(tmp_path / "world.yaml", tmp_path / "tokens", (files / "ae.yaml", files / "ae.pt"))
    assert train(["--logdir", str(tmp_path / "logs"), "--name", "world", "--base", str(config),
                  "data.params.batch_size=3"]) == 0
    output = tmp_path / "rollout.mp4"
    assert vidtwin(["play", str(tmp_path / "logs" / "world"), "--start", str(game / "val" / "00000.mp4"),
                    "--actions", "RL", "--output", str(output), "--device", "cpu"]) == 0
    assert probe_video(output).num_frames == 3 * 8
