"""The files of a latent dataset, as written by ``vidtwin encode-dataset``.

A latent dataset is a directory::

    OUT/
      manifest.json        what made it: model config, checkpoint fingerprint, sampling, version, status
      index.csv            one row per clip (columns: INDEX_COLUMNS), in input order then clip order
      index.safetensors    the same index as columns, which LatentDataset reads without parsing text
      failures.csv         every video that could not be read, with the reason
      shards/
        shard-r00000-000000.safetensors   clips encoded by rank 0, first shard
        shard-r00001-000000.safetensors   ...

A shard holds at most ``--shard-size`` clips: the tensors ``structure`` ``(N, d_S, Q, h_S, w_S)``,
``dynamics_x`` ``(N, d_D, T, w_D)`` and ``dynamics_y`` ``(N, d_D, T, h_D)`` (float32, the posterior
means), and in its metadata the rows that say which clip each entry is (``SHARD_ROW_COLUMNS``),
the digest of its dataset's identity (:func:`identity_digest`), so that a shard copied in from
another dataset is refused, and what each of its source videos was when it was read
(:func:`source_fingerprint`), so that the clips of a video that
was replaced since are never mixed with the new one's. Shards written before these two fields
existed have neither and are taken as they are.
Each shard is written to a hidden temporary name in ``shards/`` and renamed into place, so a
shard under its final name is always complete, and it is never rewritten: a resumed job only
adds shards. The index and failures files are derived from the shards and rewritten at the end
of every run.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vidtwin.hints import command
from vidtwin.atomic_io import atomic_path
from vidtwin.errors import UserError

FORMAT_NAME = "vidtwin-latent-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.csv"
INDEX_TABLE = "index.safetensors"
FAILURES = "failures.csv"
SHARD_DIR = "shards"
# What a shard records of each of its clips, in this order.
SHARD_ROW_COLUMNS = (
    "video",  # the source video as given (CSV entry, or path relative to the input folder)
    "clip",  # clip number within the video, from 0
    "first_frame",  # source frame number of the clip's first frame
    "num_frames",  # real frames in the clip (the last clip of a video is padded up to T)
    "fps",  # frame rate of the sampled frames
    "video_frames",  # sampled frames of the whole video
    "video_clips",  # clips of the whole video
    "height",  # source frame size
    "width",
)
INDEX_COLUMNS = (*SHARD_ROW_COLUMNS, "shard", "row")
# Columns an index has only when asked for: "action", each clip's action (vidtwin/latents/actions.py).
OPTIONAL_INDEX_COLUMNS = ("action",)
_SHARD_PATTERN = re.compile(r"^shard-r(\d{5})-(\d{6})\.safetensors$")


class LatentDatasetError(ValueError, UserError):
    """A latent dataset directory is missing, incomplete or unreadable; the message says which file."""


def shard_name(rank: int, sequence: int) -> str:
    return f"shard-r{rank:05d}-{sequence:06d}.safetensors"


def shard_path(root: str | os.PathLike, name: str) -> Path:
    """``root/shards/name`` for a shard name read from an index; refuses any other name.

    Only names this module writes are accepted (no folders, no ``..``, no absolute paths), so a
    damaged or hostile index cannot make a reader open, or a message name, a file outside the
    dataset's ``shards/`` folder.
    """
    if not isinstance(name, str) or not _SHARD_PATTERN.match(name):
        raise LatentDatasetError(
            f"the index of {root} names a shard {str(name)[:80]!r} that is not a file of its {SHARD_DIR}/ folder; "
            "the index is damaged: run the same encode-dataset command again to rewrite it"
        )
    return Path(root) / SHARD_DIR / name


def identity_digest(identity: Mapping) -> str:
    """A short digest of a manifest's ``identity`` (model config, weights, sampling, dtype): what
    each shard records of the dataset it belongs to."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def list_shards(root: str | os.PathLike) -> list[Path]:
    """Finished shards of a dataset (final names only; temporary files are ignored), sorted by name."""
    directory = Path(root) / SHARD_DIR
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if _SHARD_PATTERN.match(path.name))


def next_shard_sequence(root: str | os.PathLike, rank: int) -> int:
    """The sequence number after the last finished shard of ``rank`` (0 for a new rank)."""
    numbers = [int(m.group(2)) for m in (_SHARD_PATTERN.match(p.name) for p in list_shards(root)) if int(m.group(1)) == rank]
    return max(numbers, default=-1) + 1


def remove_stale_temporaries(root: str | os.PathLike, rank: int) -> int:
    """Delete the temporary files a killed writer of ``rank`` left in ``shards/``; returns how many.

    Only names this module writes (``.shard-rRRRRR-...``) are touched, and only those of ``rank``,
    so ranks that are still running are never disturbed.
    """
    directory = Path(root) / SHARD_DIR
    if not directory.is_dir():
        return 0
    prefix = f".shard-r{rank:05d}-"
    stale = [path for path in directory.iterdir() if path.name.startswith(prefix)]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


