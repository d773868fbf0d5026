"""I3D features of clips, folded into running statistics as they are computed.

:func:`preprocess_for_i3d` is the preprocessing of ``cd-fvd`` (and TATS): uint8 frames, bilinear
resize to 224x224 (align_corners=False, no antialiasing, aspect ratio not kept), then
``2 x / 255 - 1``, in that order. :class:`FeatureAccumulator` batches clips of any frame size for
the network and adds each batch's features to a :class:`~vidtwin.fvd.stats.FeatureStats`; no list
of all features is ever kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .i3d import INPUT_SIZE, NUM_CLASSES
from .stats import FeatureStats


def preprocess_for_i3d(clips: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, H, W, 3)`` RGB in [0, 255] -> float32 ``(B, 3, T, 224, 224)`` in [-1, 1]."""
    if clips.dtype != torch.uint8 or clips.dim() != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips shaped (B, T, H, W, 3), got {clips.dtype} {tuple(clips.shape)}")
    batch, frames, height, width, channels = clips.shape
    images = clips.reshape(batch * frames, height, width, channels).float()  # (B*T, H, W, 3) in [0, 255]
    images = images.permute(0, 3, 1, 2).contiguous()  # (B*T, 3, H, W)
    images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    video = images.view(batch, frames, channels, INPUT_SIZE, INPUT_SIZE).transpose(1, 2)  # (B, 3, T, 224, 224)
    return 2.0 * video.contiguous() / 255.0 - 1.0


@torch.no_grad()
def i3d_features(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, H, W, 3)`` clips -> float32 ``(B, 400)`` logits on the CPU (fp32 throughout)."""
    device = next(model.parameters()).device
    return model(preprocess_for_i3d(clips).to(device)).float().cpu()


class FeatureAccumulator:
    """Collects clips, runs I3D on ``batch_clips`` of them at a time, and adds the features to ``stats``.

    Clips are resized to 224x224 when they arrive, so clips of different videos (and sizes) share
    a batch; at most ``batch_clips`` preprocessed clips are held. Call :meth:`flush` at the end.
    """

    def __init__(self, model: torch.nn.Module, batch_clips: int = 8, stats: FeatureStats | None = None):
        self.model = model
        self.batch_clips = batch_clips
        self.stats = stats if stats is not None else FeatureStats(NUM_CLASSES)
        self.device = next(model.parameters()).device
        self._pending: list[torch.Tensor] = []  # each (3, T, 224, 224)

    def add(self, clip: torch.Tensor) -> None:
        """One uint8 clip ``(T, H, W, 3)``."""
        self._pending.append(preprocess_for_i3d(clip[None])[0])
        if len(self._pending) >= self.batch_clips:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        if not self._pending:
            return
        batch = torch.stack(self._pending).to(self.device)  # (B, 3, T, 224, 224)
        self._pending = []
        self.stats.add(self.model(batch).float().cpu())  # (B, 400)
