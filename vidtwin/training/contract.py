"""What ``vidtwin train`` needs from a model: the :class:`TrainingModule` contract.

``vidtwin train --base CONFIG`` trains whatever LightningModule ``model.target`` names, as long as
it subclasses :class:`TrainingModule`. The run machinery (the progress bar and the checkpoint
interval in updates, ``max_steps``, ``--resume``, the stop on SIGTERM, the sample logger, the run
summary, the latent data's resume order) talks to the module only through the members declared
here, and each has a default:

==============================  ====================================================================
``train_step``                  updates applied so far (an int attribute). Counted by
                                :meth:`~TrainingModule.complete_update`, which this class calls after
                                each optimizer step under automatic optimization; a module with
                                manual optimization calls it itself after each complete update.
``lightning_steps_per_update``  how far Lightning's ``global_step`` advances per update (one per
                                optimizer stepped; default 1).
``batches_per_update``          training batches per update (default: Lightning's
                                ``accumulate_grad_batches``); the latent data module starts a resumed
                                run at batch ``train_step * batches_per_update``.
``update_in_progress``          True while an update spans several batches and is not finished
                                (gradient accumulation); a checkpoint is only taken when it is False.
``total_updates()``             the run's length in updates (``max_steps`` or the epochs' batches).
``refused_trainer_settings()``  ``lightning.trainer`` settings the module does not take, with where
                                they are set instead (default: none under automatic optimization).
``training_samples(batch, n)``  named videos to show for a training batch, or None (default).
``monitored_metric``            the validation metric that ranks checkpoints (lower is better), or None.
``summary_commands(...)``       commands that use a finished run, for the run summary (default none).
``upgrade_checkpoint(ckpt)``    renames, in place, the entries of a checkpoint saved by an older
                                release (default: none); ``--resume`` checks the keys after it.
==============================  ====================================================================

The pieces every model's training shares live here too, so that a module states only what is its
own:

* **The EMA of the weights.** :meth:`~TrainingModule.use_ema` averages one submodule;
  :meth:`~TrainingModule.complete_update` moves the average after each update;
  :meth:`~TrainingModule.ema_weights` swaps it in (validation, sample videos); checkpoints store it
  under :data:`EMA_STATE_KEY` as a complete state_dict of that submodule, and a checkpoint without
  it restarts the average from the loaded weights. A checkpoint is refused while it is swapped in.
* **The stop on a non-finite loss.** :meth:`~TrainingModule.stop_on_nonfinite_loss` raises
  :class:`NonFiniteLossError` (the run ends with exit code 1 and the last checkpoint stays the
  newest); :meth:`~TrainingModule.loss_is_finite` is the check, agreed by every process. No
  checkpoint stores NaN or infinite weights (:class:`~vidtwin.training.callbacks.NonFiniteStateError`).

Checkpoints carry the counters under :data:`TRAINING_STATE_KEY` (``{"train_step": ..., ...}``);
subclasses that override ``on_save_checkpoint``, ``on_load_checkpoint``, ``on_fit_start`` or
``on_train_batch_start`` call ``super()`` and may add their own entries to that dict. Nothing else
about the model is assumed: the autoencoder (:class:`vidtwin.training.VidTwinLightningModule`),
the generator and the world model are users, and a stub of a few lines in the tests is another.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager, Mapping, Optional

import pytorch_lightning as pl
import torch
from torch import nn

from ..config import ConfigError
from ..pretrained import EMA_STATE_KEY, TRAINING_STATE_KEY
from .callbacks import assert_finite_state
from .ema import EMA

logger = logging.getLogger(__name__)



class NonFiniteLossError(RuntimeError):
    """Training stopped: the loss (or, for a module that skips such updates, too many updates in a
    row) was NaN or infinite."""


class TrainingModule(pl.LightningModule):
    """A LightningModule that ``vidtwin train`` can train, resume, stop safely and report on.

    Subclasses implement the usual Lightning hooks (``training_step``, ``configure_optimizers``,
    optionally ``validation_step``) and may override the members below; see the module docstring.
    """

    #: Validation metric (logged by the module) that ranks checkpoints and the run summary's
    #: "best" line; lower is better. None: no ranking (``lightning.checkpoint.keep: official`` needs one).
    monitored_metric: Optional[str] = None

    def __init__(self) -> None:
        super().__init__()
        self.train_step = 0  # updates applied; saved under TRAINING_STATE_KEY
        self.ema: Optional[EMA] = None  # see use_ema
        self._ema_attribute: Optional[str] = None  # the averaged submodule's attribute name
        self._restart_ema = False  # the loaded checkpoint had no average: restart it from the loaded weights
        self._batches_since_update = 0  # under automatic optimization: batches of the unfinished update

    # ------------------------------------------------------------------ counting updates
    @property
    def lightning_steps_per_update(self) -> int:
        """How far Lightning's ``global_step`` advances per update: 1 per optimizer stepped."""
        return 1

    @property
    def batches_per_update(self) -> int:
        """Training batches that make one update.

        Under automatic optimization Lightning accumulates (``lightning.trainer.accumulate_grad_batches``,
        1 before the module is attached to a trainer); a module that accumulates under manual
        optimization returns its own window.
        """
        if self.automatic_optimization and self._trainer is not None:
            return int(self._trainer.accumulate_grad_batches)
        return 1

    @property
    def update_in_progress(self) -> bool:
        """Whether the batches of an unfinished update have been seen (gradient accumulation). A
        checkpoint taken then would lose them; ``vidtwin train`` waits for the update's end.

        Counted here under automatic optimization; a module with manual optimization that
        accumulates overrides it."""
        return self._batches_since_update != 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.automatic_optimization:
            self._batches_since_update += 1

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Automatic optimization: one optimizer step (after Lightning's accumulation) is one update.
        # Manual optimization never calls this hook; such modules call complete_update themselves.
        super().optimizer_step(*args, **kwargs)
        self.complete_update()

    def complete_update(self) -> None:
        """Count an applied update: advance ``train_step`` and move the EMA towards the new weights."""
        self.train_step += 1
        self._batches_since_update = 0
        if self.ema is not None:
            self.ema.update(self._averaged_module())

    def total_updates(self) -> int:
        """The run's length in updates, from ``max_steps`` or else the epochs' batches.

        Raises ConfigError for a run without either bound (a cosine schedule needs the length).
        """
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return math.ceil(trainer.max_steps / self.lightning_steps_per_update)
        stepping = trainer.estimated_stepping_batches
        if not math.isfinite(stepping):
            raise ConfigError("the run has no length, which a cosine schedule needs: set lightning.trainer.max_steps "
                              "or max_epochs")
        if self.automatic_optimization:  # Lightning's estimate counts optimizer steps, its accumulation included
            return max(int(stepping), 1)
        return max(int(stepping) // self.batches_per_update, 1)  # it counts batches: the module accumulates

    def check_datamodule(self, datamodule: Any) -> None:
        """Raise ``ConfigError`` when ``datamodule`` cannot feed this module (e.g. windows of the wrong
        length). ``vidtwin train`` calls it before it claims the run directory, so a config that
        cannot train leaves nothing behind. Default: every data module fits."""

    def refused_trainer_settings(self) -> dict[str, str]:
        """``lightning.trainer`` settings that this module does not take: key -> what to do instead.

        ``vidtwin train`` refuses such a key with a value other than Lightning's default, and
        prints the advice. Default: none under automatic optimization (Lightning accumulates
        gradients and clips them); under manual optimization Lightning can do neither.
        """
        if self.automatic_optimization:
            return {}
        advice = "the module optimizes manually, and Lightning cannot accumulate or clip for it"
        return {"accumulate_grad_batches": advice, "gradient_clip_val": advice, "gradient_clip_algorithm": advice}

    # ------------------------------------------------------------------ EMA of the weights
    def use_ema(self, attribute: str, decay: Optional[float]) -> None:
        """Keep an exponential moving average of the weights of the submodule ``getattr(self, attribute)``
        (see :class:`~vidtwin.training.ema.EMA`), or none when ``decay`` is None.

        The module is named, not held: holding it would register it a second time.
        """
        self._ema_attribute = attribute
        self.ema = EMA(self._averaged_module(), decay) if decay is not None else None

    def _averaged_module(self) -> nn.Module:
        return getattr(self, self._ema_attribute)

    def ema_weights(self) -> ContextManager[None]:
        """A context in which the averaged submodule holds its EMA weights (a no-op without EMA)."""
        return self.ema.swapped_in(self._averaged_module()) if self.ema is not None else nullcontext()

    def on_fit_start(self) -> None:
        # After Lightning restored a resumed checkpoint's weights, before the first validation.
        if self._restart_ema:
            self.ema = EMA(self._averaged_module(), self.ema.decay)
            self._restart_ema = False

    # ------------------------------------------------------------------ clipping
    def scales_gradients(self) -> bool:
        """Whether the trainer's precision scales the loss (16-mixed's gradient scaler)."""
        plugin = self._trainer.precision_plugin if self._trainer is not None else None
        return getattr(plugin, "scaler", None) is not None

    def clip_gradient_norm(self, optimizer: Any, max_norm: float) -> None:
        """Clip the global norm of ``optimizer``'s gradients to ``max_norm``.

        Lightning's mixed-precision plugin refuses to clip for every fused optimizer, because with a
        gradient scaler such an optimizer unscales inside its step, after clipping would have run on
        scaled gradients. Without a scaler (32, bf16-mixed) the gradients are already true, so a
        fused optimizer is clipped here directly.
        """
        if getattr(optimizer, "optimizer", optimizer).defaults.get("fused"):  # unwraps a LightningOptimizer
            if self.scales_gradients():
                raise ConfigError("a fused optimizer cannot be clipped under precision 16-mixed (its gradient "
                                  "scaler unscales inside the step); set the optimizer's fused: false, or train "
                                  "in bf16-mixed or 32")
            self.trainer.precision_plugin.clip_grad_by_norm(optimizer, float(max_norm))
        else:
            self.clip_gradients(optimizer, gradient_clip_val=float(max_norm), gradient_clip_algorithm="norm")

    # ------------------------------------------------------------------ the stop on a non-finite loss
    def loss_is_finite(self, loss: torch.Tensor) -> bool:
        """Whether ``loss`` is finite on every process (so that all processes skip or stop together)."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self._trainer is None:
            return not bad
        return not self._trainer.strategy.reduce_boolean_decision(bad, all=False)

    def stop_on_nonfinite_loss(self, loss: torch.Tensor, what: str = "the loss") -> None:
        """Raise :class:`NonFiniteLossError` before the update when ``loss`` is NaN or infinite on any
        process; the last checkpoint stays the newest, to resume from with other settings."""
        if not self.loss_is_finite(loss):
            raise NonFiniteLossError(f"{what} is not finite at update {self.train_step}; lower "
                                     "model.params.learning_rate or set model.params.grad_clip, then resume")

    # ------------------------------------------------------------------ what the run shows
    def training_samples(self, batch: Any, max_samples: int) -> Optional[Mapping[str, torch.Tensor]]:
        """Videos that show how training goes, for the sample logger; None when there are none.

        Returns named videos, each (b, 3, T, H, W) in [-1, 1] with the same shape, b <= max_samples;
        the logger shows them side by side in this order (e.g. input | reconstruction).
        """
        return None

    def summary_commands(self, run_dir: Path, config_path: Path, checkpoint: Path, datamodule: Any) -> dict[str, str]:
        """Ready commands that use the run's checkpoint, shown by the run summary: label -> command
        (built with :func:`vidtwin.hints.command`).

        ``config_path`` is the run's newest merged config, ``checkpoint`` its newest checkpoint.
        """
        return {}

    # ------------------------------------------------------------------ checkpoints
    def upgrade_checkpoint(self, checkpoint: dict) -> dict:
        """Rename, in ``checkpoint`` itself, what an older release of the module saved under other
        names; returns ``checkpoint``. ``vidtwin train --resume`` compares the weights' names after
        this, and :meth:`on_load_checkpoint` calls it before Lightning loads them. Default: nothing
        to rename."""
        return checkpoint

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None and self.ema.is_swapped_in:
            raise RuntimeError("a checkpoint was requested while EMA weights were swapped in")
        # Refuse to write NaN/inf weights: the last good checkpoint must stay the newest one on disk.
        assert_finite_state(checkpoint["state_dict"], self.train_step)
        state = checkpoint[TRAINING_STATE_KEY] = {
            "train_step": int(self.train_step),
            "lightning_steps_per_update": self.lightning_steps_per_update,
        }
        if self.ema is not None:
            checkpoint[EMA_STATE_KEY] = self.ema.export_state_dict(self._averaged_module())
            state.update(ema_num_updates=self.ema.num_updates, ema_decay=self.ema.decay)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.upgrade_checkpoint(checkpoint)
        self._batches_since_update = 0  # gradients of an unfinished update are not saved
        state = checkpoint.get(TRAINING_STATE_KEY)
        if state is None:
            logger.warning("checkpoint has no %s entry: training counters start at 0", TRAINING_STATE_KEY)
            state = {}
        else:
            self.train_step = int(state["train_step"])
        if self.ema is not None:
            self._restart_ema = not self.ema.load_from_checkpoint(checkpoint, EMA_STATE_KEY,
                                                                  state.get("ema_num_updates", 0))


__all__ = ["TrainingModule", "TRAINING_STATE_KEY", "EMA_STATE_KEY", "NonFiniteLossError"]
