"""Writing files so that a reader never sees a half-written one under the final name."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]

# Mode asked of open(2); the process umask removes bits from it, exactly as for a plain open()
# (0644 under umask 022). tempfile.mkstemp would create 0600 files nobody else can read.
_NEW_FILE_MODE = 0o666
_NAME_ATTEMPTS = 100


def _create_temp_file(directory: Path, prefix: str, suffix: str) -> Path:
    """Create a new empty file with a random name in ``directory``, never reusing an existing one."""
    for _ in range(_NAME_ATTEMPTS):
        candidate = directory / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            handle = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(handle)
        return candidate
    raise FileExistsError(f"cannot create a temporary file in {directory}: {_NAME_ATTEMPTS} names were taken")


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only when the block completes.

    suffix: the temporary file's ending, for writers that pick a format from it (".mp4", ".png").
    The parent directory must exist. On any error the temporary file is removed. The final file
    gets the permissions of a plain ``open()`` under the process umask.
    """
    path = Path(path)
    temp = _create_temp_file(path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8", newline="")