@contextlib.contextmanager
def _atomic_dataset_file(path: Path) -> Iterator[Path]:
    """:func:`~vidtwin.atomic_io.atomic_path` for the dataset's files, with a failed write (a full
    disk, a folder that became read-only) turned into one clear error. The file is written under a
    temporary name and renamed into place, so the failure leaves nothing half-written, and the same
    command resumes once the cause is fixed.
    """
    try:
        with atomic_path(path) as temp:
            yield temp
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error type
        reason = getattr(error, "strerror", None) or str(error)
        raise LatentDatasetError(
            f"cannot write {path}: {reason}; fix that (free space, permissions) and run the same command again: "
            "finished shards are kept"
        ) from None


def write_shard(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], rows: list[dict],
                dataset: str | None = None, sources: Mapping[str, dict] | None = None) -> None:
    """Write one shard atomically: ``tensors`` (each with ``len(rows)`` entries) and the clips' rows.

    ``dataset`` is the :func:`identity_digest` of the dataset's identity; ``sources`` maps each
    video of ``rows`` to what that video was when its clips were read (size, mtime, hashes).
    """
    for name, tensor in tensors.items():
        if tensor.shape[0] != len(rows):
            raise ValueError(f"shard tensor {name} has {tensor.shape[0]} entries for {len(rows)} rows")
    metadata = {
        "format": FORMAT_NAME,
        "columns": json.dumps(SHARD_ROW_COLUMNS),
        "rows": json.dumps([[row[column] for column in SHARD_ROW_COLUMNS] for row in rows]),
    }
    if dataset is not None:
        metadata["dataset"] = dataset
    if sources is not None:
        metadata["sources"] = json.dumps(dict(sources), sort_keys=True)
    path = Path(path)
    with _atomic_dataset_file(path) as temp:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(temp), metadata=metadata)


_HASHED_BYTES = 2**20  # of each end of a source video


def source_fingerprint(path: str | os.PathLike) -> dict:
    """What a source video is now: ``{"size", "mtime_ns", "sha256"}``, the digest covering its size
    and its first and last MB. Raises OSError when it cannot be read.

    Reading 2 MB costs little beside decoding the video, and tells a replaced video (a new
    recording under the same name) from the one whose clips a shard holds.
    """
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        digest = hashlib.sha256(str(stat.st_size).encode())
        digest.update(handle.read(_HASHED_BYTES))
        if stat.st_size > _HASHED_BYTES:
            handle.seek(max(_HASHED_BYTES, stat.st_size - _HASHED_BYTES))
            digest.update(handle.read(_HASHED_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()[:32]}


def same_source(recorded: dict | None, path: str | os.PathLike) -> bool:
    """Whether the video at ``path`` is still the one ``recorded`` (a :func:`source_fingerprint`).

    The same size and mtime are taken as the same video without reading it, as make and rsync do;
    otherwise the hashes decide (a copy with a new mtime is still the same video). A shard written
    before fingerprints were recorded (``recorded`` None) is taken as it is.
    """
    if recorded is None:
        return True
    try:
        stat = os.stat(path)
        if (stat.st_size, stat.st_mtime_ns) == (recorded.get("size"), recorded.get("mtime_ns")):
            return True
        return stat.st_size == recorded.get("size") and source_fingerprint(path)["sha256"] == recorded.get("sha256")
    except OSError:  # gone or unreadable: its clips cannot be trusted to be of what the input names now
        return False


@dataclass
class ShardInfo:
    """What a shard's metadata says: its rows, its dataset and its source videos (no tensor is read)."""

    rows: list[dict]
    dataset: str | None  # identity_digest of its dataset; None in shards written before it was recorded
    sources: dict[str, dict] = field(default_factory=dict)  # video -> source_fingerprint; {} in older shards


def read_shard_info(path: str | os.PathLike, dataset: str | None = None) -> ShardInfo:
    """The metadata of a shard; with ``dataset`` (an :func:`identity_digest`), also refuse a shard
    that records another dataset."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            metadata = reader.metadata() or {}
        if metadata.get("format") != FORMAT_NAME:
            raise LatentDatasetError(f"{path} is not a shard of a VidTwin latent dataset")
        columns = json.loads(metadata["columns"])
        info = ShardInfo([dict(zip(columns, values)) for values in json.loads(metadata["rows"])],
                         metadata.get("dataset"), json.loads(metadata.get("sources") or "{}"))
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise LatentDatasetError(f"shard {path} is unreadable ({error}); delete it and run encode-dataset again") from None
    if dataset is not None and info.dataset is not None and info.dataset != dataset:
        raise LatentDatasetError(
            f"shard {path} belongs to another latent dataset (made with other settings); "
            f"move it out of {Path(path).parent} and run the same encode-dataset command again"
        )
    return info


def read_shard_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a shard (its metadata only; no tensor is read)."""
    return read_shard_info(path).rows


# ----------------------------------------------------------------------------------------------
# manifest, index and failures
# ----------------------------------------------------------------------------------------------


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of ``root``, or None when there is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LatentDatasetError(f"{path} is unreadable ({error}); use another --output or --overwrite") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise LatentDatasetError(f"{path} is not the manifest of a VidTwin latent dataset")
    return manifest


def check_manifest(manifest: dict, root: str | os.PathLike) -> None:
    """Raise :class:`LatentDatasetError` unless ``manifest`` has the identity a reader and a resume
    rely on: a model config, and sampling whose ``input_size`` is that config's ``[T, h, w]``."""
    path = Path(root) / MANIFEST

    def damaged(problem: str) -> LatentDatasetError:
        return LatentDatasetError(
            f"{path} is damaged ({problem}); write the dataset again with encode-dataset --overwrite, or use another --output"
        )

    identity = manifest.get("identity")
    if not isinstance(identity, dict):
        raise damaged("it has no identity")
    config, sampling = identity.get("model_config"), identity.get("sampling")
    if not isinstance(config, dict):
        raise damaged("its identity has no model_config")
    if not isinstance(sampling, dict):
        raise damaged("its identity has no sampling")
    size = sampling.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(type(n) is int and n > 0 for n in size)):
        raise damaged(f"sampling.input_size is {size!r}, not [frames, height, width]")
    expected = config.get("input_size")
    if expected is not None and list(expected) != size:
        raise damaged(f"sampling.input_size is {size} but the model config's input_size is {list(expected)}")


