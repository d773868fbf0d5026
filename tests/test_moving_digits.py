"""Moving Digits: the data maker (vidtwin.demos.moving_digits, `vidtwin demo digits`) and the checker
(vidtwin.demos.digit_checker, `vidtwin demo check-generation`)."""

import csv
import json
import shutil

import numpy as np
import pytest

from vidtwin.cli import main as vidtwin
from vidtwin.data.video_io import read_video
from vidtwin.demos.digit_checker import Clip, DigitChecker, centroids, clips_from_csv, decoupling_score, direction_of, ink
from vidtwin.demos.moving_digits import ACTIONS, DIRECTIONS, class_names, make_moving_digits, render_clip, render_sprite
from vidtwin.demos.moving_digits import load_digit_images

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def motion(frames) -> np.ndarray:
    """(F, 2) ink centroids (x, y) of a uint8 clip."""
    return centroids(ink(np.asarray(frames)))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small data set: one training clip and two validation clips per class (80 real clips to check)."""
    out = tmp_path_factory.mktemp("moving_digits") / "data"
    make_moving_digits(out, seed=3, train_per_class=1, val_per_class=2, progress=False)
    return out


@pytest.fixture(scope="module")
def checker(digits):
    return DigitChecker(digits)


def test_the_data_set_has_the_issues_layout(digits):
    train, val = read_csv(digits / "train.csv"), read_csv(digits / "val.csv")
    assert list(train[0]) == ["videos", "digit", "direction", "label"]
    assert len(train) == 40 and len(val) == 80
    assert sorted({row["label"] for row in train}) == sorted(class_names()) and len(class_names()) == 40
    for row in train[:8] + val[:4]:
        assert row["label"] == f"{row['digit']}-{row['direction']}"
        frames, fps = read_video(digits / row["videos"])
        assert frames.shape == (16, 64, 64, 3) and fps == 8.0
        path = motion(frames.numpy())
        step = np.array(DIRECTIONS[row["direction"]])
        travelled = path[-1] - path[0]
        assert np.allclose(travelled, step * 15, atol=1.0), (row, travelled)  # 1 px per frame, the stated way
    settings = json.loads((digits / "digits.json").read_text())
    assert not set(settings["images"]["train"]) & set(settings["images"]["val"])  # held-out digit images
    assert settings["classes"] == class_names()


def test_the_same_seed_makes_the_same_data_set(tmp_path, digits):
    make_moving_digits(tmp_path / "again", seed=3, train_per_class=1, val_per_class=2, progress=False)
    assert (tmp_path / "again" / "train.csv").read_text() == (digits / "train.csv").read_text()
    assert (tmp_path / "again" / "digits.json").read_text() == (digits / "digits.json").read_text()
    first, _ = read_video(digits / "val" / "00007.mp4")
    again, _ = read_video(tmp_path / "again" / "val" / "00007.mp4")
    assert (first.int() - again.int()).abs().max().item() <= 2  # libx264 promises no bit-identical output
    make_moving_digits(tmp_path / "other", seed=4, train_per_class=1, val_per_class=2, progress=False)
    assert (tmp_path / "other" / "digits.json").read_text() != (digits / "digits.json").read_text()


def test_game_videos_follow_their_actions_inside_the_frame(tmp_path):
    make_moving_digits(tmp_path / "game", seed=0, game=True, num_frames=8, speed=2, clips_per_video=6,
                       train_videos=4, val_videos=2, progress=False)
    rows = read_csv(tmp_path / "game" / "train.csv")
    assert list(rows[0]) == ["videos", "digit", "actions"] and len(rows) == 4
    for row in rows:
        assert len(row["actions"]) == 6 and set(row["actions"]) <= set(ACTIONS)
        frames, _ = read_video(tmp_path / "game" / row["videos"])
        frames = frames.numpy()
        assert frames.shape == (48, 64, 64, 3)
        amount = ink(frames).sum(axis=(1, 2))
        assert amount.min() > 0.9 * amount.max()  # the digit never leaves the frame
        for clip, letter in enumerate(row["actions"]):
            assert direction_of(motion(frames[clip * 8:(clip + 1) * 8])) == ACTIONS[letter]


def test_the_data_maker_refuses_to_overwrite(digits, capsys):
    # In this process, as the demo commands' other tests: test_hub_failure_is_a_clear_error and
    # test_make_meta_cli_checks_and_drops_unreadable see the exit status of a real `python -m vidtwin`.
    before = (digits / "train.csv").read_text()
    assert vidtwin(["demo", "digits", str(digits)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"vidtwin demo digits: error: {digits} already holds files; pass --overwrite to replace them, or choose another folder"
    ]
    assert (digits / "train.csv").read_text() == before


def test_the_checkers_ceiling_on_real_validation_clips_is_high(checker, digits):
    figures = checker.score(clips_from_csv(digits / "val.csv"), progress=False)
    assert figures["clips"] == 80
    assert figures["digit_accuracy"] >= 0.9, figures  # digit images the classifier never saw
    assert figures["direction_accuracy"] == 1.0, figures


def test_the_checker_reads_what_a_clip_shows_not_what_it_is_named(checker):
    images, labels = load_digit_images()
    val_index = checker.settings["images"]["val"][0]
    sprite = render_sprite(images[val_index], 32)
    still = render_clip(sprite, np.array([[10, 20]] * 16), 64)
    assert checker.read(still) == (labels[val_index], None)  # no motion, no direction
    moving_up = render_clip(sprite, np.array([[16, 30 - 2 * i] for i in range(16)]), 64)
    assert checker.read(moving_up) == (labels[val_index], "up")
    assert checker.read(np.zeros((16, 64, 64, 3), np.uint8)) == (None, None)


def test_decoupling_counts_digits_from_the_structure_source_and_motion_from_the_dynamics_source(checker):
    images, labels = load_digit_images()
    first, second = checker.settings["images"]["val"][:1], checker.settings["images"]["val"][-1:]
    digit_a, digit_b = int(labels[first[0]]), int(labels[second[0]])
    assert digit_a != digit_b
    structure_source, dynamics_source = Clip(None, digit_a, "left"), Clip(None, digit_b, "down")
    down = np.array([[16, 2 + 2 * i] for i in range(16)])
    faithful = render_clip(render_sprite(images[first[0]], 32), down, 64)  # a's digit, b's motion
    copied = render_clip(render_sprite(images[second[0]], 32), down, 64)  # b's clip: structure ignored
    score = decoupling_score(checker, [(faithful, structure_source, dynamics_source),
                                       (copied, structure_source, dynamics_source)])
    assert score == {"pairs": 2, "digit_from_structure": 0.5, "direction_from_dynamics": 1.0, "decoupled": 0.5,
                     "digit_from_dynamics": 0.5, "direction_from_structure": 0.0}
    left = np.array([[30 - 2 * i, 16] for i in range(16)])
    both_from_structure = render_clip(render_sprite(images[first[0]], 32), left, 64)  # a's digit and a's motion
    assert checker.read(both_from_structure) == (digit_a, "left")
    score = decoupling_score(checker, [(both_from_structure, structure_source, dynamics_source)])
    assert score["digit_from_structure"] == 1.0 and score["direction_from_structure"] == 1.0
    assert score["direction_from_dynamics"] == 0.0 and score["digit_from_dynamics"] == 0.0


def test_check_generation_scores_a_folder_of_generated_clips(digits, checker, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("vidtwin.cli.demo_check_generation.DigitChecker", lambda data: checker)  # trained once per module
    samples = tmp_path / "samples"
    samples.mkdir()
    rows = read_csv(digits / "val.csv")[:8]
    for number, row in enumerate(rows):
        # Named as generate names them; every other one claims the wrong direction.
        direction = row["direction"] if number % 2 == 0 else ("up" if row["direction"] != "up" else "down")
        shutil.copy(digits / row["videos"], samples / f"{row['digit']}-{direction}_{number:03d}.mp4")
    assert vidtwin(["demo", "check-generation", str(samples), "--data", str(digits),
                    "--json", str(tmp_path / "check.json")]) == 0
    figures = json.loads((tmp_path / "check.json").read_text())
    assert figures["generated"]["clips"] == 8 and figures["generated"]["direction_accuracy"] == 0.5
    assert figures["real_validation"]["clips"] == 80
    table = capsys.readouterr().out
    assert "direction accuracy" in table and "50.0%" in table and "25%" in table


def test_check_generation_measures_decoupling_by_cross_reenacting_pairs_with_the_autoencoder(
        digits, checker, tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from vidtwin.demos.digit_checker import cross_reenacted, crossing_pairs
    from vidtwin.checkpoint import load_model

    clips = clips_from_csv(digits / "val.csv")
    pairs = crossing_pairs(clips, 5, seed=1)
    assert len(pairs) == 5 and pairs == crossing_pairs(clips, 5, seed=1)
    assert all(a.digit != b.digit and a.direction != b.direction for a, b in pairs)

    config = REPO / "configs" / "tiny_digits.yaml"  # the demo autoencoder's shapes, untrained weights
    weights = tmp_path / "untrained.safetensors"
    save_file(load_model(str(config)).state_dict(), str(weights))
    monkeypatch.setattr("vidtwin.cli.demo_check_generation.DigitChecker", lambda data: checker)
    assert vidtwin(["demo", "check-generation", str(digits / "val.csv"), "--data", str(digits), "--no-ceiling",
                    "--json", str(tmp_path / "c.json"), "--config", str(config), "--ckpt", str(weights), "--pairs", "3"]) == 0
    # The same pairs crossed again (posterior means: deterministic) give the score the command reported.
    crossed = cross_reenacted(config, weights, crossing_pairs(clips, 3, seed=0), progress=False)
    assert [frames.shape for frames, _, _ in crossed] == [(16, 64, 64, 3)] * 3  # the autoencoder's clips, decoded
    decoupling = json.loads((tmp_path / "c.json").read_text())["decoupling"]
    assert decoupling == decoupling_score(checker, crossed) and decoupling["pairs"] == 3
    assert "decoupling on 3 cross-reenacted pairs" in capsys.readouterr().out


def test_check_generation_names_a_folder_without_generated_clips(tmp_path, digits, capsys):
    code = vidtwin(["demo", "check-generation", str(tmp_path), "--data", str(digits)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"vidtwin demo check-generation: error: {tmp_path} holds no clips named <digit>-<direction>_<index>.mp4 (e.g. 3-left_000.mp4)"
    ]
