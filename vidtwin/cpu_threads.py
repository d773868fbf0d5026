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
load average is the fallback, also where it cannot be parsed: the sample never stops a command, and
``--verbose`` says which source was used. An explicit ``OMP_NUM_THREADS`` always wins, and an explicit
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is kept. A value of ``OMP_NUM_THREADS`` that OpenMP ignores
(``0``, ``-1``, ``abc``, ``1.5``: OpenMP takes a positive whole number, or a comma-separated list of
them for nested levels) counts as unset, and the report says it was ignored.
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
# Why the last load sample did not come from /proc/stat (None: it did, or none was taken). The
# sample runs before the command has set up logging, so apply_cpu_thread_policy logs it.
_sample_note: Optional[str] = None


def omp_threads_from_env(environ: Optional[MutableMapping[str, str]] = None) -> Tuple[Optional[str], Optional[int]]:
    """``(value, threads)`` of ``OMP_NUM_THREADS``: ``(None, None)`` unset or blank; ``(value, None)``
    for a value that OpenMP ignores; else the threads of the outer level, as GNU OpenMP reads it
    (a positive whole number, or a comma-separated list of them: ``4,2``)."""
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_ENV)
    if value is None or not value.strip():
        return None, None
    levels = [level.strip() for level in value.split(",")]
    if all(level.isdigit() and level.isascii() and int(level) >= 1 for level in levels):
        return value, int(levels[0])
    return value, None


def prepare_cpu_threads(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """Before torch is imported: sample the busy cores, and when no core is free (all threads will
    share cores), make OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``).

    Does nothing when ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set, or when
    torch is already loaded (OpenMP has read its settings by then). Returns the wait policy it set, or None.
    """
    global _startup_busy_cores
    environ = os.environ if environ is None else environ
    chosen = (omp_threads_from_env(environ)[1] is not None
              or any(environ.get(name, "").strip() for name in (WAIT_POLICY_ENV, SPIN_ENV)))
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
    ignored_env: Optional[str] = None  # a value of OMP_NUM_THREADS that OpenMP ignored

    def describe(self) -> str:
        if self.from_env:
            return f"torch CPU threads: {self.threads} ({THREADS_ENV}={os.environ.get(THREADS_ENV)})"
        waiting = os.environ.get(WAIT_POLICY_ENV, "").strip()
        waiting = f", {WAIT_POLICY_ENV}={waiting}" if waiting else ""
        if self.ignored_env is not None:
            choose = (f"{THREADS_ENV}={self.ignored_env!r} was ignored, as OpenMP ignores it: give a whole number "
                      "of 1 or more")
        else:
            choose = f"set {THREADS_ENV} to choose"
        return (f"torch CPU threads: {self.threads} of {self.cores} cores ({self.busy_cores:.1f} cores busy with other "
                f"work{waiting}; {choose})")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows), or a sandbox that refuses it
        return max(1, os.cpu_count() or 1)


PROC_STAT = "/proc/stat"
BUSY_SAMPLE_S = 0.5


class _UnreadableCounters(Exception):
    """``/proc/stat`` cannot give the busy cores; the message says why."""


def _cpu_counters(path: str) -> Dict[int, Tuple[int, int]]:
    """{cpu number: (busy ticks, all ticks)} from the per-CPU lines of ``/proc/stat``.
    Idle and iowait ticks count as not busy. Raises :class:`_UnreadableCounters` when the file is
    missing, unreadable, has no per-CPU line, or one that is not numbers (a kernel or a container
    runtime of another layout)."""
    try:
        with open(path, errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        raise _UnreadableCounters(f"{path} is unreadable ({error.strerror or error})") from None
    counters = {}
    for line in lines:
        name, *fields = line.split() or [""]
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        values = fields[:8]  # user nice system idle iowait irq softirq steal
        if len(values) < 5 or not all(value.isdigit() and value.isascii() for value in values):
            raise _UnreadableCounters(f"{path} has a CPU line that is not counters: {line[:60]!r}")
        ticks = [int(value) for value in values]
        idle = ticks[3] + ticks[4]
        counters[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    if not counters:
        raise _UnreadableCounters(f"{path} has no per-CPU lines")
    return counters


def busy_cores_now(cores: int, sample_s: float = BUSY_SAMPLE_S, stat_path: Optional[str] = None) -> float:
    """Cores kept busy by other processes, at most ``cores``: the busy share of the CPUs this process
    may run on over ``sample_s`` seconds (this process sleeps meanwhile), from ``/proc/stat``; the
    1-minute load average where that is missing or not readable as counters; 0 where neither is
    known. Never raises: the sample must not stop a command. Why /proc/stat was not used is kept
    for :func:`apply_cpu_thread_policy` to log (the sample may run before logging is set up)."""
    global _sample_note
    _sample_note = None
    stat_path = PROC_STAT if stat_path is None else stat_path
    try:
        before = _cpu_counters(stat_path)
        time.sleep(sample_s)
        after = _cpu_counters(stat_path)
        try:
            allowed = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # pragma: no cover - no affinity on this platform
            allowed = set(before)
        busy = 0.0
        for cpu in allowed:
            if cpu in before and cpu in after:
                busy_ticks, all_ticks = (a - b for a, b in zip(after[cpu], before[cpu]))
                busy += min(max(busy_ticks / all_ticks, 0.0), 1.0) if all_ticks > 0 else 0.0
        return min(busy, float(cores))
    except _UnreadableCounters as error:
        reason = str(error)
    try:
        load = min(max(float(os.getloadavg()[0]), 0.0), float(cores))
        _sample_note = f"busy cores from the 1-minute load average ({load:.1f}): {reason}"
        return load
    except (AttributeError, OSError):  # no load average on this platform
        _sample_note = f"busy cores unknown, taken as 0 (no load average either): {reason}"
        return 0.0


def choose_cpu_threads(cores: int, busy_cores: float = 0.0) -> int:
    """Threads for torch: the free cores, ``round(cores - busy_cores)``; all ``cores`` when none is free."""
    free = int(round(cores - max(busy_cores, 0.0)))
    return free if free >= 1 else cores


def apply_cpu_thread_policy() -> ThreadChoice:
    """Set ``torch.set_num_threads`` by :func:`choose_cpu_threads` (never above its current value),
    unless ``OMP_NUM_THREADS`` is set to a value OpenMP takes (see :func:`omp_threads_from_env`).

    Call it once, before the first parallel torch operation. Logs the choice (INFO) and returns it.
    """
    import torch

    global _startup_busy_cores
    cores = available_cores()
    value, env_threads = omp_threads_from_env()
    if env_threads is not None:
        choice = ThreadChoice(torch.get_num_threads(), cores, 0.0, from_env=True)
    else:
        # The sample taken before torch loaded, if any, so that the thread count and the wait policy agree.
        busy = _startup_busy_cores if _startup_busy_cores is not None else busy_cores_now(cores)
        _startup_busy_cores = None
        if _sample_note is not None:
            logger.info("load sample: %s", _sample_note)
        # Never more than torch has already (a caller that set fewer threads, e.g. a test, knows why).
        threads = min(choose_cpu_threads(cores, busy), torch.get_num_threads())
        choice = ThreadChoice(threads, cores, busy, from_env=False, ignored_env=value)
        torch.set_num_threads(choice.threads)
    logger.info(choice.describe())
    return choice


def load_sample_note() -> Optional[str]:
    """Why the last load sample did not use ``/proc/stat`` (None when it did, or none was taken):
    for a command to log once its logging is set up."""
    return _sample_note
