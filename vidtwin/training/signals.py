"""Stopping a run cleanly when a cluster asks for it (SIGTERM, SIGUSR1), and naming a dead peer process.

SLURM and Kubernetes send SIGTERM some seconds before they kill a job (SLURM sends SIGUSR1 first
with ``--signal=USR1@SECONDS``, for a requeue). :class:`StopOnSignal` turns either signal into a
stop at the next update boundary: every process of the run agrees on that update (one small
all-reduce per update), ``last.ckpt`` is written with that update complete, and ``vidtwin train`` exits
with 128 + the signal number (143 for SIGTERM) and one line saying how to resume. A resume then
loses nothing: the checkpoint holds the update the signal interrupted.

Lightning's own SIGTERM handling is replaced while training runs: it raises a ``SystemExit``
subclass that ends the run with exit code 0 and no checkpoint, and it runs a collective inside the
signal handler. DataLoader workers ignore both signals (:func:`protect_data_workers`): SLURM signals
them too, and torch's workers die on SIGTERM, which would fail the run before its checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Messages of the distributed backends when another process of the run has gone away.
_PEER_GONE_MESSAGES = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                       "NCCL communicator was aborted")


class StoppedBySignal(Exception):
    """The run stopped at an update boundary after SIGTERM or SIGUSR1; ``checkpoint`` holds that update."""

    def __init__(self, signum: int, update: int, checkpoint: Path) -> None:
        self.signum = int(signum)
        self.update = int(update)
        self.checkpoint = Path(checkpoint)
        super().__init__(f"stopped by {self.signal_name} at update {self.update}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal (143 for SIGTERM)."""
        return 128 + self.signum


class PeerProcessDied(RuntimeError):
    """Another process of a multi-process run died; this one cannot go on (exit code 1)."""


def is_peer_failure(error: BaseException, world_size: int) -> bool:
    """Whether ``error`` is the distributed backend reporting that another process of the run is gone."""
    if world_size <= 1:
        return False
    text = str(error)
    return any(message in text for message in _PEER_GONE_MESSAGES)


class _IgnoreStopSignals:
    """A DataLoader ``worker_init_fn`` that makes a worker ignore SIGTERM and SIGUSR1, then runs the original.

    SLURM signals every process of a job, DataLoader workers included. torch's workers die on
    SIGTERM, and the main process then fails at once ("DataLoader worker ... is killed by signal")
    instead of stopping at the update boundary. The main process decides when to stop; a worker
    still ends with it (torch's workers exit when their parent is gone).
    """

    def __init__(self, worker_init_fn: Any = None) -> None:
        self.worker_init_fn = worker_init_fn

    def __call__(self, worker_id: int) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)


def _protect(loaders: Any) -> Any:
    """Give every DataLoader in ``loaders`` (a loader, or a list / dict of them) the signal-ignoring worker init."""
    if isinstance(loaders, torch.utils.data.DataLoader):
        if not isinstance(loaders.worker_init_fn, _IgnoreStopSignals):
            loaders.worker_init_fn = _IgnoreStopSignals(loaders.worker_init_fn)
    elif isinstance(loaders, (list, tuple)):
        for loader in loaders:
            _protect(loader)
    elif isinstance(loaders, dict):
        for loader in loaders.values():
            _protect(loader)
    return loaders


def protect_data_workers(datamodule: Any) -> None:
    """Make the DataLoaders that ``datamodule`` builds from now on keep their workers alive on SIGTERM and SIGUSR1."""
    for hook in ("train_dataloader", "val_dataloader"):
        build = getattr(datamodule, hook, None)
        if build is None or getattr(build, "_protects_workers", False):
            continue

        def protected(build=build):
            return _protect(build())

        protected._protects_workers = True
        setattr(datamodule, hook, protected)


class StopOnSignal(pl.Callback):
    """Stops training at the first update boundary after SIGTERM or SIGUSR1, with ``checkpoint_path`` written.

    :meth:`install` (``vidtwin train`` calls it before ``fit``) sets the handlers; they are set again when
    training starts, because Lightning replaces the SIGTERM handler when ``fit`` begins. The
    handler only records the signal: the checkpoint is written from the training loop, where the
    module is consistent. :meth:`uninstall` restores the previous handlers.
    """

    def __init__(self, checkpoint_path: str) -> None:
        super().__init__()
        self.checkpoint_path = Path(checkpoint_path)
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = int(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._record)
            self._previous.setdefault(signum, previous)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.install()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.update_in_progress:
            return  # the batches of this update are not in any checkpoint yet: wait for its end
        received = self.received or 0
        if trainer.world_size > 1:
            # Every process stops at the same update, whichever of them got the signal.
            flag = torch.tensor(float(received), device=pl_module.device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max"))
        if not received:
            return
        logger.warning("stopping on %s: writing %s at update %d", signal.Signals(received).name,
                       self.checkpoint_path, pl_module.train_step)
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)  # with optimizer and loop state
        raise StoppedBySignal(received, pl_module.train_step, self.checkpoint_path)


__all__ = ["StopOnSignal", "StoppedBySignal", "PeerProcessDied", "is_peer_failure", "protect_data_workers",
           "STOP_SIGNALS"]
