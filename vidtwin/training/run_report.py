"""What a user sees during and after a training run: progress in updates, and a closing summary.

Lightning counts ``global_step`` once per optimizer (twice per update with the discriminator) and
shows epochs, which a ``max_steps`` run does not have ("Epoch 37/-2"). Here the progress bar counts
updates, as the configs do (``lightning.trainer.max_steps``), and every run that started training
ends with a summary: the run directory, the last checkpoint, the best value of the module's
``monitored_metric``, the TensorBoard command and the module's ready commands (the autoencoder's:
``vidtwin reconstruct``). Only the members of :class:`vidtwin.training.contract.TrainingModule`
are used, so any model that follows the contract gets the same progress and summary.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, ModelSummary
from pytorch_lightning.callbacks.progress import ProgressBar
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table
from tqdm.auto import tqdm

from .signals import StoppedBySignal

# Lightning's own end line counts global_step (e.g. "`max_steps=1200` reached" for 600 updates).
_LIGHTNING_STOP_LINE = "`Trainer.fit` stopped:"
# Progress-bar entries that the bar itself already shows.
_HIDDEN_METRICS = ("v_num", "train/step")


class HideLightningStopLine(logging.Filter):
    """Drops Lightning's "`Trainer.fit` stopped: `max_steps=...` reached." (the summary says why a run ended)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(_LIGHTNING_STOP_LINE)


def hide_lightning_stop_line() -> None:
    """Install HideLightningStopLine on the logger that Lightning's rank_zero_info writes to (once)."""
    target = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, HideLightningStopLine) for f in target.filters):
        target.addFilter(HideLightningStopLine())


# Lines Lightning prints while building a Trainer that tell a user nothing: the advertisement for
# its cloud logger, and that it will not add the model summary that we add ourselves.
_LIGHTNING_CHATTER = ("💡 Tip: For seamless cloud logging", "Trainer already configured with model summary callbacks")
# The plain model summary's FLOPs line ("0         Total Flops").
_ZERO_FLOPS_LINE = re.compile(r"^\s*0\s+Total Flops\s*$", re.IGNORECASE)


class HideLightningChatter(logging.Filter):
    """Drops Lightning's litlogger tip and its note on the model summary callback (_LIGHTNING_CHATTER)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(_LIGHTNING_CHATTER)


class ModelSummaryWithoutFlops(ModelSummary):
    """Lightning's model summary (a plain-text table, also without the ``rich`` package) minus its
    FLOPs column and total, which are always 0 here: Lightning counts FLOPs only for a module with
    an ``example_input_array``."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        if not total_flops:
            summary_data = [(name, column) for name, column in summary_data if name != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *summary_data)
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if not _ZERO_FLOPS_LINE.match(line))
        logging.getLogger("pytorch_lightning.callbacks.model_summary").info("\n" + table)


def quiet_lightning() -> None:
    """Hide what a training run prints that tells its user nothing: Lightning's stop line (the run
    summary says why the run ended), its litlogger tip, and the deprecation warning that Lightning's
    own ``_pytree`` module triggers in newer torch (nothing a user can act on). The zero FLOPs of
    the model summary are :class:`ModelSummaryWithoutFlops`'s business."""
    hide_lightning_stop_line()
    target = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, HideLightningChatter) for f in target.filters):
        target.addFilter(HideLightningChatter())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def planned_updates(trainer: pl.Trainer, module: Any) -> Optional[int]:
    """The run's length in updates, or None when it is not bounded (no max_steps and no max_epochs)."""
    try:
        return int(module.total_updates())
    except Exception:  # an unbounded run has no total; the bar then counts without one
        return None


def _format_value(value: Any) -> str:
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


