"""How many CPU threads torch uses, and how they wait, chosen for the cores that are actually free.

Measured on 2 cores beside two busy processes (``scripts/benchmark_quickstart.py``, numbers in
docs/benchmarks.md):

- **Shared cores.** A parallel region waits for its slowest thread, so a thread on a core that
  another process keeps busy slows every region. :func:`choose_cpu_threads` takes the cores this
  process may run on minus the cores other processes keep busy. When no core is free, every thread
  shares a core alike, and all cores are used: more threads get a larger fair share of the machine.
  DataLoader workers are not counted against the cores: on a CPU run they mostly wait for the main
  process (the Moving Digits autoencoder trains faster on 2 threads than on 1 beside its worker).
- **Spinning.** GNU OpenMP, which torch uses on Linux, keeps a waiting thread spinning for a while
  before it sleeps. On a shared core the spinning thread burns the share of the core that the thread
  it waits for needs: torch's defaults were several times slower there than one thread. So when
  threads share cores, they wait passively (``OMP_WAIT_POLICY=PASSIVE``): 2 passive threads beat
  1 thread under that load. Idle, spinning is faster, so it stays.
  OpenMP reads the wait policy once, when torch loads it: :func:`prepare_cpu_threads` samples the
  load and sets it, and the ``vidtwin`` command calls it before anything imports torch.

"Busy right now" is a short sample of the kernel's CPU counters (``/proc/stat``, half a second), not
the 1-minute load average, which trails a change by a minute; where ``/proc/stat`` is missing, the
load average is the fallback. An explicit ``OMP_NUM_THREADS`` always wins, and an explicit
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is kept.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, MutableMapping, Optional, Tuple

logger = logging.getLogger(__name__)

THREADS_ENV = "OMP_NUM_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPIN_ENV = "GOMP_SPINCOUNT"

# The busy-core sample that prepare_cpu_threads took before torch loaded, for apply_cpu_thread_policy.
_startup_busy_cores: Optional[float] = None


def prepare_cpu_threads(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """Before torch is imported: sample the busy cores, and when no core is free (all threads will
    share cores), make OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``).

    Does nothing when ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set, or when
    torch is already loaded (OpenMP has read its settings by then). Returns the wait policy it set, or None.
    """
    global _startup_busy_cores
    environ = os.environ if environ is None else environ
    chosen = any(environ.get(name, "").strip() for name in (THREADS_ENV, WAIT_POLICY_ENV, SPIN_ENV))
    if chosen or "torch" in sys.modules:
        return None
    cores = available_cores()
    _startup_busy_cores = busy_cores_now(cores)
    if choose_cpu_threads(cores, _startup_busy_cores) < cores or _startup_busy_cores < 0.5:
        return None  # every thread gets a core of its own: spinning waits are the fastest
    environ[WAIT_POLICY_ENV] = "PASSIVE"
    return "PASSIVE"


@dataclass(frozen=True)
class ThreadChoice:
    """The number of torch CPU threads and why."""

    threads: int
    cores: int
    busy_cores: float  # cores kept busy by other processes
    from_env: bool  # OMP_NUM_THREADS was set and is kept

    def describe(self) -> str:
        if self.from_env:
            return f"torch CPU threads: {self.threads} ({THREADS_ENV}={os.environ.get(THREADS_ENV)})"
        waiting = os.environ.get(WAIT_POLICY_ENV, "").strip()
        waiting = f", {WAIT_POLICY_ENV}={waiting}" if waiting else ""
        return (f"torch CPU threads: {self.threads} of {self.cores} cores ({self.busy_cores:.1f} cores busy with other "
                f"work{waiting}; set {THREADS_ENV} to choose)")


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


def choose_cpu_threads(cores: int, busy_cores: float = 0.0) -> int:
    """Threads for torch: the free cores, ``round(cores - busy_cores)``; all ``cores`` when none is free."""
    free = int(round(cores - max(busy_cores, 0.0)))
    return free if free >= 1 else cores


def apply_cpu_thread_policy() -> ThreadChoice:
    """Set ``torch.set_num_threads`` by :func:`choose_cpu_threads` (never above its current value),
    unless ``OMP_NUM_THREADS`` is set.

    Call it once, before the first parallel torch operation. Logs the choice (INFO) and returns it.
    """
    import torch

    global _startup_busy_cores
    cores = available_cores()
    if os.environ.get(THREADS_ENV, "").strip():
        choice = ThreadChoice(torch.get_num_threads(), cores, 0.0, from_env=True)
    else:
        # The sample taken before torch loaded, if any, so that the thread count and the wait policy agree.
        busy = _startup_busy_cores if _startup_busy_cores is not None else busy_cores_now(cores)
        _startup_busy_cores = None
        # Never more than torch has already (a caller that set fewer threads, e.g. a test, knows why).
        threads = min(choose_cpu_threads(cores, busy), torch.get_num_threads())
        choice = ThreadChoice(threads, cores, busy, from_env=False)
        torch.set_num_threads(choice.threads)
    logger.info(choice.describe())
    return choice
