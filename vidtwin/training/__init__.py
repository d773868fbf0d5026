"""Training VidTwin with PyTorch Lightning: the LightningModule, schedules, EMA, callbacks, fine-tuning.

Entry point: ``python train.py --base configs/tiny.yaml`` (see docs/training.md).
"""

from ..optional import require

require("pytorch_lightning", "train", "training")

from .module import EMA_STATE_KEY, TRAINING_STATE_KEY, NonFiniteLossError, VidTwinLightningModule

__all__ = ["VidTwinLightningModule", "NonFiniteLossError", "EMA_STATE_KEY", "TRAINING_STATE_KEY"]
