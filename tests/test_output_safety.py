"""No command writes over one of its inputs, whatever the flags; every output follows one set of rules.

``--overwrite`` permits replacing an earlier output, never an input: every file of an input set (a
folder, a CSV list and the videos it names, a model folder, the I3D weights) is compared with each
output by resolved path and by file identity, so that ``./a/../a`` spellings, symbolic and hard
links are caught. The demo checks' ``--json`` files follow the same rules (an existing file needs
``--overwrite``, the write is atomic, a full disk is one line). The refusals come before any model
loads, so the FVD cases need no real I3D weights.
"""

import json
import os
import re
import shutil

import pytest
import torch

from vidtwin.cli import main
from vidtwin.data.video_io import write_video
from vidtwin.inference.options import InferenceError
from vidtwin.inference.outputs import InputFiles, check_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


def one_error_line(code: int, err: str, prog: str, message: str, expected_code: int = 2) -> None:
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert code == expected_code, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------- the rule itself
def test_an_input_is_found_by_any_spelling_and_through_links(tmp_path):
    source = tmp_path / "data" / "clip.mp4"
    source.parent.mkdir()
    source.write_bytes(b"a video")
    os.link(source, tmp_path / "hard.mp4")
    (tmp_path / "soft.mp4").symlink_to(source)
    inputs = InputFiles([source])
    for spelling in (source, tmp_path / "data" / "." / ".." / "data" / "clip.mp4", tmp_path / "hard.mp4",
                     tmp_path / "soft.mp4"):
        assert inputs.find(spelling) == source, spelling
        with pytest.raises(InferenceError, match="is the input"):
            check_targets([spelling], inputs, overwrite=True)
    (tmp_path / "other.mp4").write_bytes(b"a video")  # the same bytes, another file
    assert inputs.find(tmp_path / "other.mp4") is None
    check_targets([tmp_path / "other.mp4"], inputs, overwrite=True)


