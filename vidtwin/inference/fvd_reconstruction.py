"""Reconstruction FVD (rFVD): the input clips of a set of videos against their reconstructions.

``vidtwin evaluate --fvd`` feeds each video's (model-space input, reconstruction) chunks to
:class:`ReconstructionFVD` as they are scored. Both streams are quantized to uint8 (what a written
video holds), cut into every consecutive, non-overlapping clip of ``frames`` frames at ``stride``
(a remainder shorter than one clip is left out), and their I3D features folded into two running
statistics. A video's clips count only once it was scored to the end, so a video that fails part
way leaves no trace in the FVD. A failure of the FVD itself (I3D, the distance) never stops the
PSNR/SSIM scoring: it is recorded, the FVD work stops, and :meth:`ReconstructionFVD.result` raises
it once the per-video metrics are done.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from vidtwin.fvd.features import FeatureAccumulator
from vidtwin.fvd.i3d import NUM_CLASSES
from vidtwin.fvd.protocol import ClipProtocol, FVDError, protocol_report
from vidtwin.fvd.stats import FeatureStats, degenerate_features, fvd_of
from vidtwin.inference.fvd_sets import check_clip_count
from vidtwin.inference.pipeline import to_uint8_frames

logger = logging.getLogger(__name__)


class _ClipCutter:
    """Frames in, clips out: buffers a stream of frames and cuts consecutive clips of a protocol's span."""

    def __init__(self, protocol: ClipProtocol, accumulator: FeatureAccumulator):
        self.protocol, self.accumulator = protocol, accumulator
        self.buffer: list[torch.Tensor] = []  # uint8 (t, H, W, 3) chunks, fewer than one span in all

    def add(self, frames: torch.Tensor) -> None:
        self.buffer.append(frames)
        held = torch.cat(self.buffer)  # (n, H, W, 3)
        span = self.protocol.span
        while held.shape[0] >= span:
            self.accumulator.add(held[: span : self.protocol.stride])  # (frames, H, W, 3)
            held = held[span:]
        self.buffer = [held]


class ReconstructionFVDFailed(RuntimeError):
    """The reconstruction FVD could not be computed (the PSNR/SSIM scoring was not affected)."""


class ReconstructionFVD:
    """Running rFVD statistics over videos; ``start_video`` / ``add`` / ``end_video`` per video."""

    def __init__(self, model: torch.nn.Module, weights: dict, protocol: ClipProtocol, batch_clips: int = 8):
        if protocol.clips_per_video != 1 or protocol.resolution is not None:
            raise FVDError("reconstruction FVD takes every clip of the model-space frames; clips_per_video and resolution do not apply")
        self.model, self.weights, self.protocol, self.batch_clips = model, weights, protocol, batch_clips
        self.real, self.fake = FeatureStats(NUM_CLASSES), FeatureStats(NUM_CLASSES)
        self.videos = 0
        self.failure: Exception | None = None  # the first error of the FVD work; it stops that work only
        self._video: tuple[_ClipCutter, _ClipCutter] | None = None

    def _fail(self, error: Exception) -> None:
        self.failure, self._video = error, None
        logger.warning("the reconstruction FVD stopped (%s: %s); PSNR/SSIM scoring goes on", type(error).__name__, error)

    def start_video(self) -> None:
        if self.failure is None:
            self._video = tuple(_ClipCutter(self.protocol, FeatureAccumulator(self.model, self.batch_clips)) for _ in range(2))

    def add(self, reference: torch.Tensor, output: torch.Tensor) -> None:
        """One chunk of a video: model-space input and reconstruction, float ``(3, t, H, W)`` in [-1, 1]."""
        if self._video is None:
            return
        real, fake = self._video
        try:
            real.add(to_uint8_frames(reference))  # (t, H, W, 3)
            fake.add(to_uint8_frames(output))
        except Exception as error:  # noqa: BLE001 - any FVD failure must leave the per-video metrics alone
            self._fail(error)

    def end_video(self, scored: bool) -> None:
        """Count the video's clips when it was ``scored`` to the end; drop them otherwise."""
        video, self._video = self._video, None
        if not scored or video is None:
            return
        try:
            for cutter in video:
                cutter.accumulator.flush()
        except Exception as error:  # noqa: BLE001 - as in add
            self._fail(error)
            return
        for cutter, total in zip(video, (self.real, self.fake)):
            total.merge(cutter.accumulator.stats)
        self.videos += 1

    def result(self, source: str) -> dict | None:
        """``{"fvd": value, "protocol": {...}}`` over the videos counted so far; None (and a warning) under 2 clips.

        Raises ReconstructionFVDFailed when the FVD work failed, or the distance cannot be computed.
        """
        if self.failure is not None:
            raise ReconstructionFVDFailed(f"{type(self.failure).__name__}: {self.failure}") from self.failure
        try:
            check_clip_count(self.real.count, f"the scored reconstructions of {source}")
        except FVDError as error:  # videos failed after the checks; their PSNR/SSIM reports are still written
            logger.warning("no FVD: %s", error)
            return None
        warnings = [message for message in (degenerate_features(self.real, f"the input clips of {source}"),
                                            degenerate_features(self.fake, f"the reconstructions of {source}"))
                    if message is not None]
        for message in warnings:
            logger.warning("%s", message)
        try:
            value = fvd_of(self.real, self.fake)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
            raise ReconstructionFVDFailed(f"{type(error).__name__}: {error}") from error
        sets = {"source": source, "videos": self.videos, "clips": self.real.count}
        protocol = protocol_report(self.protocol, self.weights, {**sets, "what": "model-space input clips"},
                                   {**sets, "what": "their reconstructions"})
        protocol["clips_per_video"] = "every consecutive, non-overlapping clip (a shorter remainder is left out)"
        protocol["clip_starts"] = "0, span, 2 span, ... of each video"
        protocol["resolution_before_i3d"] = "the model's input size (the evaluated frames)"
        return {"fvd": value, "protocol": protocol, **({"warnings": warnings} if warnings else {})}
