"""How many CPU threads torch uses, chosen for the cores that are actually free.

torch's default is one thread per core. That is the fastest choice on an idle machine, and a poor
one on a busy one: each parallel region waits for its slowest thread, and a thread that shares
its core with another process waits for the scheduler. Measured on a 2-core machine with two
busy processes beside the tiny training run (``scripts/benchmark_threads.py``, numbers in
docs/benchmarks.md), 2 threads were several times slower per update than 1 thread.

The policy (:func:`choose_cpu_threads`): the cores this process may run on, minus the DataLoader
workers that compete with the main process, minus the cores that other processes keep busy right
now, and at least 1. An explicit ``OMP_NUM_THREADS`` always wins.

"Right now" is a short sample of the kernel's CPU counters (``/proc/stat``, half a second), not the
1-minute load average: the load average trails a change by a minute, so work started just before
training (the benchmark's stand-in load, a second run) was not seen and 2 threads were chosen on
2 taken cores. Where ``/proc/stat`` is missing, the load average is the fallback.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

THREADS_ENV = "OMP_NUM_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    """The number of torch CPU threads and why."""

    threads: int
    cores: int
    loader_workers: int
    busy_cores: float  # cores kept busy by other processes
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


PROC_STAT = "/proc/stat"
BUSY_SAMPLE_S = 0.5


def _cpu_counters(path: str = PROC_STAT) -> Optional[Dict[int, Tuple[int, int]]]:
    """{cpu number: (busy ticks, all ticks)} from the per-CPU lines of ``/proc/stat``; None if unreadable.
    Idle and iowait ticks count as not busy."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    counters = {}
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()) or len(fields) < 5:
            continue
        ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + ticks[4]
        counters[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return counters or None


def busy_cores_now(cores: int, sample_s: float = BUSY_SAMPLE_S, stat_path: str = PROC_STAT) -> float:
    """Cores kept busy by other processes, at most ``cores``: the busy share of the CPUs this process
    may run on over ``sample_s`` seconds (this process sleeps meanwhile), from ``/proc/stat``; the
    1-minute load average where that is missing; 0 where neither is known."""
    before = _cpu_counters(stat_path)
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_counters(stat_path)
        try:
            allowed = os.sched_getaffinity(0)
        except AttributeError:  # pragma: no cover - no affinity on this platform
            allowed = set(before)
        busy = 0.0
        for cpu in allowed:
            if cpu in before and after is not None and cpu in after:
                busy_ticks, all_ticks = (a - b for a, b in zip(after[cpu], before[cpu]))
                busy += busy_ticks / all_ticks if all_ticks > 0 else 0.0
        return min(busy, float(cores))
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
