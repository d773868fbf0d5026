"""How many CPU threads torch uses, chosen for the cores that are actually free.

torch's default is one thread per core. That is the fastest choice on an idle machine, and a poor
one on a busy one: each parallel region waits for its slowest thread, and a thread that shares
its core with another process waits for the scheduler. Measured on a 2-core machine with two
busy processes beside the tiny training run (``scripts/benchmark_threads.py``, numbers in
docs/benchmarks.md), 2 threads were several times slower per update than 1 thread.

The policy (:func:`choose_cpu_threads`): the cores this process may run on, minus the DataLoader
workers that compete with the main process, minus the cores that other processes keep busy (the
1-minute load average before we start), and at least 1. An explicit ``OMP_NUM_THREADS`` always wins.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

THREADS_ENV = "OMP_NUM_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    """The number of torch CPU threads and why."""

    threads: int
    cores: int
    loader_workers: int
    busy_cores: float  # load average of other processes, in cores
    from_env: bool  # OMP_NUM_THREADS was set and is kept

    def describe(self) -> str:
        if self.from_env:
            return f"torch CPU threads: {self.threads} ({THREADS_ENV}={os.environ.get(THREADS_ENV)})"
        return (f"torch CPU threads: {self.threads} of {self.cores} cores ({self.loader_workers} loader workers, "
                f"{self.busy_cores:.1f} cores busy with other work; set {THREADS_ENV} to choose)")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def busy_cores_now(cores: int) -> float:
    """Cores kept busy by other processes: the 1-minute load average, at most ``cores``; 0 where unknown."""
    try:
        return min(float(os.getloadavg()[0]), float(cores))
    except (AttributeError, OSError):  # no load average on this platform
        return 0.0


def choose_cpu_threads(cores: int, loader_workers: int = 0, busy_cores: float = 0.0) -> int:
    """Threads for torch: ``round(cores - loader_workers - busy_cores)``, at least 1."""
    return max(1, int(round(cores - max(loader_workers, 0) - max(busy_cores, 0.0))))


def apply_cpu_thread_policy(loader_workers: int = 0) -> ThreadChoice:
    """Set ``torch.set_num_threads`` by :func:`choose_cpu_threads` (never above its current value),
    unless ``OMP_NUM_THREADS`` is set.

    Call it once, before the first parallel torch operation. Logs the choice (INFO) and returns it.
    """
    cores = available_cores()
    if os.environ.get(THREADS_ENV, "").strip():
        choice = ThreadChoice(torch.get_num_threads(), cores, loader_workers, 0.0, from_env=True)
    else:
        busy = busy_cores_now(cores)
        # Never more than torch has already (a caller that set fewer threads, e.g. a test, knows why).
        threads = min(choose_cpu_threads(cores, loader_workers, busy), torch.get_num_threads())
        choice = ThreadChoice(threads, cores, loader_workers, busy, from_env=False)
        torch.set_num_threads(choice.threads)
    logger.info(choice.describe())
    return choice
