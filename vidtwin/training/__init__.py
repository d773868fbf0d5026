"""Training with PyTorch Lightning: the training contract, VidTwin's LightningModule, the latent
generator's and the world model's modules and their data module, schedules, EMA, callbacks, fine-tuning.

Entry point: ``vidtwin train --base tiny`` (see docs/training.md). ``vidtwin train`` trains any
:class:`TrainingModule` (see :mod:`vidtwin.training.contract`).
"""

from ..optional import require

require("pytorch_lightning", "train", "training")

from .contract import EMA_STATE_KEY, TRAINING_STATE_KEY, NonFiniteLossError, TrainingModule
from .module import VidTwinLightningModule
from .generator_module import GENERATOR_CHECKPOINT_KEY, GeneratorLightningModule
from .world_module import WorldLightningModule
from .latent_data import LatentDataModule

__all__ = ["TrainingModule", "VidTwinLightningModule", "NonFiniteLossError", "EMA_STATE_KEY", "TRAINING_STATE_KEY",
           "GeneratorLightningModule", "GENERATOR_CHECKPOINT_KEY", "LatentDataModule",
           "WorldLightningModule"]