def write_manifest(root: str | os.PathLike, manifest: dict) -> None:
    with _atomic_dataset_file(Path(root) / MANIFEST) as temp:
        temp.write_text(json.dumps({"format": FORMAT_NAME, **manifest}, indent=2, sort_keys=True) + "\n", encoding="utf-8", newline="")


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict]) -> None:
    columns = list(columns)
    with _atomic_dataset_file(path) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def write_failures(root: str | os.PathLike, failures: Mapping[str, str]) -> None:
    _write_csv(Path(root) / FAILURES, ("video", "reason"), ({"video": v, "reason": r} for v, r in failures.items()))


@dataclass
class IndexColumns:
    """The index held as columns: a million clips take tens of MB, not a dict per clip.

    ``columns`` maps each of INDEX_COLUMNS, and those of OPTIONAL_INDEX_COLUMNS the dataset has, to a
    ``(num_clips,)`` array (``fps`` float64, the rest int64); ``video`` and ``shard`` are positions
    into the ``videos`` and ``shards`` name lists, ``action`` into the manifest's action vocabulary.
    Numpy arrays are also shared without copies by forked DataLoader workers, where lists of
    Python objects would be copied page by page.
    """

    videos: list[str]  # distinct source names, in index order
    shards: list[str]  # shard file names
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["clip"])

    def row(self, index: int) -> dict:
        values = {name: column[index].item() for name, column in self.columns.items()}
        values["video"] = self.videos[values["video"]]
        values["shard"] = self.shards[values["shard"]]
        return values


def write_index(root: str | os.PathLike, index: IndexColumns, action_vocabulary: list[str] | None = None) -> None:
    """Write ``index.safetensors`` (the columns, read by LatentDataset in milliseconds) and
    ``index.csv`` (the same rows as text, for people and pandas; actions as their letters, from
    ``action_vocabulary``)."""
    root = Path(root)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(column)) for name, column in index.columns.items()}
    metadata = {"format": FORMAT_NAME, "videos": json.dumps(index.videos), "shards": json.dumps(index.shards)}
    with _atomic_dataset_file(root / INDEX_TABLE) as temp:
        save_file(tensors, str(temp), metadata=metadata)
    with _atomic_dataset_file(root / INDEX) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            header = [*INDEX_COLUMNS, *(name for name in OPTIONAL_INDEX_COLUMNS if name in index.columns)]
            writer.writerow(header)
            names = {"video": index.videos, "shard": index.shards, "action": action_vocabulary}
            text_columns = [
                [names[name][i] for i in index.columns[name].tolist()] if names.get(name) is not None
                else index.columns[name].tolist()
                for name in header
            ]
            writer.writerows(zip(*text_columns))


def read_index(root: str | os.PathLike) -> IndexColumns:
    """The index of a finished dataset as columns; raises LatentDatasetError when it is missing or malformed."""
    path = Path(root) / INDEX_TABLE
    if not path.is_file():
        raise LatentDatasetError(
            f"{root} has no {INDEX_TABLE}: it is not a finished latent dataset (run `{command('encode-dataset')}` to completion)"
        )
    try:
        with safe_open(str(path), framework="np") as reader:
            metadata = reader.metadata() or {}
            present = set(reader.keys())
            columns = {name: reader.get_tensor(name) for name in (*INDEX_COLUMNS, *OPTIONAL_INDEX_COLUMNS)
                       if name in INDEX_COLUMNS or name in present}
        videos, shards = json.loads(metadata["videos"]), json.loads(metadata["shards"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as error:
        raise LatentDatasetError(f"{path} is unreadable ({error}); run the same encode-dataset command again to rewrite it") from None
    return IndexColumns(videos, shards, columns)


def read_failures(root: str | os.PathLike) -> dict[str, str]:
    path = Path(root) / FAILURES
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["video"]: row["reason"] for row in csv.DictReader(handle)}
