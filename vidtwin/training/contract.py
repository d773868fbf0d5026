"""What train.py needs from a model: the :class:`TrainingModule` contract.

``train.py --base CONFIG`` trains whatever LightningModule ``model.target`` names, as long as it
subclasses :class:`TrainingModule`. The run machinery (the progress bar and the checkpoint
interval in updates, ``max_steps``, ``--resume``, the stop on SIGTERM, the sample logger, the run
summary) talks to the module only through the members declared here:

==============================  ====================================================================
``train_step``                  updates applied so far (an int attribute). Counted by this class
                                under automatic optimization; a module with manual optimization
                                advances it itself after each complete update.
``lightning_steps_per_update``  how far Lightning's ``global_step`` advances per update (one per
                                optimizer stepped; default 1).
``update_in_progress``          True while an update spans several batches and is not finished
                                (gradient accumulation); a checkpoint is only taken when it is False.
``total_updates()``             the run's length in updates (``max_steps`` or the epochs' batches).
``training_samples(batch, n)``  named videos to show for a training batch, or None (default).
``monitored_metric``            the validation metric that ranks checkpoints (lower is better), or None.
``summary_commands(...)``       commands that use a finished run, for the run summary (default none).
``upgrade_checkpoint(ckpt)``    renames, in place, the entries of a checkpoint saved by an older
                                release (default: none); ``--resume`` checks the keys after it.
==============================  ====================================================================

Checkpoints carry the counters under :data:`TRAINING_STATE_KEY` (``{"train_step": ..., ...}``);
subclasses that override ``on_save_checkpoint`` / ``on_load_checkpoint`` call ``super()`` and may
add their own entries to that dict. Nothing else about the model is assumed: the autoencoder
(:class:`vidtwin.training.VidTwinLightningModule`) is one user, and a stub of a few lines in the
tests is another.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import torch

from ..config import ConfigError

logger = logging.getLogger(__name__)

TRAINING_STATE_KEY = "vidtwin_training"


class TrainingModule(pl.LightningModule):
    """A LightningModule that ``train.py`` can train, resume, stop safely and report on.

    Subclasses implement the usual Lightning hooks (``training_step``, ``configure_optimizers``,
    optionally ``validation_step``) and may override the members below; see the module docstring.
    """

    #: Validation metric (logged by the module) that ranks checkpoints and the run summary's
    #: "best" line; lower is better. None: no ranking (``lightning.checkpoint.keep: official`` needs one).
    monitored_metric: Optional[str] = None

    def __init__(self) -> None:
        super().__init__()
        self.train_step = 0  # updates applied; saved under TRAINING_STATE_KEY

    # ------------------------------------------------------------------ counting updates
    @property
    def lightning_steps_per_update(self) -> int:
        """How far Lightning's ``global_step`` advances per update: 1 per optimizer stepped."""
        return 1

    @property
    def update_in_progress(self) -> bool:
        """Whether the batches of an unfinished update have been seen (gradient accumulation inside
        the module). A checkpoint taken then would lose them; train.py waits for the update's end."""
        return False

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Automatic optimization: one optimizer step is one update. (Manual optimization never
        # calls this hook; such modules advance train_step themselves.)
        super().optimizer_step(*args, **kwargs)
        self.train_step += 1

    #: Batches per update: more than 1 where the module accumulates gradients itself.
    batches_per_update: int = 1

    def total_updates(self) -> int:
        """The run's length in updates, from ``max_steps`` or else the epochs' batches.

        Raises ConfigError for a run without either bound (a cosine schedule needs the length).
        """
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return math.ceil(trainer.max_steps / self.lightning_steps_per_update)
        batches = trainer.estimated_stepping_batches
        if not math.isfinite(batches):
            raise ConfigError("the run has no length, which a cosine schedule needs: set lightning.trainer.max_steps "
                              "or max_epochs")
        return max(int(batches) // self.batches_per_update, 1)

    # ------------------------------------------------------------------ what the run shows
    def training_samples(self, batch: Any, max_samples: int) -> Optional[Mapping[str, torch.Tensor]]:
        """Videos that show how training goes, for the sample logger; None when there are none.

        Returns named videos, each (b, 3, T, H, W) in [-1, 1] with the same shape, b <= max_samples;
        the logger shows them side by side in this order (e.g. input | reconstruction).
        """
        return None

    def summary_commands(self, run_dir: Path, config_path: Path, checkpoint: Path, datamodule: Any) -> dict[str, str]:
        """Ready commands that use the run's checkpoint, shown by the run summary: label -> command.

        ``config_path`` is the run's newest merged config, ``checkpoint`` its newest checkpoint.
        """
        return {}

    # ------------------------------------------------------------------ checkpoints
    def upgrade_checkpoint(self, checkpoint: dict) -> dict:
        """Rename, in ``checkpoint`` itself, what an older release of the module saved under other
        names; returns ``checkpoint``. ``train.py --resume`` compares the weights' names after this,
        and :meth:`on_load_checkpoint` calls it before Lightning loads them. Default: nothing to rename."""
        return checkpoint

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[TRAINING_STATE_KEY] = {
            "train_step": int(self.train_step),
            "lightning_steps_per_update": self.lightning_steps_per_update,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.upgrade_checkpoint(checkpoint)
        state = checkpoint.get(TRAINING_STATE_KEY)
        if state is None:
            logger.warning("checkpoint has no %s entry: training counters start at 0", TRAINING_STATE_KEY)
            return
        self.train_step = int(state["train_step"])


__all__ = ["TrainingModule", "TRAINING_STATE_KEY"]
