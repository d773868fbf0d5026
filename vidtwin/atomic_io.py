"""Writing files so that a reader never sees a half-written one under the final name, and
claiming a file name so that two processes never write it at once."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

try:
    import fcntl
except ImportError:  # Windows: claims are plain exclusive files, see claimed()
    fcntl = None

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Most filesystems limit a file name to 255 bytes; _create_temp_file adds 8 random characters.
NAME_MAX_BYTES = 255
_RANDOM_BYTES = 4  # token_hex(4): 8 characters
_RANDOM_CHARS = 2 * _RANDOM_BYTES
TEMP_MARKER = ".tmp-"


def temp_prefix(name: str, suffix: str) -> str:
    """``.NAME.tmp-`` for a temporary file beside ``name``, with NAME shortened so the result fits 255 bytes.

    The leading dot hides the file, and hidden files are never taken for videos
    (:func:`vidtwin.data.video_io.is_video_file`), so a temp file left by a killed write is not read
    back as an input.
    """
    room = NAME_MAX_BYTES - _RANDOM_CHARS - len(suffix.encode()) - len(f".{TEMP_MARKER}")
    shortened = name.encode()[:max(room, 1)].decode(errors="ignore")  # never split a UTF-8 character
    return f".{shortened}{TEMP_MARKER}"


# Mode asked of open(2); the process umask removes bits from it, exactly as for a plain open()
# (0644 under umask 022). tempfile.mkstemp would create 0600 files nobody else can read.
_NEW_FILE_MODE = 0o666
_NAME_ATTEMPTS = 100


def _create_temp_file(directory: Path, prefix: str, suffix: str) -> Path:
    """Create a new empty file with a random name in ``directory``, never reusing an existing one."""
    for _ in range(_NAME_ATTEMPTS):
        candidate = directory / f"{prefix}{secrets.token_hex(_RANDOM_BYTES)}{suffix}"
        try:
            handle = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(handle)
        return candidate
    raise FileExistsError(f"cannot create a temporary file in {directory}: {_NAME_ATTEMPTS} names were taken")


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask can only swap it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions a plain ``open()`` gives a new file under the current umask (0644 under 022)."""
    return _NEW_FILE_MODE & ~current_umask()


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only when the block completes.

    suffix: the temporary file's ending, for writers that pick a format from it (".mp4", ".png").
    The parent directory must exist. On any error the temporary file is removed. The temporary
    name fits the filesystem's 255-byte limit whenever ``path``'s own name does, and the final file
    gets the permissions of a plain ``open()`` under the process umask.
    """
    path = Path(path)
    temp = _create_temp_file(path.parent, prefix=temp_prefix(path.name, suffix), suffix=suffix)
    try:
        yield temp
        # Writers that replace the file themselves (safetensors 0.8 writes a new 0600 file) would
        # otherwise decide the final permissions.
        os.chmod(temp, new_file_mode())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file of :func:`atomic_path` (one a killed write may leave)."""
    return name.startswith(".") and TEMP_MARKER in name


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8", newline="")


# ----------------------------------------------------------------------------------------------
# claims: one writer per file name
# ----------------------------------------------------------------------------------------------
CLAIM_SUFFIX = ".claim"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # flock on a filesystem that has no locks


class ClaimHeld(FileExistsError):
    """Another process holds the claim on a file name.

    ``holder``: who, as the claim file says (``pid 123 on host h``), or "" when it does not say.
    """

    def __init__(self, path: Path, claim: Path, holder: str):
        self.path, self.claim, self.holder = path, claim, holder
        who = holder or "a process that has not said which"
        super().__init__(f"{path} is claimed by {who} (claim file {claim})")


def claim_path(path: PathLike) -> Path:
    """The claim file of ``path``: hidden, beside it (``.NAME.claim``), at most 255 bytes long.

    A name too long to take the suffix is shortened and gets a digest of the full name, so two
    long names that share a beginning still have different claims.
    """
    path = Path(path)
    room = NAME_MAX_BYTES - len(f".{CLAIM_SUFFIX}")
    name = path.name
    if len(name.encode()) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:_RANDOM_CHARS]
        name = name.encode()[: room - len(digest) - 1].decode(errors="ignore") + f"-{digest}"
    return path.parent / f".{name}{CLAIM_SUFFIX}"


def _holder(handle: int) -> str:
    try:
        return os.pread(handle, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _take_claim(path: Path, claim: Path) -> int:
    """Open and lock ``claim``; return its descriptor. Raises ClaimHeld while a live process holds it."""
    unknown_liveness = "another process, or a killed one: delete the claim file if none runs"
    for _ in range(_NAME_ATTEMPTS):
        left_behind = False
        try:
            handle = os.open(claim, os.O_RDWR | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
        except FileExistsError:
            if fcntl is None:  # no way to tell a live holder from a dead one
                raise ClaimHeld(path, claim, unknown_liveness) from None
            try:
                handle = os.open(claim, os.O_RDWR)
            except FileNotFoundError:  # released in between: try again
                continue
            left_behind = True
        if fcntl is not None and not _lock(handle, path, claim, left_behind, unknown_liveness):
            continue
        try:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        except OSError:  # a full disk: the claim still holds; only the message loses the holder's name
            pass
        return handle
    raise ClaimHeld(path, claim, "processes that keep claiming and releasing it")


def _lock(handle: int, path: Path, claim: Path, left_behind: bool, unknown_liveness: str) -> bool:
    """flock the open claim file: True when it is ours, False (closed) when it was released meanwhile.

    The lock, not the file, is the claim: the system releases it when its holder dies, so a claim
    file that opens but is not locked was left by a killed process and is taken over.
    """
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(handle)
        os.close(handle)
        raise ClaimHeld(path, claim, holder) from None
    except OSError as error:
        if error.errno in _NO_LOCKS and not left_behind:
            return True  # a filesystem without locks: the O_EXCL creation alone is the claim
        os.close(handle)
        if error.errno in _NO_LOCKS:
            raise ClaimHeld(path, claim, unknown_liveness) from None
        raise
    except BaseException:
        os.close(handle)
        raise
    try:  # the holder may have released (removed) the file between our open and our lock
        current = os.path.samestat(os.fstat(handle), os.stat(claim))
    except FileNotFoundError:
        current = False
    if not current:
        os.close(handle)
        return False
    if left_behind:
        logger.warning("taking over the claim on %s left by %s, which ended without releasing it",
                       path, _holder(handle) or "a process")
    return True


@contextmanager
def claimed(path: PathLike) -> Iterator[Path]:
    """Hold the claim on the file name ``path`` until the block ends; yield ``path``.

    The claim is a lock on a hidden file beside ``path`` (:func:`claim_path`), created with
    ``O_EXCL`` and locked with ``flock``; it holds the process id and host name of its holder for
    the message of a process that finds it taken. The final name itself is never touched, so a
    failure or Ctrl-C leaves neither an empty nor a half-written file there. The claim file is
    removed when the block ends; one left by a killed process is unlocked, and the next claim
    takes it over (with a warning). Where ``flock`` does not exist (Windows), any existing claim
    file counts as held.

    Raises:
        ClaimHeld: another live process holds the claim.
        OSError: the claim file cannot be created (the folder is not writable, ...).
    """
    path = Path(path)
    claim = claim_path(path)
    handle = _take_claim(path, claim)
    try:
        yield path
    finally:
        # Removed while still locked: a process that opened it meanwhile finds it gone and retries.
        try:
            os.unlink(claim)
        except FileNotFoundError:
            pass
        os.close(handle)
