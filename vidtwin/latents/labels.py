"""Class labels of a latent dataset: one class per source video, recorded in the manifest.

``encode-dataset --label-column NAME`` takes each video's class from a column of its meta CSV;
``--labels-from-folders`` takes it from the first folder level under the input folder, as
torchvision's ``ImageFolder`` does (``UCF-101/ApplyEyeMakeup/v_...avi`` is of class
``ApplyEyeMakeup``). Either way the manifest gets::

    "labels": {"source": "column label" | "folders",
               "classes": ["0-down", "0-left", ...],     # the class names, in label order
               "videos": {"train/00000.mp4": 7, ...}}    # each video's label, an index into classes

A video is one file however the CSV spells it: ``train/x.mp4``, ``./train/x.mp4`` and a link to
it are the same video (:func:`video_key`), listed twice; listed twice with two classes, it is an
error naming both rows.

Classes are sorted by name, as ``ImageFolder`` sorts them, or by value when every name is a whole
number (``2`` before ``10``), so the same data always gets the same labels. Datasets written
without labels have no ``labels`` entry; :class:`~vidtwin.latents.LatentDataset` then has
``classes`` None and its items no ``label``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Callable, Mapping, Sequence

from vidtwin.errors import UserError

MANIFEST_KEY = "labels"


class LabelError(ValueError, UserError):
    """Labels that cannot be read: a missing column or value, a video with two classes, a video
    outside any class folder. The message names the file, row or video."""


@dataclass
class ClassLabels:
    """Each video's class: ``classes`` (names in label order) and ``videos`` (name -> label)."""

    source: str  # "column NAME" or "folders": where the names came from
    classes: list[str]
    videos: dict[str, int]

    @classmethod
    def from_names(cls, source: str, names: Mapping[str, str]) -> "ClassLabels":
        """Video -> class name pairs; the classes are numbered in :func:`class_order`."""
        classes = class_order(set(names.values()))
        number = {name: label for label, name in enumerate(classes)}
        return cls(source, classes, {video: number[name] for video, name in names.items()})

    def to_manifest(self) -> dict:
        return {"source": self.source, "classes": list(self.classes), "videos": dict(self.videos)}

    @classmethod
    def from_manifest(cls, manifest: Mapping, where: str) -> "ClassLabels | None":
        """The labels a manifest records, or None for a dataset written without them."""
        entry = manifest.get(MANIFEST_KEY)
        if entry is None:
            return None
        try:
            classes = [str(name) for name in entry["classes"]]
            videos = {str(video): int(label) for video, label in entry["videos"].items()}
            source = str(entry.get("source", ""))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise LabelError(f"{where}: its labels entry is damaged ({error}); encode the dataset again") from None
        bad = [video for video, label in videos.items() if not 0 <= label < len(classes)]
        if bad:
            raise LabelError(f"{where}: the label of {bad[0]} is outside its {len(classes)} classes; encode the dataset again")
        return cls(source, classes, videos)


def class_order(names: set[str]) -> list[str]:
    """Class names in label order: by value when all are whole numbers, else sorted as text."""
    if names and all(name.strip().lstrip("-").isdigit() for name in names):
        return sorted(names, key=lambda name: int(name))
    return sorted(names)


def video_key(root: str | os.PathLike, name: str) -> tuple:
    """What the video ``name`` (relative to ``root``) is, however it is spelled: its file identity
    (device, inode) when the file exists, so that ``x.mp4``, ``./x.mp4``, ``a/../x.mp4`` and a link
    to it are one video; else its normalized absolute path."""
    path = os.path.join(os.fspath(root), name)
    try:
        info = os.stat(path)
    except (OSError, ValueError):  # missing, unreadable, or a name no file can have (a NUL byte)
        return ("path", os.path.normcase(os.path.abspath(os.path.normpath(path))))
    return ("file", info.st_dev, info.st_ino)


