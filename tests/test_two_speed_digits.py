"""Two-speed Moving Digits: the data (vidtwin.demos.two_speed, `vidtwin demo digits --two-speed`), the
split checker (vidtwin.demos.split_checker) and `vidtwin demo check-split`."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from vidtwin.cli import main as vidtwin
from vidtwin.data.video_io import read_video
from vidtwin.demos.digit_checker import centroids, ink
from vidtwin.demos.moving_digits import (DIRECTIONS, MovingDigitsError, load_digit_images, make_moving_digits,
                                         render_clip, render_sprite)
from vidtwin.demos.split_checker import (CheckSplitError, SplitChecker, SplitClip, clips_from_csv, read_frames,
                                         split_pairs, targets_met, track_motion)
from vidtwin.demos.two_speed import COLUMNS, SHAKES, class_names, make_two_speed_digits, two_speed_positions

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_speed(tmp_path_factory):
    """A small two-speed set: one training clip per class (120) and one validation clip per class."""
    out = tmp_path_factory.mktemp("two_speed") / "data"
    make_two_speed_digits(out, seed=5, train_per_class=1, val_per_class=1, progress=False)
    return out


@pytest.mark.parametrize("drift", list(DIRECTIONS))
@pytest.mark.parametrize("shake", list(SHAKES))
def test_positions_drift_one_pixel_per_frame_and_shake_two_pixels_each_way_inside_the_frame(drift, shake):
    signs = set()
    for seed in range(20):
        positions = two_speed_positions(np.random.default_rng(seed), drift, shake, num_frames=16, free=32)
        assert positions.shape == (16, 2) and positions.min() >= 0 and positions.max() <= 32
        step = np.array(DIRECTIONS[drift])
        even = positions[::2]  # the shake is the same on every other frame: these follow the drift alone
        assert (np.diff(even, axis=0) == 2 * step).all(), positions
        shaking = positions - step[None] * np.arange(16)[:, None]  # (16, 2): the drift removed
        offsets = shaking - shaking.mean(axis=0)  # an even number of frames: the shake averages out
        for axis in (0, 1):
            if SHAKES[shake] == axis:
                assert (np.abs(offsets[:, axis]) == 2).all() and (offsets[1:, axis] == -offsets[:-1, axis]).all()
                signs.add(int(offsets[0, axis]))
            else:
                assert (offsets[:, axis] == 0).all(), (axis, positions)
    if shake != "none":
        assert signs == {-2, 2}  # either starting sign


def test_positions_refuse_a_frame_too_small_for_the_motion():
    with pytest.raises(MovingDigitsError, match="lower --speed"):
        two_speed_positions(np.random.default_rng(0), "left", "horizontal", num_frames=16, free=16)


def test_the_two_speed_set_has_the_issues_layout(two_speed):
    train, val = read_csv(two_speed / "train.csv"), read_csv(two_speed / "val.csv")
    assert list(train[0]) == COLUMNS == ["videos", "digit", "drift", "shake"]
    assert len(train) == len(val) == 120 == len(class_names())
    for rows in (train, val):  # every digit x drift x shake class, per_class times
        assert sorted(f"{row['digit']}-{row['drift']}-{row['shake']}" for row in rows) == sorted(class_names())
    settings = json.loads((two_speed / "digits.json").read_text())
    assert settings["two_speed"] is True and settings["shake_amplitude"] == 2 and settings["classes"] == class_names()
    assert (settings["frame_size"], settings["digit_size"], settings["frames"], settings["speed"]) == (64, 32, 16, 1)
    assert not set(settings["images"]["train"]) & set(settings["images"]["val"])  # held-out digit images
    for row in train[:6]:
        frames, fps = read_video(two_speed / row["videos"])
        assert frames.shape == (16, 64, 64, 3) and fps == 8.0
        path = centroids(ink(frames.numpy()))  # (16, 2)
        travelled = path[14] - path[0]  # even frames: the same shake offset
        assert np.allclose(travelled, np.array(DIRECTIONS[row["drift"]]) * 14, atol=0.5), (row, travelled)
        amount = ink(frames.numpy()).sum(axis=(1, 2))
        assert amount.min() > 0.95 * amount.max()  # the whole digit in every frame


def test_the_same_seed_makes_the_same_two_speed_set(tmp_path, two_speed):
    make_two_speed_digits(tmp_path / "again", seed=5, train_per_class=1, val_per_class=1, progress=False)
    for name in ("train.csv", "val.csv", "digits.json"):
        assert (tmp_path / "again" / name).read_text() == (two_speed / name).read_text()
    first, _ = read_video(two_speed / "val" / "00011.mp4")
    again, _ = read_video(tmp_path / "again" / "val" / "00011.mp4")
    assert (first.int() - again.int()).abs().max().item() <= 2  # libx264 promises no bit-identical output


def test_two_speed_and_game_are_refused_together(tmp_path, capsys):
    assert vidtwin(["demo", "digits", str(tmp_path / "out"), "--two-speed", "--game"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "vidtwin demo digits: error: --two-speed and --game make different data sets; choose one"]
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def checker(two_speed):
    return SplitChecker(two_speed)


def test_the_checker_reads_the_real_validation_clips(checker, two_speed):
    clips = clips_from_csv(two_speed / "val.csv")
    figures = checker.score(read_frames(clips))
    assert figures["clips"] == 120
    assert figures["drift_accuracy"] == figures["shake_accuracy"] == 1.0, figures
    assert figures["digit_accuracy"] >= 0.9, figures  # digit images the classifier never trained on
    # Labels that a clip does not show are read as wrong: the checker reads the frames, not the CSV.
    clip = clips[0]
    other_drift = next(drift for drift in DIRECTIONS if drift != clip.drift)
    other_shake = next(shake for shake in SHAKES if shake != clip.shake)
    mislabelled = replace(clip, drift=other_drift, shake=other_shake)
    assert checker.score(read_frames([mislabelled]))["drift_accuracy"] == 0.0
    assert checker.score(read_frames([mislabelled]))["shake_accuracy"] == 0.0


def render(image_index, drift, shake, seed=0):
    images, _ = load_digit_images()
    positions = two_speed_positions(np.random.default_rng(seed), drift, shake, num_frames=16, free=32)
    return render_clip(render_sprite(images[image_index], 32), positions, 64)


def test_the_checker_reads_digit_drift_and_shake_of_rendered_clips(checker):
    images, labels = load_digit_images()
    index = checker.settings["images"]["val"][3]
    digit = int(labels[index])
    for drift in DIRECTIONS:
        for shake in SHAKES:
            assert checker.read(render(index, drift, shake, seed=len(drift))) == (digit, drift, shake)
    slopes, amplitudes = track_motion(centroids(ink(render(index, "left", "vertical"))))
    assert np.allclose(slopes, [-1, 0], atol=0.01) and np.allclose(amplitudes, [0, 2], atol=0.01)
    # A still digit has neither drift nor shake; a digit shaking by 1 px (below the threshold) reads no shake;
    # a blank clip reads nothing at all.
    still = render_clip(render_sprite(images[index], 32), np.array([[10, 20]] * 16), 64)
    assert checker.read(still) == (digit, None, "none")
    small_shake = np.array([[10 + t % 2, 5 + t] for t in range(16)])  # x: 10, 11, 10, ... (+-0.5 px)
    assert checker.read(render_clip(render_sprite(images[index], 32), small_shake, 64))[1:] == ("down", "none")
    assert checker.read(np.zeros((16, 64, 64, 3), np.uint8)) == (None, None, None)


def test_crossed_clips_are_scored_against_both_sources(checker):
    images, labels = load_digit_images()
    first, second = checker.settings["images"]["val"][0], checker.settings["images"]["val"][-1]
    a = SplitClip(None, int(labels[first]), "left", "none")
    b = SplitClip(None, int(labels[second]), "down", "vertical")
    assert a.digit != b.digit
    paper = render(first, "left", "vertical")  # A's digit and drift, B's shake
    content_motion = render(first, "down", "vertical")  # A's digit, B's drift and shake
    copied = render(second, "down", "vertical")  # B's clip: the structure ignored
    figures = checker.score_crossed([(paper, a, b), (content_motion, a, b), (copied, a, b), (paper, a, b)])
    assert figures == {"pairs": 4, "digit_from_structure": 0.75, "digit_from_dynamics": 0.25,
                       "drift_from_structure": 0.5, "drift_from_dynamics": 0.5, "shake_from_structure": 0.0,
                       "shake_from_dynamics": 1.0, "paper_split": 0.5, "content_motion_split": 0.25}
    assert targets_met(figures) == {"paper_split": False, "content_motion_split": False}
    assert targets_met({**figures, "digit_from_structure": 0.9, "drift_from_structure": 0.8}) == {
        "paper_split": True, "content_motion_split": False}


def test_pairs_differ_in_digit_drift_and_shake_and_follow_the_seed(two_speed):
    clips = clips_from_csv(two_speed / "val.csv")
    pairs = split_pairs(clips, 50, seed=1)
    assert len(pairs) == 50 == len(set(pairs)) and pairs == split_pairs(clips, 50, seed=1)
    assert pairs != split_pairs(clips, 50, seed=2)
    assert all(a.digit != b.digit and a.drift != b.drift and a.shake != b.shake for a, b in pairs)
    same_shake = [clip for clip in clips if clip.shake == "none"]
    with pytest.raises(CheckSplitError, match="differ in digit, drift and shake"):
        split_pairs(same_shake, 5)


def test_check_split_runs_end_to_end_on_a_tiny_untrained_autoencoder(two_speed, checker, tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from vidtwin.checkpoint import load_model

    data = tmp_path / "data"  # the set with its first 12 validation clips: a short real-clip check
    data.mkdir()
    (data / "digits.json").write_text((two_speed / "digits.json").read_text())
    (data / "val.csv").write_text("".join((two_speed / "val.csv").read_text().splitlines(keepends=True)[:13]))
    (data / "val").symlink_to(two_speed / "val")
    weights = tmp_path / "untrained.safetensors"
    save_file(load_model("tiny_digits_twin").state_dict(), str(weights))
    monkeypatch.setattr("vidtwin.cli.demo_check_split.SplitChecker", lambda data: checker)  # trained once per module
    report = tmp_path / "split.json"
    assert vidtwin(["demo", "check-split", str(data), "--config", "tiny_digits_twin", "--ckpt", str(weights),
                    "--pairs", "3", "--seed", "4", "--json", str(report), "--device", "cpu"]) == 0
    figures = json.loads(report.read_text())
    assert figures["crossed"]["pairs"] == 3 and figures["seed"] == 4
    assert 3 <= figures["reconstructed"]["clips"] <= 6 and figures["real"]["clips"] == 12
    assert set(figures["crossed"]) >= {"digit_from_structure", "drift_from_structure", "drift_from_dynamics",
                                       "shake_from_dynamics", "shake_from_structure", "digit_from_dynamics"}
    assert set(figures["targets_met"]) == {"paper_split", "content_motion_split"}
    table = capsys.readouterr().out
    assert "A (structure)" in table and "the paper's split" in table and f"wrote {report}" in table
    # The output rules: an existing report needs --overwrite.
    assert vidtwin(["demo", "check-split", str(data), "--config", "tiny_digits_twin", "--ckpt", str(weights),
                    "--pairs", "3", "--json", str(report)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_check_split_refuses_a_data_set_without_two_speeds(tmp_path, capsys):
    make_moving_digits(tmp_path / "plain", seed=0, train_per_class=1, val_per_class=1, progress=False)
    assert vidtwin(["demo", "check-split", str(tmp_path / "plain"), "--ckpt", "none.safetensors"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"vidtwin demo check-split: error: {tmp_path / 'plain'} is a Moving Digits set without the two "
                     f"speeds; make one with `vidtwin demo digits {tmp_path / 'plain'} --two-speed`"]


@pytest.mark.parametrize("name, ratio", [("tiny_digits_twin", 0.0), ("tiny_digits_twin_shuffle", 1.0)])
def test_the_two_speed_configs_load_and_build_the_demo_autoencoder(name, ratio):
    from vidtwin.checkpoint import load_model
    from vidtwin.config import load_config

    config = load_config(name)
    assert config.data.params.train.meta_path == "data/two_speed_digits/train.csv"
    assert config.data.params.validation.meta_path == "data/two_speed_digits/val.csv"
    assert config.lightning.trainer.precision == 32  # both split worse in bf16-mixed (docs/benchmarks.md)
    model = load_model(name)
    assert model.config.input_size == (16, 64, 64) and model.config.shuffle_content_ratio == ratio
    assert not model.config.shuffle_content  # it changes nothing in this model: the ratio is the lever
