"""Augmented training clips cut from the demo videos held in memory, for the quick start.

The demo has two training videos (bikes and Big Buck Bunny, a few hundred frames together), and the
quick start must generalise from them to a held-out clip (carphone) within minutes on a CPU. Two
things make that possible:

* **Variety.** Each clip is cut at a random place, time step (1 to ``max_frame_step`` source
  frames), scale, mirror and direction in time: a 64x64 window may cover the whole 720p frame
  downscaled, or a patch of it magnified, so the model sees both the large smooth regions of a
  low-resolution video and fine texture.
* **Cost.** The videos are decoded once, at most ``max_side`` pixels on the longer side, and every
  clip is then a crop and a small resize in memory (about a millisecond), so no loader worker
  process has to compete with training for the CPU cores.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .video_io import probe_video, read_frames

logger = logging.getLogger(__name__)


def _decode_small(path: str, max_side: int) -> torch.Tensor:
    """Every frame of ``path`` as uint8 (N, 3, H, W), downscaled so that max(H, W) <= max_side."""
    info = probe_video(path)
    frames = read_frames(path, list(range(info.num_frames)))  # (N, H, W, 3) uint8
    frames = frames.permute(0, 3, 1, 2)  # (N, 3, H, W)
    height, width = frames.shape[-2:]
    scale = max_side / max(height, width)
    if scale < 1:
        size = (round(height * scale), round(width * scale))
        resized = [F.interpolate(chunk.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
                   for chunk in frames.split(16)]  # (n, 3, h, w) each: 16 frames at a time bounds the float copy
        frames = torch.cat(resized).round_().clamp_(0, 255).to(torch.uint8)  # (N, 3, h, w)
    return frames.contiguous()


class DemoClipDataset(Dataset):
    """Randomly augmented clips of the demo training videos, decoded once into memory.

    Args:
        video_paths: the videos to cut clips from (the demo's bikes and Big Buck Bunny by default).
        sample_num_frames: T, frames per clip.
        input_height, input_width: clip size (h, w).
        clips_per_epoch: length of the dataset (every item is a fresh random clip).
        max_frame_step: the step between a clip's source frames is drawn from 1..max_frame_step.
        min_scale, max_scale: output pixels per stored pixel, drawn log-uniformly; below 1 a larger
            window is shrunk (zoomed out), above 1 a smaller one is magnified. The window never
            exceeds the stored frame, which caps the zoom-out.
        flip: mirror half of the clips left-right.
        reverse: play half of the clips backwards.
        max_side: longer side of the frames kept in memory.
        seed: when given, item ``i`` is a fixed function of (seed, i); None uses the global torch RNG.

    Items are dicts as :class:`VideoDataset` gives them: ``video`` float32 (3, T, h, w) in [-1, 1],
    ``path`` str, ``fps`` float (the source frame rate divided by the step).
    """

    def __init__(
        self,
        video_paths: Sequence[str] | None = None,
        sample_num_frames: int = 8,
        input_height: int = 64,
        input_width: int = 64,
        clips_per_epoch: int = 1000,
        max_frame_step: int = 4,
        min_scale: float = 0.1,
        max_scale: float = 2.0,
        flip: bool = True,
        reverse: bool = True,
        max_side: int = 640,
        seed: int | None = None,
    ):
        super().__init__()
        if video_paths is None:
            from .demo import demo_train_videos

            video_paths = demo_train_videos()
        for name, value in [("sample_num_frames", sample_num_frames), ("input_height", input_height),
                            ("input_width", input_width), ("clips_per_epoch", clips_per_epoch),
                            ("max_frame_step", max_frame_step), ("max_side", max_side)]:
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale} and {max_scale}")
        self.paths = [str(path) for path in video_paths]
        self.num_frames = int(sample_num_frames)
        self.size = (int(input_height), int(input_width))
        self.clips_per_epoch = int(clips_per_epoch)
        self.max_frame_step = int(max_frame_step)
        self.scale_range = (float(min_scale), float(max_scale))
        self.flip, self.reverse = bool(flip), bool(reverse)
        self.max_side = int(max_side)
        self.seed = seed
        self._frames: list[torch.Tensor] | None = None  # per video uint8 (N, 3, H, W), decoded on first use
        self._fps = [probe_video(path).fps for path in self.paths]

    def __len__(self) -> int:
        return self.clips_per_epoch

    @property
    def num_bad(self) -> int:
        """Unreadable videos skipped (always 0: a demo video that fails to decode is an error)."""
        return 0

    def _videos(self) -> list[torch.Tensor]:
        if self._frames is None:
            self._frames = [_decode_small(path, self.max_side) for path in self.paths]
            logger.info("demo clips: %s decoded into memory",
                        ", ".join(f"{tuple(v.shape)}" for v in self._frames))
        return self._frames

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + index)

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=generator))

        def draw(count: int) -> int:
            return int(torch.randint(0, count, (), generator=generator))

        videos = self._videos()
        video_index = draw(len(videos))
        frames = videos[video_index]  # (N, 3, H, W) uint8
        total, _, height, width = frames.shape

        step = 1 + draw(self.max_frame_step)
        step = max(1, min(step, (total - 1) // max(self.num_frames - 1, 1)))  # a short video limits the step
        span = (self.num_frames - 1) * step + 1
        start = draw(max(total - span, 0) + 1)
        indices = [min(start + i * step, total - 1) for i in range(self.num_frames)]

        out_h, out_w = self.size
        # The window must fit the frame: that bounds the zoom-out (scale = output px per stored px).
        lowest = max(self.scale_range[0], out_h / height, out_w / width)
        highest = max(self.scale_range[1], lowest)
        scale = math.exp(uniform(math.log(lowest), math.log(highest)))
        window_h = min(height, max(1, round(out_h / scale)))
        window_w = min(width, max(1, round(out_w / scale)))
        top, left = draw(height - window_h + 1), draw(width - window_w + 1)

        clip = frames[indices, :, top:top + window_h, left:left + window_w].float()  # (T, 3, wh, ww)
        if (window_h, window_w) != (out_h, out_w):
            clip = F.interpolate(clip, size=(out_h, out_w), mode="bilinear", align_corners=False,
                                 antialias=window_h > out_h)  # (T, 3, h, w)
        if self.flip and draw(2):
            clip = clip.flip(-1)
        if self.reverse and draw(2):
            clip = clip.flip(0)
        clip = (clip / 127.5 - 1.0).clamp_(-1.0, 1.0)  # [0, 255] -> [-1, 1]
        return {"video": clip.permute(1, 0, 2, 3).contiguous(),  # (3, T, h, w)
                "path": self.paths[video_index], "fps": self._fps[video_index] / step}
