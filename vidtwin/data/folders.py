"""Listing the video files of a folder: one listing for training, inference and encode-dataset."""

from __future__ import annotations

import logging
import os

from vidtwin.data.video_io import is_video_file

logger = logging.getLogger(__name__)


def _directory_identity(path: str) -> tuple[int, int]:
    """(device, inode) of the directory ``path`` names, through any symbolic links."""
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _is_within(path: str, folder: str) -> bool:
    real_folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), real_folder]) == real_folder


def list_video_files(folder: str | os.PathLike, recursive: bool = True, skip: str | os.PathLike | None = None) -> list[str]:
    """Paths of the video files in ``folder`` (with ``recursive``, also in its sub-folders), sorted.

    Symbolic links to folders are followed, but each real folder is listed once: a link back to a
    folder already listed (a loop such as ``a -> .``, or a second link to the same folder) is
    skipped, so a loop neither repeats videos nor makes the walk endless. A folder reachable by
    its own name and through a link is listed under its own name. Hidden folders (a leading dot)
    are not searched, as hidden files are never videos (:func:`is_video_file`). ``skip``: a folder
    (an output folder inside the input folder) that is left out with everything under it.
    """
    folder = os.fspath(folder)
    if not recursive:
        names = sorted(os.listdir(folder))
        return [os.path.join(folder, n) for n in names if is_video_file(n) and os.path.isfile(os.path.join(folder, n))]
    skip = os.fspath(skip) if skip is not None else None
    # Folders walked or about to be walked. Every sub-folder of a level is registered before any
    # of them is entered (os.walk enters them depth first), real folders before links.
    seen = {_directory_identity(folder)}
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirs, key=lambda d: (os.path.islink(os.path.join(root, d)), d)):
            path = os.path.join(root, name)
            if name.startswith(".") or (skip is not None and _is_within(path, skip)):
                continue
            try:
                identity = _directory_identity(path)
            except OSError:  # vanished, or a link into a folder we may not enter: nothing to list
                continue
            if identity in seen:
                logger.info("not listing %s again: it is a folder already listed (a symbolic link)", path)
                continue
            seen.add(identity)
            kept.append(name)
        dirs[:] = sorted(kept)
        found.extend(os.path.join(root, name) for name in files if is_video_file(name))
    return sorted(found)
