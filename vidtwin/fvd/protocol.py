"""The choices that make one FVD number comparable with another, and which clips they pick.

FVD values measured under different protocols differ by tens of percent (clip length, frame
stride, number of clips, preprocessing, real split), so every choice is a field of
:class:`ClipProtocol` and goes into the report (:func:`protocol_report`).

The default is StyleGAN-V's ``fvd2048_16f`` sampling: one clip per video, of 16 consecutive frames
(stride 1) from the start of the video. With ``clips_per_video = K > 1`` the K clip starts are
spread evenly from the first frame to the last start that still fits (``clip_starts="even"``), or
drawn uniformly at random from that range (``clip_starts="random"``, reproducible from ``seed``
and the video's position in the list).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidtwin.errors import UserError

from .i3d import INPUT_SIZE, MIN_FRAMES

CLIP_STARTS = ("even", "random")
FEATURE_MODEL = "I3D Kinetics-400 (DeepMind TF-Hub port), 400-d pre-softmax logits"
RESIZE = (f"bilinear (align_corners=False, no antialiasing) to {INPUT_SIZE}x{INPUT_SIZE} without keeping the "
          "aspect ratio, then scaled from [0, 255] to [-1, 1] (the cd-fvd / TATS / VideoGPT convention)")
COVARIANCE = "biased (divided by N), float64 running sums; Frechet distance in float64 via a symmetric eigendecomposition"


class FVDError(ValueError, UserError):
    """FVD cannot be computed from what was given (weights, statistics, sets, protocol); one line, exit 2."""


@dataclass(frozen=True)
class ClipProtocol:
    """Which frames of each video make the clips that I3D sees.

    Attributes:
        frames: frames per clip (16 in every published FVD; I3D needs at least 9).
        stride: take every ``stride``-th frame inside a clip (1: consecutive frames).
        clips_per_video: clips taken from each video.
        clip_starts: ``"even"`` or ``"random"`` placement of several clips (see the module docstring).
        seed: seed of the random clip starts.
        resolution: when set, frames are resized on their short side (antialiased bilinear) and
            center-cropped to ``resolution x resolution`` before I3D's own resize, as a generator's
            training data is prepared; None feeds the decoded frames as they are.
    """

    frames: int = 16
    stride: int = 1
    clips_per_video: int = 1
    clip_starts: str = "even"
    seed: int = 0
    resolution: int | None = None

    def __post_init__(self) -> None:
        if self.frames < MIN_FRAMES:
            raise FVDError(f"--frames must be >= {MIN_FRAMES} (I3D pools time three times by 2 and then averages 2 steps), got {self.frames}")
        for option, value in (("--stride", self.stride), ("--clips-per-video", self.clips_per_video)):
            if value < 1:
                raise FVDError(f"{option} must be >= 1, got {value}")
        if self.clip_starts not in CLIP_STARTS:
            raise FVDError(f"--clip-starts must be one of {', '.join(CLIP_STARTS)}, got {self.clip_starts!r}")
        if self.resolution is not None and self.resolution < 1:
            raise FVDError(f"--resolution must be >= 1, got {self.resolution}")

    @property
    def span(self) -> int:
        """Frames of the video that one clip covers, first to last."""
        return (self.frames - 1) * self.stride + 1

    def clip_starts_of(self, num_frames: int, video_index: int = 0) -> list[int]:
        """First frame of each distinct clip of a video of ``num_frames`` frames, in increasing order.

        A video with fewer than ``clips_per_video`` possible starts gives each of them once: the
        same clip counted twice adds no information and shrinks the set's covariance. Random starts
        are drawn without replacement for the same reason. Raises FVDError when the video is
        shorter than one clip's span.
        """
        last_start = num_frames - self.span
        if last_start < 0:
            raise FVDError(self.too_short(num_frames))
        if self.clips_per_video == 1 and self.clip_starts == "even":
            return [0]
        count = min(self.clips_per_video, last_start + 1)
        if self.clip_starts == "even":
            if count == 1:
                return [0]
            return sorted({round(k * last_start / (count - 1)) for k in range(count)})
        rng = np.random.default_rng([self.seed, video_index])
        return sorted(int(s) for s in rng.choice(last_start + 1, size=count, replace=False))

    def clip_indices(self, start: int) -> list[int]:
        """Frame indices of the clip that starts at ``start``."""
        return list(range(start, start + self.span, self.stride))

    def too_short(self, num_frames: int) -> str:
        return (f"has {num_frames} frames, fewer than the {self.span} that one clip of {self.frames} frames at stride "
                f"{self.stride} spans; lower --frames or --stride, or leave the video out")

    def to_dict(self) -> dict:
        return {
            "frames_per_clip": self.frames,
            "frame_stride": self.stride,
            "clips_per_video": self.clips_per_video,
            "clip_starts": "the first frame" if self.clips_per_video == 1 and self.clip_starts == "even" else self.clip_starts,
            "seed": self.seed,
            "resolution_before_i3d": "native (as decoded)" if self.resolution is None else f"{self.resolution}x{self.resolution}",
            "crop": "none" if self.resolution is None else
                    f"short side resized to {self.resolution} (antialiased bilinear), center crop {self.resolution}x{self.resolution}",
        }

    def comparable_fields(self) -> dict:
        """What two sets' statistics must share to be compared (the seed and clip count may differ)."""
        fields = self.to_dict()
        fields.pop("seed")
        fields.pop("clips_per_video")
        fields.pop("clip_starts")
        return fields


def protocol_report(protocol: ClipProtocol, weights: dict, real: dict, fake: dict) -> dict:
    """The protocol section of an FVD report.

    weights: ``{"file": ..., "sha256": ...}``; real / fake: ``{"clips", "videos", "source", ...}``
    of each set (the real one may come from saved statistics).
    """
    return {
        "feature_model": FEATURE_MODEL,
        "weights": weights,
        "feature_precision": "fp32",
        "real": real,
        "fake": fake,
        "real_clips": real["clips"],
        "fake_clips": fake["clips"],
        **protocol.to_dict(),
        "i3d_resize": RESIZE,
        "statistics": COVARIANCE,
    }
