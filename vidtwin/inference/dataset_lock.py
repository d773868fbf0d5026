"""One encode-dataset job per output folder: a lock file naming the job that holds it.

Two jobs writing one latent dataset would write shards of the same names and merge each other's
half-finished work. The first job creates ``OUT/.encode-dataset.lock`` (``O_EXCL``: exactly one
job can create it) holding its host, pid and start time; a second job is refused in one line
that names the first. A lock left by a job that was killed (SIGKILL, a lost node) is taken over
with a message when its process is known to be dead, which the same host can tell; a lock from
another host is only reported, since its process cannot be checked from here.

On several processes only the launching process (global rank 0) takes the lock: the others are
its own workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from vidtwin.inference.options import InferenceError

LOCK_NAME = ".encode-dataset.lock"

logger = logging.getLogger(__name__)


def launch_rank() -> int:
    """This process's global rank as its launcher set it (torchrun: RANK, srun: SLURM_PROCID,
    Lightning's own workers: LOCAL_RANK); 0 for a process that nothing launched."""
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{since}"


def _read(path: Path) -> dict | None:
    """The holder recorded in a lock file; None when it vanished; {} when it is unreadable."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _create(path: Path, holder: dict) -> bool:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(holder, handle)
    return True


def acquire(output: Path) -> Path:
    """Create the lock of ``output``; raises :class:`InferenceError` naming the job that holds it."""
    path = output / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(3):  # a lock that vanished or was taken over meanwhile: look again
        try:
            if _create(path, me):
                return path
        except OSError as error:
            raise InferenceError(f"cannot write --output {output}: {error.strerror or error}") from None
        holder = _read(path)
        if holder is None:
            continue
        dead = holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])
        if not dead:
            what = _describe(holder) if holder else "a job whose lock file is unreadable"
            raise InferenceError(
                f"--output {output} is being written by another encode-dataset job ({what}); wait for it to finish, "
                f"or, if that job is gone, delete {path} and run this command again"
            )
        # Move the stale lock aside under a name of our own, then check that what moved is what we
        # judged stale (another job may have taken it over in between), then create ours.
        aside = path.with_name(f"{LOCK_NAME}.stale-{me['host']}-{me['pid']}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            continue
        moved = _read(aside)
        if moved != holder:
            os.replace(aside, path)  # a live job's lock: put it back and look again
            continue
        aside.unlink(missing_ok=True)
        logger.warning("taking over the lock of %s on %s: that encode-dataset job is no longer running",
                       _describe(holder), output)
    raise InferenceError(f"--output {output}: cannot take its lock {path}; another job keeps changing it")


def release(path: Path) -> None:
    """Remove our lock (only if it is still ours)."""
    holder = _read(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold the lock of ``output`` on global rank 0 for the duration of the block."""
    if launch_rank() != 0:
        yield
        return
    path = acquire(output)
    try:
        yield
    finally:
        release(path)
