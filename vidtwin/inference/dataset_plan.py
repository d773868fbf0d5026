"""What ``encode-dataset`` encodes: the source list, each rank's share, and the clips of a video.

Clips are made exactly as ``inference.py encode --spatial resize`` makes them (see
:mod:`vidtwin.inference.clips`): every ``round(fps / sample_fps)``-th frame, at most
``max_frames`` of them, cut into clips of ``T`` frames (the last one padded by repeating the last
frame), each resized on its short side and center-cropped to the model's size. Frames are
decoded one clip at a time, so memory does not depend on a video's length.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm.auto import tqdm

from vidtwin.data.dataset import list_folder_videos, read_meta_videos
from vidtwin.data.transforms import preprocess_clip
from vidtwin.data.video_io import FrameReader, VideoReadError, probe_video, sample_indices
from vidtwin.inference.clips import ClipLayout
from vidtwin.inference.options import InferenceError
from vidtwin.latents.labels import video_key
from vidtwin.latents.shards import source_fingerprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSource:
    """One video to encode: its name as given (index key) and where it is."""

    order: int  # position in the input list; the index is sorted by it
    name: str  # the CSV entry, or the path relative to the input folder
    path: str
    size_bytes: int  # the share balancing weight; 0 when the file is missing


def list_sources(input_path: str, data_dir: str | None = None) -> list[VideoSource]:
    """Videos of a folder (searched recursively) or of a meta CSV's ``videos`` column.

    CSV entries are relative to ``data_dir`` (default: the CSV's folder), as in training. A video
    listed twice is encoded once, under its first name: one file, however its path is spelled
    (``train/x.mp4``, ``./train/x.mp4``, a link to it; see :func:`~vidtwin.latents.labels.video_key`),
    so that it gets one set of clips and one label. Raises :class:`InferenceError` for a missing
    input, a folder without videos, or a CSV without a ``videos`` column.
    """
    source = Path(input_path)
    if source.is_dir():
        if data_dir is not None:
            raise InferenceError("--data-dir is for a CSV --input; with a folder --input, paths are relative to that folder")
        paths = list_folder_videos(str(source))
        names = [os.path.relpath(path, source) for path in paths]
        root = source
        if not names:
            raise InferenceError(f"input folder {source} contains no video files (searched recursively)")
    elif source.is_file():
        if source.suffix.lower() != ".csv":
            raise InferenceError(f"--input must be a folder of videos or a meta .csv with a 'videos' column, got {source}")
        root = Path(data_dir) if data_dir is not None else source.parent
        if not root.is_dir():
            raise InferenceError(f"--data-dir {root} does not exist or is not a folder")
        try:
            names = read_meta_videos(str(source))
        except UnicodeDecodeError:
            raise InferenceError(f"{source} is not a UTF-8 text CSV") from None
        except ValueError as error:
            raise InferenceError(str(error)) from None
        if not names:
            raise InferenceError(f"{source} lists no videos in its 'videos' column")
        paths = [str(root / name) for name in names]
    else:
        raise InferenceError(f"input {source} does not exist")
    first_seen: dict[tuple, tuple[str, str]] = {}  # video_key -> (name, path) of its first listing
    for name, path in zip(names, paths):
        first = first_seen.setdefault(video_key(root, name), (name, path))[0]
        if first != name and source.is_dir():  # a CSV's repeats are its own; a folder's are links
            logger.warning("%s is the same file as %s in %s: encoded once, as %s", name, first, source, first)
    return [VideoSource(order, name, path, _size(path)) for order, (name, path) in enumerate(first_seen.values())]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def parse_devices(text: str) -> int | str:
    """``--devices``: a number of processes per node (>= 1), ``auto``, ``-1`` (all GPUs) or GPU
    ids such as ``0,1``; as Lightning takes it. Raises :class:`InferenceError` for anything else."""
    text = str(text).strip()
    if text in ("auto", "-1"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    ids = text.rstrip(",").split(",")
    if "," in text and all(part.strip().isdigit() for part in ids):
        return text
    raise InferenceError(f"--devices must be a number of processes per node (1 or more), 'auto', or GPU ids such as 0,1; got {text!r}")


def check_accelerator(accelerator: str, devices: int | str) -> None:
    """Refuse GPUs that this machine does not have, before anything is written (Lightning would
    stop later with an internal error and leave an empty output folder)."""
    import torch

    if accelerator not in ("gpu", "cuda"):
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not available:
        raise InferenceError(f"--accelerator {accelerator}: no GPU is available here; use --accelerator cpu (or auto)")
    if isinstance(devices, int) and devices > available:
        raise InferenceError(f"--devices {devices}: this machine has {available} GPU(s); use at most {available}")


def check_launcher(num_nodes: int) -> None:
    """Refuse ``--num-nodes`` above 1 in a process that no multi-node launcher started.

    Lightning alone starts the processes of one node and then waits for the other nodes' forever;
    torchrun (RANK, WORLD_SIZE), srun (SLURM_NTASKS), LSF, MPI, or a hand-made launch that sets
    NODE_RANK on each node, start them.
    """
    if num_nodes <= 1:
        return
    env = os.environ
    from lightning_fabric.plugins.environments import LSFEnvironment, SLURMEnvironment

    launched = (("RANK" in env and "WORLD_SIZE" in env) or "NODE_RANK" in env or "OMPI_COMM_WORLD_SIZE" in env
                or SLURMEnvironment.detect() or LSFEnvironment.detect())
    if not launched:
        raise InferenceError(
            f"--num-nodes {num_nodes} needs a launcher that starts this command on every node (torchrun --nnodes "
            f"{num_nodes} ..., or srun), and none started it (no RANK/WORLD_SIZE, SLURM or NODE_RANK in the environment); "
            "see 'Many processes, GPUs and nodes' in docs/datasets.md"
        )


def assign_shares(sources: list[VideoSource], world_size: int) -> list[list[VideoSource]]:
    """Split the videos into ``world_size`` disjoint shares of about equal total file size.

    Largest first, each to the currently lightest share (ties: the lower rank): deterministic, so
    every rank computes the same split on its own. Each share keeps input order.
    """
    loads = [0] * world_size
    shares: list[list[VideoSource]] = [[] for _ in range(world_size)]
    for source in sorted(sources, key=lambda s: (-s.size_bytes, s.order)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shares[rank].append(source)
        loads[rank] += max(source.size_bytes, 1)
    return [sorted(share, key=lambda s: s.order) for share in shares]


# ----------------------------------------------------------------------------------------------
# the clips of a share, decoded in DataLoader workers
# ----------------------------------------------------------------------------------------------


# encode-dataset's default batch holds as many clips as the pixels of one clip of the published model
# (16x224x224): a small model's clips then share a forward pass, where one clip per pass leaves its
# little work to per-call overhead (the Moving Digits game's tokens encode twice as fast), while
# a batch never takes more activation memory than one published clip.
DEFAULT_BATCH_PIXELS = 16 * 224 * 224


@dataclass(frozen=True)
class ClipSampling:
    """How videos become model inputs: recorded in the manifest and checked on resume."""

    clip_len: int  # T
    size: tuple[int, int]  # (h, w) of a model input
    sample_fps: float | None
    max_frames: int | None

    def to_dict(self) -> dict:
        return {"input_size": [self.clip_len, *self.size], "sample_fps": self.sample_fps,
                "max_frames": self.max_frames, "spatial": "resize"}

    def default_batch_clips(self) -> int:
        """Clips per forward pass when ``--batch-clips`` is not given (see ``DEFAULT_BATCH_PIXELS``)."""
        return max(1, DEFAULT_BATCH_PIXELS // (self.clip_len * self.size[0] * self.size[1]))

    def sampled_frames(self, info) -> list[int]:
        """The source frame numbers kept of a video (``info``: its :func:`probe_video`)."""
        return sample_indices(info.num_frames, info.fps, self.sample_fps, num_samples=self.max_frames)

    def clip_layout(self, info) -> ClipLayout:
        """How the kept frames of a video are cut into clips: clip ``k`` holds kept frames ``[k*T, (k+1)*T)``."""
        return ClipLayout(len(self.sampled_frames(info)), self.clip_len)


def count_clips(sources: list[VideoSource], sampling: ClipSampling, progress: bool = False) -> dict[str, int]:
    """Video name -> the number of clips encode-dataset cuts from it, from each video's header
    (no frame is decoded). Videos that cannot be read are left out: encoding reports them."""
    counts = {}
    for source in tqdm(sources, desc="counting clips", unit="video", disable=not progress or len(sources) < 100):
        try:
            counts[source.name] = sampling.clip_layout(probe_video(source.path)).num_clips
        except VideoReadError:
            continue
    return counts


class ClipStream(IterableDataset):
    """The clips of one rank's videos, one item per clip, skipping clips already encoded.

    With DataLoader workers, worker ``k`` of ``W`` decodes videos ``k, k + W, ...`` of the share, so
    decoding overlaps the model. Items are dicts (see :func:`collate_clip_items`):

    - a clip: ``pixels`` float32 ``(3, T, h, w)`` in [-1, 1] and ``row`` (the shard row, and
      ``source``: the video's :func:`~vidtwin.latents.shards.source_fingerprint`);
    - a failure: ``failure`` ``(video name, reason)`` for a video that could not be read;
    - ``video_done``: True on the last item of a video this run reads (one that earlier runs finished
      is counted in the progress bar's start instead); ``decode_seconds``: time spent decoding.
    """

    def __init__(self, videos: list[VideoSource], sampling: ClipSampling, done: dict[str, set[int]], finished: set[str]):
        super().__init__()
        self.videos = videos
        self.sampling = sampling
        self.done = done  # video name -> clip numbers already in finished shards
        self.finished = finished  # videos all of whose clips are in finished shards: not even opened

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        mine = self.videos if worker is None else self.videos[worker.id :: worker.num_workers]
        for video in mine:
            yield from self._clips_of(video)

    def _clips_of(self, video: VideoSource) -> Iterator[dict]:
        sampling, started = self.sampling, time.perf_counter()
        if video.name in self.finished:
            # Counted already: the progress bar starts at the share's finished videos.
            yield {"video_done": False, "decode_seconds": 0.0}
            return
        try:
            try:  # what the video is now, before its frames are read: recorded in the shards of its clips
                source = source_fingerprint(video.path)
            except OSError:
                source = None  # probing it reports why it cannot be read
            info = probe_video(video.path)
            sampled = sampling.sampled_frames(info)
            stride = sampled[1] - sampled[0] if len(sampled) > 1 else 1
            layout = sampling.clip_layout(info)
            todo = [c for c in range(layout.num_clips) if c not in self.done.get(video.name, ())]
            wanted = [[sampled[i] for i in layout.clip_frame_indices(c)] for c in todo]  # source frame numbers per clip
            if not todo:
                yield {"video_done": True, "decode_seconds": time.perf_counter() - started}
            with FrameReader(video.path) as reader:  # one open decoder walks forward through the video
                for position, clip in enumerate(todo):
                    pixels = preprocess_clip(reader.read(wanted[position]), sampling.size)  # (3, T, h, w) in [-1, 1]
                    row = {
                        "video": video.name, "clip": clip, "first_frame": wanted[position][0],
                        "num_frames": layout.valid_frames(clip), "fps": info.fps / stride,
                        "video_frames": layout.num_frames, "video_clips": layout.num_clips,
                        "height": info.height, "width": info.width, "source": source,
                    }
                    now = time.perf_counter()
                    yield {"pixels": pixels, "row": row, "video_done": position == len(todo) - 1,
                           "decode_seconds": now - started}
                    started = time.perf_counter()
        except VideoReadError as error:
            yield {"failure": (video.name, str(error)), "video_done": True, "decode_seconds": time.perf_counter() - started}


def collate_clip_items(items: list[dict]) -> dict:
    """A batch of ClipStream items: ``pixels`` ``(B, 3, T, h, w)`` (None without clips), ``rows``,
    ``failures``, ``videos_done`` and ``decode_seconds``."""
    clips = [item for item in items if "pixels" in item]
    return {
        "pixels": torch.stack([item["pixels"] for item in clips]) if clips else None,  # (B, 3, T, h, w)
        "rows": [item["row"] for item in clips],
        "failures": [item["failure"] for item in items if "failure" in item],
        "videos_done": sum(1 for item in items if item["video_done"]),
        "decode_seconds": sum(item["decode_seconds"] for item in items),
    }