class UpdateProgressBar(ProgressBar):
    """A progress bar over the run's updates (``pl_module.train_step``), with the
    progress-bar metrics (rec, psnr, val/psnr) as its postfix, and a transient bar per validation.
    Shown by the global-rank-zero process only."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._train_bar: Optional[tqdm] = None
        self._val_bar: Optional[tqdm] = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _shown(self, trainer: pl.Trainer) -> bool:
        return self._enabled and trainer.is_global_zero

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._shown(trainer):
            self._train_bar = tqdm(total=planned_updates(trainer, pl_module), initial=pl_module.train_step,
                                   desc="training", unit="update", dynamic_ncols=True, file=sys.stderr)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._train_bar is None:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k not in _HIDDEN_METRICS}
        self._train_bar.set_postfix({k: _format_value(v) for k, v in metrics.items()}, refresh=False)
        self._train_bar.update(pl_module.train_step - self._train_bar.n)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._shown(trainer) and not trainer.sanity_checking:
            total = sum(n for n in trainer.num_val_batches if math.isfinite(n)) or None
            self._val_bar = tqdm(total=total, desc="validating", unit="batch", leave=False, dynamic_ncols=True,
                                 file=sys.stderr)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._val_bar is not None:
            self._val_bar.update(1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._val_bar is not None:
            self._val_bar.close()
            self._val_bar = None

    def _close(self) -> None:
        for bar in (self._val_bar, self._train_bar):
            if bar is not None:
                bar.close()
        self._val_bar = self._train_bar = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        self._close()


class RunRecorder(pl.Callback):
    """Records what the summary reports: when training started, the validation metrics (the latest,
    and the best by the module's ``monitored_metric``), and the exception that ended the run, if one did."""

    def __init__(self) -> None:
        super().__init__()
        self.started: Optional[float] = None  # time.monotonic() at fit start
        self.monitored: Optional[str] = None  # the module's monitored_metric; lower is better
        self.latest: dict = {}
        self.best: dict = {}
        self.best_update: Optional[int] = None
        self.exception: Optional[BaseException] = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.started = time.monotonic()
        self.monitored = pl_module.monitored_metric

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or self.monitored is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if self.monitored not in metrics:
            return
        self.latest = metrics
        if not self.best or metrics[self.monitored] < self.best[self.monitored]:
            self.best, self.best_update = metrics, int(pl_module.train_step)

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        self.exception = exception

    def outcome(self, trainer: pl.Trainer, module: Any) -> "RunOutcome":
        """How the run ended: finished (its length reached), stopped (Ctrl+C, early stop) or failed."""
        updates = int(module.train_step)
        seconds = time.monotonic() - (self.started or time.monotonic())
        error = self.exception
        if isinstance(error, KeyboardInterrupt):
            return RunOutcome("stopped", "interrupted (Ctrl+C)", updates, seconds)
        if isinstance(error, StoppedBySignal):
            return RunOutcome("stopped", f"{error.signal_name} received, checkpoint written", updates, seconds)
        if error is not None:
            message = " ".join(str(error).split()) or type(error).__name__
            message = message if len(message) <= 200 else message[:197] + "..."
            return RunOutcome("failed", f"{type(error).__name__}: {message}", updates, seconds)
        planned = planned_updates(trainer, module)
        if planned is not None and updates >= planned:
            return RunOutcome("finished", f"all {planned} updates done", updates, seconds)
        if trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch >= trainer.max_epochs:
            return RunOutcome("finished", f"max_epochs={trainer.max_epochs} reached", updates, seconds)
        return RunOutcome("stopped", "stopped early", updates, seconds)


@dataclass
class RunOutcome:
    """How a run ended, for the summary: status is "finished", "stopped" or "failed"."""

    status: str
    reason: str
    updates: int
    seconds: float


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _last_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    last = checkpoint_dir / "last.ckpt"
    if last.is_file():
        return last
    written = sorted(checkpoint_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return written[-1] if written else None


def example_video(datamodule: Any) -> Optional[str]:
    """A video of the run's own data (validation first), so that the command runs as printed."""
    for name in ("val_dataset", "train_dataset"):
        paths = getattr(getattr(datamodule, name, None), "paths", None)
        if paths:
            return str(paths[0])
    return None


def run_summary(outcome: RunOutcome, run_dir: Path, record: Optional[RunRecorder] = None,
                best_checkpoint: Optional[ModelCheckpoint] = None, datamodule: Any = None, module: Any = None,
                config_path: Optional[Path] = None) -> str:
    """The closing summary of a run, as printed by ``vidtwin train`` (several lines, no trailing newline).

    ``module.summary_commands`` (see the training contract) adds its commands once a checkpoint
    exists; ``config_path`` is the run's newest config (default ``run_dir/config.yaml``).
    """
    q = shlex.quote
    lines = [f"run {outcome.status}: {outcome.reason}, {outcome.updates} updates in {_duration(outcome.seconds)}",
             f"  run directory:   {run_dir}"]
    last = _last_checkpoint(run_dir / "checkpoints")
    lines.append(f"  last checkpoint: {last if last is not None else 'none written'}")
    monitored = record.monitored if record is not None else None
    if record is not None and record.best and monitored is not None:
        others = ", ".join(f"{k} {_format_value(v)}" for k, v in record.best.items() if k != monitored)
        lines.append(f"  best {monitored}: {_format_value(record.best[monitored])} at update {record.best_update}"
                     + (f" ({others})" if others else ""))
    else:
        lines.append("  best metric:     no validation ran")
    if best_checkpoint is not None and best_checkpoint.best_model_path:
        lines.append(f"  best checkpoint: {best_checkpoint.best_model_path}")
    lines.append(f"  TensorBoard:     tensorboard --logdir {q(str(run_dir / 'tensorboard'))}")
    if last is not None and module is not None:
        commands = module.summary_commands(run_dir, config_path or run_dir / "config.yaml", last, datamodule)
        lines += [f"  {label + ':':<16} {command}" for label, command in commands.items()]
    return "\n".join(lines)


def print_run_summary(trainer: pl.Trainer, module: Any, datamodule: Any, run_dir: Path,
                      config_path: Optional[Path] = None, stream=None) -> None:
    """Print the summary of a run that started training (global rank zero only); nothing otherwise."""
    recorder = next((c for c in trainer.callbacks if isinstance(c, RunRecorder)), None)
    if recorder is None or recorder.started is None or not trainer.is_global_zero:
        return
    monitored = recorder.monitored
    best = next((c for c in trainer.callbacks
                 if isinstance(c, ModelCheckpoint) and monitored is not None and c.monitor == monitored), None)
    text = run_summary(recorder.outcome(trainer, module), run_dir, recorder, best, datamodule, module, config_path)
    print(text, file=stream or sys.stdout, flush=True)


__all__ = [
    "UpdateProgressBar", "RunRecorder", "RunOutcome", "run_summary", "print_run_summary", "hide_lightning_stop_line",
    "quiet_lightning", "ModelSummaryWithoutFlops", "planned_updates", "example_video",
]