def read_video_column(meta_path: str | os.PathLike, column: str, videos: Sequence[str], *, option: str,
                      error: type[UserError], empty: str, needs: str, plural: str,
                      check: Callable[[str, str], None] | None = None,
                      data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Each of ``videos`` (entries of the CSV's ``videos`` column) -> its value in ``column``, for a
    per-video meta-CSV option (``--label-column``, ``--actions-column``).

    A listed video without a value, one that ``check(value, where)`` refuses, or one listed twice
    with two values, is an ``error`` naming its row; ``empty``, ``needs`` and ``plural`` word the
    messages ("has no {empty} ...; every video needs {needs}", "twice, with the {plural} ...").
    Entries are one video when they are one file (:func:`video_key`, relative to ``data_dir``,
    default the CSV's folder), however they are spelled.
    """
    root = Path(data_dir) if data_dir is not None else Path(meta_path).parent
    column = column.strip()
    with open(meta_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in (reader.fieldnames or [])]
        if column not in columns:
            raise error(f"{option} {column!r} is not a column of {meta_path} (columns: {', '.join(columns)})")
        reader.fieldnames = columns
        found: dict[tuple, tuple[str, int, str]] = {}  # video_key -> (entry, row number, value) of its first row
        for row_number, row in enumerate(reader, start=2):  # row 1 is the header
            video = (row.get("videos") or "").strip()
            if not video:
                continue
            value = (row.get(column) or "").strip()
            where = f"{meta_path} row {row_number} ({video})"
            if not value:
                raise error(f"{where} has no {empty} in its {column!r} column; every video needs {needs}")
            if check is not None:
                check(value, where)
            first, first_row, first_value = found.setdefault(video_key(root, video), (video, row_number, value))
            if first_value != value:
                spelled = "" if first == video else f" (row {first_row} as {first}, row {row_number} as {video})"
                raise error(f"{meta_path} lists {first} twice{spelled}, with the {plural} {first_value!r} and {value!r}; "
                            f"a video has one")
    return {video: found[video_key(root, video)][2] for video in videos}


def labels_from_csv(meta_path: str | os.PathLike, column: str, videos: Sequence[str],
                    data_dir: str | os.PathLike | None = None) -> ClassLabels:
    """Each of ``videos`` (entries of the CSV's ``videos`` column, relative to ``data_dir``, default
    the CSV's folder) -> its class in ``column``.

    A listed video without a value, or listed twice with two values (under any spelling of its
    path), is an error naming its row.
    """
    names = read_video_column(meta_path, column, videos, option="--label-column", error=LabelError, empty="value",
                              needs="a class", plural="classes", data_dir=data_dir)
    return ClassLabels.from_names(f"column {column}", names)


def labels_from_folders(videos: Sequence[str]) -> ClassLabels:
    """The first folder of each video's path (relative to the input folder) as its class."""
    names = {}
    for video in videos:
        parts = PurePath(video).parts
        if len(parts) < 2:
            raise LabelError(f"--labels-from-folders takes each video's class from its folder under the input folder, "
                             f"and {video} lies directly in it; move it into a class folder (e.g. CLASS/{video})")
        names[video] = parts[0]
    return ClassLabels.from_names("folders", names)


def read_labels(input_path: str, videos: Sequence[str], label_column: str | None, from_folders: bool,
                data_dir: str | os.PathLike | None = None) -> ClassLabels | None:
    """The labels ``encode-dataset`` records for its input, or None when none are asked for
    (``data_dir``: ``--data-dir``, the folder a CSV's entries are relative to)."""
    if label_column is not None and from_folders:
        raise LabelError("give --label-column (a CSV input) or --labels-from-folders (a folder input), not both")
    if label_column is not None:
        if Path(input_path).is_dir():
            raise LabelError("--label-column reads a column of a meta CSV, and --input is a folder; "
                             "use --labels-from-folders to take classes from its sub-folders")
        return labels_from_csv(input_path, label_column, videos, data_dir)
    if from_folders:
        if not Path(input_path).is_dir():
            raise LabelError("--labels-from-folders takes classes from the sub-folders of a folder --input, and --input "
                             "is a CSV; use --label-column NAME to take them from one of its columns")
        return labels_from_folders(videos)
    return None


__all__ = ["ClassLabels", "LabelError", "MANIFEST_KEY", "class_order", "labels_from_csv", "labels_from_folders", "read_labels",
           "video_key"]
