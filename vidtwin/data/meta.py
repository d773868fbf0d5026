"""The CSV meta file that lists the videos of a dataset folder (the official VidTok/VidTwin format).

One column, ``videos``, with paths relative to the folder; a dataset reads it with ``data_dir: DIR``
and ``meta_path: <csv>``. ``vidtwin make-meta`` is the command over these functions.
"""

from __future__ import annotations

import csv
import os

from tqdm import tqdm

from ..atomic_io import atomic_path


def _video_io():
    # Imported on first use: the video readers load PyAV / decord, which listing folders does not need.
    from . import video_io

    return video_io


def find_videos(directory: str) -> list[str]:
    """Paths (relative to ``directory``, '/'-separated) of every video file under it, sorted; linked
    folders are followed, each real folder once (see vidtwin.data.folders.list_video_files)."""
    from .folders import list_video_files

    paths = list_video_files(directory)
    return sorted(os.path.relpath(path, directory).replace(os.sep, "/") for path in paths)


def check_videos(directory: str, relative_paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split paths into (readable, [(unreadable, reason)]) by probing each one."""
    video_io = _video_io()
    readable, unreadable = [], []
    for relative in tqdm(relative_paths, desc="checking videos", unit="video"):
        try:
            video_io.probe_video(os.path.join(directory, relative))
            readable.append(relative)
        except video_io.VideoReadError as error:
            unreadable.append((relative, str(error)))
    return readable, unreadable


def split_unlistable(relative_paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split paths into (listable, [(unlistable, reason)]): the dataset strips white space from each path."""
    listable = [path for path in relative_paths if path == path.strip()]
    unlistable = [(path, f"{path!r} begins or ends with white space, which the dataset strips; rename it")
                  for path in relative_paths if path != path.strip()]
    return listable, unlistable


def write_meta(output: str, relative_paths: list[str]) -> None:
    """Write the CSV to a temporary file next to ``output``, then rename it into place.

    Folders created for it are removed again when the write fails, so a failure leaves nothing.
    """
    directory = os.path.dirname(os.path.abspath(output))
    created = []
    parent = directory
    while not os.path.isdir(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    try:
        os.makedirs(directory, exist_ok=True)
        with atomic_path(output) as temp, open(temp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["videos"])
            writer.writerows([path] for path in relative_paths)
    except OSError:
        for folder in created:  # innermost first
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        raise