# ------------------------------------------------------------------------------- vidtwin fvd
@pytest.fixture(scope="module")
def fvd_sets(tmp_path_factory):
    """Two folders of two short videos, a CSV listing the real ones, and a file in the weights' place."""
    root = tmp_path_factory.mktemp("fvd_outputs")
    frames = torch.randint(0, 255, (10, 16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for name in ("real", "fake"):
        (root / name).mkdir()
        for index in range(2):
            write_video(root / name / f"v{index}.mp4", frames.roll(index + (name == "fake"), dims=0), fps=10.0)
    (root / "list.csv").write_text("videos\nreal/v0.mp4\nreal/v1.mp4\n")
    (root / "i3d.pt").write_bytes(b"weights")
    return root


def _fvd_cases(root, t):
    """name -> (arguments that name an input as an output, the input that must survive)."""
    os.link(root / "real" / "v1.mp4", t / "hard_link.json")
    (t / "soft_link.json").symlink_to(root / "fake" / "v0.mp4")
    return {
        "a video of --fake": (["--output", root / "fake" / "v0.mp4"], root / "fake" / "v0.mp4"),
        "a video of --real, spelled another way": (["--output", root / "fake" / ".." / "real" / "." / "v1.mp4"],
                                                   root / "real" / "v1.mp4"),
        "--save-real-stats on a video of --real": (["--save-real-stats", root / "real" / "v0.mp4"], root / "real" / "v0.mp4"),
        "a hard link to a video of --real": (["--save-real-stats", t / "hard_link.json"], root / "real" / "v1.mp4"),
        "a symbolic link to a video of --fake": (["--output", t / "soft_link.json"], root / "fake" / "v0.mp4"),
        "a video listed in a --fake CSV": (["--fake", root / "list.csv", "--output", root / "real" / "v1.mp4"],
                                           root / "real" / "v1.mp4"),
        "the --fake CSV itself": (["--fake", root / "list.csv", "--output", root / "list.csv"], root / "list.csv"),
        "the I3D weights": (["--output", root / "i3d.pt"], root / "i3d.pt"),
    }


FVD_CASES = ["a video of --fake", "a video of --real, spelled another way", "--save-real-stats on a video of --real",
             "a hard link to a video of --real", "a symbolic link to a video of --fake", "a video listed in a --fake CSV",
             "the --fake CSV itself", "the I3D weights"]


@pytest.mark.parametrize("case", FVD_CASES)
def test_fvd_never_writes_over_an_input_even_with_overwrite(fvd_sets, tmp_path, capsys, case):
    arguments, kept = _fvd_cases(fvd_sets, tmp_path)[case]
    before = kept.read_bytes()
    argv = ["fvd", "--real", fvd_sets / "real", "--fake", fvd_sets / "fake", "--fvd-weights", fvd_sets / "i3d.pt",
            "--frames", "9", "--device", "cpu", "--quiet", "--overwrite"]
    for option, value in zip(arguments[::2], arguments[1::2]):  # a later --fake replaces the first
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    code = main([str(word) for word in argv])
    one_error_line(code, capsys.readouterr().err, "vidtwin fvd", "is the input")
    assert kept.read_bytes() == before


def test_fvd_refuses_an_existing_output_without_overwrite(fvd_sets, tmp_path, capsys):
    (tmp_path / "fvd.json").write_text("an earlier report")
    code = main(["fvd", "--real", str(fvd_sets / "real"), "--fake", str(fvd_sets / "fake"), "--fvd-weights",
                 str(fvd_sets / "i3d.pt"), "--output", str(tmp_path / "fvd.json"), "--quiet"])
    one_error_line(code, capsys.readouterr().err, "vidtwin fvd", "already exists; pass --overwrite")
    assert (tmp_path / "fvd.json").read_text() == "an earlier report"


# ------------------------------------------------------------------------------- the demo checks
@pytest.fixture(scope="module")
def world_game(tmp_path_factory):
    """The untrained world model of the play tests and a Moving Digits game of 8-frame clips it can start from."""
    from world_helpers import make_play_files

    from vidtwin.demos.moving_digits import make_moving_digits

    root = tmp_path_factory.mktemp("world_game")
    make_play_files(root / "play")
    make_moving_digits(root / "game", game=True, num_frames=8, speed=2, clips_per_video=3, train_videos=1,
                       val_videos=1, progress=False)
    samples = root / "samples"  # a folder as `vidtwin generate` names its clips
    samples.mkdir()
    first = (root / "game" / "val.csv").read_text().splitlines()[1].split(",")[0]
    shutil.copy(root / "game" / first, samples / "3-left_000.mp4")
    return root


def _world_args(root, json_path, *more):
    return ["demo", "check-world", str(root / "play" / "world"), "--data", str(root / "game"), "--num", "1",
            "--length", "1", "--batch", "1", "--device", "cpu", "--json", str(json_path), *map(str, more)]


def _generation_args(root, json_path, *more):
    return ["demo", "check-generation", str(root / "samples"), "--data", str(root / "game"), "--no-ceiling",
            "--json", str(json_path), *map(str, more)]


def test_demo_checks_never_write_their_json_over_an_input(world_game, tmp_path, capsys):
    game = world_game / "game"
    os.link(game / "digits.json", tmp_path / "settings_link.json")
    cases = [  # the first two replaced the file before, with no flag at all
        ("vidtwin demo check-generation", _generation_args(world_game, game / "digits.json"), game / "digits.json"),
        ("vidtwin demo check-world", _world_args(world_game, game / "val.csv"), game / "val.csv"),
        ("vidtwin demo check-world", _world_args(world_game, game / "val.csv", "--overwrite"), game / "val.csv"),
        ("vidtwin demo check-world", _world_args(world_game, tmp_path / "settings_link.json", "--overwrite"),
         game / "digits.json"),
        ("vidtwin demo check-world", _world_args(world_game, world_game / "play" / "world" / "config.json", "--overwrite"),
         world_game / "play" / "world" / "config.json"),
        ("vidtwin demo check-generation", _generation_args(world_game, world_game / "samples" / "3-left_000.mp4",
                                                           "--overwrite"), world_game / "samples" / "3-left_000.mp4"),
    ]
    for prog, argv, kept in cases:
        before = kept.read_bytes()
        code = main(argv)
        one_error_line(code, capsys.readouterr().err, prog, "is the input")
        assert kept.read_bytes() == before, argv


def test_demo_checks_need_overwrite_to_replace_an_earlier_json(world_game, tmp_path, capsys):
    (tmp_path / "earlier.json").write_text("{}")
    for prog, argv in (("vidtwin demo check-world", _world_args(world_game, tmp_path / "earlier.json")),
                       ("vidtwin demo check-generation", _generation_args(world_game, tmp_path / "earlier.json"))):
        code = main(argv)
        one_error_line(code, capsys.readouterr().err, prog, "already exists; pass --overwrite")
        assert (tmp_path / "earlier.json").read_text() == "{}"


# ------------------------------------------------------------------------------- full disks
class ScoreNothing:
    """The digit checker's interface without its classifier: this test is about the write, not the scores."""

    def __init__(self, data_dir):
        self.settings = json.loads((data_dir / "digits.json").read_text())

    def read(self, frames):
        return None, None


def test_check_world_on_a_full_disk_is_one_line_and_leaves_nothing(world_game, full_disk, capsys, monkeypatch):
    monkeypatch.setattr("vidtwin.cli.demo_check_world.DigitChecker", ScoreNothing)
    code = main(_world_args(world_game, full_disk / "world.json"))
    captured = capsys.readouterr()
    one_error_line(code, captured.err, "vidtwin demo check-world", "No space left on device")
    assert re.search(r"cannot write --json \S+world\.json: No space left on device; it was not written", captured.err)
    assert "rollouts" in captured.out  # the figures were printed before the write failed
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no temporary or claim file left


def test_a_damaged_settings_file_is_one_line_not_a_key_error(world_game, tmp_path, capsys):
    (tmp_path / "digits.json").write_text('{"generated": {"clips": 1}}')  # a report written over the settings once
    code = main(["demo", "check-generation", str(world_game / "samples"), "--data", str(tmp_path), "--no-ceiling"])
    one_error_line(code, capsys.readouterr().err, "vidtwin demo check-generation",
                   f"{tmp_path / 'digits.json'} lacks frame_size, digit_size, frames, speed, images")
