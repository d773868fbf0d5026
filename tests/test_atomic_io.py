"""Files written through vidtwin.atomic_io: atomic, and readable as a plain open() would make them."""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from vidtwin.atomic_io import ClaimHeld, atomic_path, atomic_write_text, claim_path, claimed
from vidtwin.data.video_io import write_video
from vidtwin.inference.evaluate import EvalItem, VideoScores, write_reports


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_permissions_of_open_under_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    atomic_write_text(tmp_path / "report.json", "{}")
    with atomic_path(tmp_path / "weights.pt") as temp:
        torch.save({"w": torch.zeros(2)}, temp)
    with atomic_path(tmp_path / "latents.safetensors") as temp:
        save_file({"w": torch.zeros(2)}, str(temp))  # safetensors 0.8 replaces the file with a 0600 one
    write_video(tmp_path / "clip.mp4", torch.zeros(2, 16, 16, 3, dtype=torch.uint8), fps=5.0)
    # evaluate's report set is staged in a temporary folder (made 0700 by mkdtemp) that becomes the output
    scores = VideoScores(EvalItem("clip.mp4"), per_frame={"psnr": torch.ones(2).numpy()}, fps=5.0)
    write_reports([scores], tmp_path / "eval", settings={})
    assert mode(tmp_path / "plain.txt") == expected
    for name in ("report.json", "weights.pt", "latents.safetensors", "clip.mp4", "eval/metrics.csv", "eval/summary.json"):
        assert mode(tmp_path / name) == expected, name
    assert mode(tmp_path / "eval") == 0o777 & ~mask  # a folder, as os.mkdir makes it


def test_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "keep.txt") as temp:
            temp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_claim_has_one_holder_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.mp4"
    with claimed(target):
        with pytest.raises(ClaimHeld, match=f"out.mp4 is claimed by pid {os.getpid()} on host"):
            with claimed(target):
                pass
        assert os.listdir(tmp_path) == [".out.mp4.claim"] and not target.exists()  # the final name is never touched
    assert os.listdir(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with claimed(target):
            raise KeyboardInterrupt  # Ctrl-C inside the block releases the claim too
    assert os.listdir(tmp_path) == []


def test_claims_of_the_longest_names_fit_and_stay_apart(tmp_path):
    names = ["x" * 240 + "a" * 11 + ".mp4", "x" * 240 + "b" * 11 + ".mp4"]  # 255 bytes each, a common beginning
    assert claim_path(tmp_path / names[0]) != claim_path(tmp_path / names[1])
    with claimed(tmp_path / names[0]), claimed(tmp_path / names[1]):
        assert all(len(name.encode()) <= 255 for name in os.listdir(tmp_path)) and len(os.listdir(tmp_path)) == 2
    assert os.listdir(tmp_path) == []


def test_claims_where_the_filesystem_has_no_locks(tmp_path, monkeypatch):
    """Some network filesystems refuse flock: the O_EXCL creation alone is then the claim."""
    import errno

    import vidtwin.atomic_io as atomic_io

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(atomic_io.fcntl, "flock", no_locks)
    with claimed(tmp_path / "out.mp4"):
        assert (tmp_path / ".out.mp4.claim").read_text().startswith(f"pid {os.getpid()} on host")
        with pytest.raises(ClaimHeld, match="delete the claim file if none runs"):
            with claimed(tmp_path / "out.mp4"):
                pass
    assert os.listdir(tmp_path) == []
