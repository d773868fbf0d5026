"""Writing files so that a reader never sees a half-written one under the final name."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

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
