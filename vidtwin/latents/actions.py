"""Actions of a latent dataset: one discrete action per clip, for world models.

``encode-dataset --actions-column NAME`` reads, from a column of the meta CSV, one letter per clip
of each video: ``RRUULDLL`` for a video of 8 clips, the letter of clip ``k`` being the action taken
*during* clip ``k`` (its frames ``[k*T, (k+1)*T)`` of the sampled video). A letter is any one of
``A-Z``, ``a-z`` and ``0-9``, so any discrete action set of up to 62 actions fits. The manifest
records where the actions came from and the vocabulary, the sorted set of letters seen::

    "actions": {"source": "column actions", "vocabulary": ["D", "L", "R", "U"]}

and the index gets one more column, ``action``: each clip's action as an index into the
vocabulary (``index.csv`` shows the letter). Datasets written without actions have neither;
:class:`~vidtwin.latents.LatentDataset` then has ``actions`` None and its items no ``action``.

Like labels, actions are not part of the dataset's identity (no shard holds them): a rerun of
the same command with another column, or with none, rewrites them in the index and the manifest
without encoding any clip again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vidtwin.errors import UserError
from vidtwin.latents.labels import read_video_column
from vidtwin.latents.shards import LatentDatasetError

MANIFEST_KEY = "actions"
INDEX_COLUMN = "action"
_LETTERS = re.compile(r"[A-Za-z0-9]*")


class ActionError(ValueError, UserError):
    """Actions that cannot be read or do not fit the clips: a missing column or value, a letter
    outside ``[A-Za-z0-9]``, a video whose letter count is not its clip count. The message names
    the file, row or video."""


def actions_from_csv(meta_path: str | os.PathLike, column: str, videos: Sequence[str],
                     data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Each of ``videos`` (entries of the CSV's ``videos`` column, relative to ``data_dir``, default
    the CSV's folder) -> its action letters in ``column``.

    A listed video without letters, with a character outside ``[A-Za-z0-9]``, or listed twice with
    two action strings (under any spelling of its path), is an error naming its row.
    """
    def check_letters(letters: str, where: str) -> None:
        if not _LETTERS.fullmatch(letters):
            bad = next(letter for letter in letters if not _LETTERS.fullmatch(letter))
            raise ActionError(f"{where} has the action {bad!r} in {letters!r}; "
                              "an action is one letter of A-Z, a-z or 0-9 per clip")

    return read_video_column(meta_path, column, videos, option="--actions-column", error=ActionError, empty="actions",
                             needs="one letter per clip", plural="actions", check=check_letters, data_dir=data_dir)


def read_actions(input_path: str, videos: Sequence[str], column: str | None,
                 data_dir: str | os.PathLike | None = None) -> dict[str, str] | None:
    """Video -> action letters for ``encode-dataset --actions-column``, or None without the option
    (``data_dir``: ``--data-dir``, the folder the CSV's entries are relative to)."""
    if column is None:
        return None
    if Path(input_path).is_dir():
        raise ActionError("--actions-column reads a column of a meta CSV, and --input is a folder; "
                          "list the videos and their actions in a CSV with a 'videos' column")
    return actions_from_csv(input_path, column, videos, data_dir)


def action_vocabulary(actions: Mapping[str, str]) -> list[str]:
    """The sorted set of letters in ``actions`` (video -> letters): action ``i`` is ``vocabulary[i]``."""
    return sorted(set("".join(actions.values())))


def check_action_counts(actions: Mapping[str, str], clip_counts: Mapping[str, int]) -> None:
    """Refuse the first video whose number of letters is not its number of clips.

    ``clip_counts`` maps videos to the clips ``encode-dataset`` cuts from them; videos missing from
    it (unreadable ones, which fail on their own) are not checked.
    """
    for video, clips in clip_counts.items():
        letters = actions.get(video)
        if letters is not None and len(letters) != clips:
            raise ActionError(
                f"{video} has {len(letters)} actions ({letters[:16]}{'...' if len(letters) > 16 else ''}) but "
                f"{clips} clips are encoded from it; give one letter per clip (see 'Actions and sequences of clips' in docs/datasets.md "
                "for lining clips up with --sample-fps and the model's frames per clip)")


def clip_action_column(actions: Mapping[str, str], vocabulary: Sequence[str], videos: Sequence[str],
                       video_clips: Sequence[int], video_column: np.ndarray, clip_column: np.ndarray) -> np.ndarray:
    """(clips,) int64: the action of each index row, an index into ``vocabulary``.

    ``videos`` and ``video_clips`` are the index's videos and each one's clip count;
    ``video_column`` holds positions into ``videos``, ``clip_column`` clip numbers, as in the index.
    """
    check_action_counts(actions, dict(zip(videos, video_clips)))
    number = {letter: position for position, letter in enumerate(vocabulary)}
    per_video = [np.asarray([number[letter] for letter in actions[video]], dtype=np.int64) for video in videos]
    offsets = np.cumsum([0] + [len(codes) for codes in per_video])
    flat = np.concatenate(per_video) if per_video else np.zeros(0, np.int64)
    return flat[offsets[video_column] + clip_column] if len(video_column) else np.zeros(0, np.int64)


def manifest_entry(source: str, vocabulary: Sequence[str]) -> dict:
    return {"source": source, "vocabulary": list(vocabulary)}


def vocabulary_from_manifest(manifest: Mapping, where: str) -> list[str] | None:
    """The action vocabulary a manifest records, or None for a dataset written without actions.
    A damaged entry raises :class:`~vidtwin.latents.shards.LatentDatasetError` naming ``where``."""
    entry = manifest.get(MANIFEST_KEY)
    if entry is None:
        return None
    try:
        vocabulary = [str(letter) for letter in entry["vocabulary"]]
    except (KeyError, TypeError) as error:
        raise LatentDatasetError(f"{where}: its actions entry is damaged ({error}); run the same encode-dataset command "
                                 "again to rewrite it") from None
    if len(set(vocabulary)) != len(vocabulary) or not all(len(letter) == 1 and _LETTERS.fullmatch(letter) for letter in vocabulary):
        raise LatentDatasetError(f"{where}: its action vocabulary {vocabulary[:8]!r} is not a list of distinct letters; "
                                 "run the same encode-dataset command again to rewrite it")
    return vocabulary


__all__ = [
    "INDEX_COLUMN",
    "MANIFEST_KEY",
    "ActionError",
    "action_vocabulary",
    "actions_from_csv",
    "check_action_counts",
    "clip_action_column",
    "manifest_entry",
    "read_actions",
    "vocabulary_from_manifest",
]
