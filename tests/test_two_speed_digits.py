"""Two-speed Moving Digits: the data (vidtwin.demos.two_speed, `vidtwin demo digits --two-speed`), the
split checker (vidtwin.demos.split_checker) and `vidtwin demo check-split`."""

import csv
import json

import numpy as np
import pytest

from vidtwin.cli import main as vidtwin
from vidtwin.data.video_io import read_video
from vidtwin.demos.digit_checker import centroids, ink
from vidtwin.demos.moving_digits import DIRECTIONS, MovingDigitsError, make_moving_digits
from vidtwin.demos.two_speed import COLUMNS, SHAKES, class_names, two_speed_positions

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_speed(tmp_path_factory):
    """A small two-speed set: one training clip per class (120) and one validation clip per class."""
    out = tmp_path_factory.mktemp("two_speed") / "data"
    make_moving_digits(out, seed=5, train_per_class=1, val_per_class=1, two_speed=True, progress=False)
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
    make_moving_digits(tmp_path / "again", seed=5, train_per_class=1, val_per_class=1, two_speed=True, progress=False)
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
