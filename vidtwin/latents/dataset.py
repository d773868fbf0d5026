"""Reading a latent dataset (``vidtwin encode-dataset``) back for downstream training.

Example::

    from torch.utils.data import DataLoader
    from vidtwin.data import LatentDataset, collate_latents

    dataset = LatentDataset("latents/")                 # opens the index; no shard is read yet
    item = dataset[0]                                    # one clip
    item["structure"]                                    # (d_S, Q, h_S, w_S) float32
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=4, collate_fn=collate_latents)
    for batch in loader:
        batch["latents"]                                 # VidTwinLatents, ready for model.decode
        batch["video"], batch["clip"]                    # where each clip came from

A dataset of an FSQ model (``regularizer: fsq``) stores integer tokens: ``item["structure"]`` is then
``(Q, h_S, w_S)`` int64, ``dataset.codebook`` names the levels of both latents, and a collated batch
has ``batch["tokens"]`` (:class:`~vidtwin.models.VidTwinTokens`) besides ``batch["latents"]`` (the codes).

Sequences of clips, for world models: ``LatentDataset(root, sequence_length=N)`` gives windows of
``N`` consecutive clips of one video (stride 1; never across two videos), with each clip's action
when the dataset was encoded with ``--actions-column``::

    dataset = LatentDataset("tokens/", sequence_length=4)
    item = dataset[0]
    item["structure"]                                    # (4, Q, h_S, w_S) int64 tokens
    item["actions"]                                      # (4,) int64, indices into dataset.actions
    loader = DataLoader(dataset, batch_size=8, collate_fn=collate_latent_sequences)

Shards are opened lazily, memory-mapped, once per process (DataLoader workers open their own),
and only the requested clip is copied out of a shard, so opening a dataset of a million clips
costs reading its index, and memory does not grow with the number of shards read.

Nothing read is trusted blindly: the index may name only files of ``shards/``; a shard must
record this dataset's identity (shards written before identities were recorded pass) and hold
tensors of the dtype and shape the model config gives; every clip read is checked for NaN and
infinite values (``check_values=False`` skips that; ``scripts/benchmark_dataset.py --read`` shows
its cost) and, for tokens, for values outside the codebook.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from vidtwin.hints import command
from vidtwin.latents.latent_file import (
    WEIGHTS_FINGERPRINT_KEY,
    codebook_levels,
    stored_tokens_to_codes,
    token_dtype,
    unpack_tokens,
)
from vidtwin.models.config import LATENT_NAMES, VidTwinConfig

from .actions import INDEX_COLUMN as ACTION_COLUMN
from .actions import vocabulary_from_manifest
from .labels import ClassLabels
from .shards import (
    LatentDatasetError,
    check_manifest,
    identity_digest,
    read_failures,
    read_index,
    read_manifest,
    read_shard_info,
    shard_path,
)

# safetensors' names of the dtypes a shard may hold
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.uint8: "U8", torch.uint16: "U16", torch.int32: "I32", torch.int64: "I64"}


class LatentDataset(Dataset):
    """The clips of a latent dataset directory, in index order (input order, then clip order).

    ``ds[i]`` is a dict: ``structure`` ``(d_S, Q, h_S, w_S)``, ``dynamics_x`` ``(d_D, T, w_D)`` and
    ``dynamics_y`` ``(d_D, T, h_D)`` float32 tensors (posterior means); ``video`` (the source as
    given), ``clip`` (the clip number in that video), ``first_frame``, ``num_frames`` (real frames
    of the clip) and ``fps``. For an FSQ model the three latents are int64 tokens instead, without
    the channel axis: ``(Q, h_S, w_S)``, ``(T, w_D)`` and ``(T, h_D)``.
    A dataset encoded with labels (``--label-column`` / ``--labels-from-folders``) also gives
    ``label``, the int class of the clip's video, an index into ``classes``; one encoded with
    ``--actions-column`` gives ``action``, an int64 scalar tensor, the index into ``actions`` of the
    action taken during the clip.

    With ``sequence_length=N``, ``ds[i]`` is a window of ``N`` consecutive clips of one video
    instead: the three latents stacked on a new leading clip axis (tokens: ``structure``
    ``(N, Q, h_S, w_S)``, ``dynamics_x`` ``(N, T, w_D)``, ``dynamics_y`` ``(N, T, h_D)`` int64;
    float latents ``(N, d, ...)``), ``actions`` ``(N,)`` int64 with actions, ``video``,
    ``first_clip`` (the clip number of its first clip) and ``label`` with labels. Windows start
    at every clip (stride 1) and never cross a video boundary; a video of fewer than ``N`` clips
    gives none. ``len(ds)`` is then the number of windows.

    Attributes:
        config: the model config (a dict for ``VidTwinConfig(**config)``), to decode the latents.
        codebook: ``{"structure": levels, "dynamics": levels}`` of an FSQ model's tokens; None for
            Gaussian latents.
        classes: the class names in label order; None for a dataset encoded without labels.
        labels: the :class:`~vidtwin.latents.labels.ClassLabels` of the manifest, or None.
        actions: the action vocabulary (``["D", "L", "R", "U"]``): action ``i`` is ``actions[i]``;
            None for a dataset encoded without actions.
        sequence_length: ``N``, or None for one clip per item.
        sequence_windows: with ``sequence_length``, an int64 array ``(windows, 2)``: for window
            ``i``, the dataset clip index of its first clip (its clips are that index and the
            ``N - 1`` after it, in index order) and its video's position in ``videos``. None
            without ``sequence_length``.
        manifest: the whole manifest (weights fingerprint, sampling settings, version).
        index: the index as columns (:class:`~vidtwin.latents.shards.IndexColumns`).
        videos: the encoded sources, in input order.
        failures: source -> reason, for the videos that could not be read.

    Args:
        root: the dataset folder written by ``vidtwin encode-dataset``.
        check_values: check every clip read for NaN and infinite values (float latents); the
            cost is small beside reading the clip (``scripts/benchmark_dataset.py --read``).
        sequence_length: give windows of this many consecutive clips of one video (>= 1) as
            items; None (default): one clip per item.

    Raises:
        LatentDatasetError: the folder is not a finished dataset, or a file of it is damaged or
            from another dataset; the message names the file.
    """

    def __init__(self, root: str | os.PathLike, check_values: bool = True, sequence_length: int | None = None):
        if sequence_length is not None and (isinstance(sequence_length, bool) or not isinstance(sequence_length, int)
                                            or sequence_length < 1):
            raise LatentDatasetError(f"sequence_length must be a whole number >= 1 (clips per window), got {sequence_length!r}")
        self.root = Path(root)
        self.check_values = check_values
        manifest = read_manifest(self.root)
        if manifest is None:
            raise LatentDatasetError(f"{self.root} is not a latent dataset (no manifest.json); write one with `{command('encode-dataset')}`")
        if manifest.get("status") != "complete":
            raise LatentDatasetError(
                f"{self.root} is an unfinished latent dataset (status {manifest.get('status')!r}); run the same encode-dataset command again to finish it"
            )
        check_manifest(manifest, self.root)
        self.manifest = manifest
        self.config: dict = manifest["identity"]["model_config"]
        self.codebook: dict | None = codebook_levels(self.config)
        self.index = read_index(self.root)
        self._shard_paths = [shard_path(self.root, name) for name in self.index.shards]
        self.failures = read_failures(self.root)
        self._identity = identity_digest(manifest["identity"])
        self._expected = self._expected_tensors()
        self._shards: dict[int, object] = {}  # shard position -> open safe_open handle, per process
        self.labels = ClassLabels.from_manifest(manifest, str(self.root / "manifest.json"))
        self.classes: list[str] | None = self.labels.classes if self.labels is not None else None
        self._video_labels = self._labels_by_video_position()
        self.actions: list[str] | None = vocabulary_from_manifest(manifest, str(self.root / "manifest.json"))
        self._clip_actions = self._action_column()
        self.sequence_length = sequence_length
        self.sequence_windows: np.ndarray | None = self._windows() if sequence_length is not None else None

    def _expected_tensors(self) -> dict[str, tuple[str, tuple | None]]:
        """Latent name -> (safetensors dtype, per-clip shape or None where the config gives none)."""
        try:
            model_config = VidTwinConfig.from_dict(self.config)
        except (TypeError, ValueError):  # a config of an older or hand-made dataset: dtypes only
            model_config = None
        if self.codebook is None:
            shapes = model_config.latent_shapes() if model_config else {}
            return {name: ("F32", shapes.get(name)) for name in LATENT_NAMES}
        shapes = model_config.token_shapes() if model_config else {}
        return {name: (_SAFETENSORS_DTYPES[token_dtype(self._codebook_size(name))], shapes.get(name))
                for name in LATENT_NAMES}

    def _labels_by_video_position(self) -> np.ndarray | None:
        """(videos,) int64: the label of each index video (datasets without labels: None)."""
        if self.labels is None:
            return None
        missing = [video for video in self.index.videos if video not in self.labels.videos]
        if missing:
            raise LatentDatasetError(f"{self.root}: its manifest records no class for {missing[0]} "
                                     f"(and {len(missing) - 1} more); encode the dataset again with its labels")
        return np.asarray([self.labels.videos[video] for video in self.index.videos], dtype=np.int64)

    def _action_column(self) -> np.ndarray | None:
        """(clips,) int64: each clip's action, checked against the vocabulary (None without actions)."""
        if self.actions is None:
            return None
        column = self.index.columns.get(ACTION_COLUMN)
        if column is None or len(column) != len(self.index):
            raise LatentDatasetError(f"{self.root}: its manifest records actions but its index has no action column; "
                                     "run the same encode-dataset command again to rewrite the index")
        if len(column) and (int(column.min()) < 0 or int(column.max()) >= len(self.actions)):
            raise LatentDatasetError(f"{self.root}: its index holds actions outside its vocabulary of {len(self.actions)}; "
                                     "run the same encode-dataset command again to rewrite the index")
        return column

    def _windows(self) -> np.ndarray:
        """(windows, 2) int64: (first clip index, video position) of every window of N consecutive clips."""
        length, video, clip = self.sequence_length, self.index.columns["video"], self.index.columns["clip"]
        if len(video) > 1 and not bool(np.all((np.diff(video) > 0) | ((np.diff(video) == 0) & (np.diff(clip) > 0)))):
            raise LatentDatasetError(f"the index of {self.root} is not in video and clip order; "
                                     "run the same encode-dataset command again to rewrite it")
        if len(video) < length:
            return np.zeros((0, 2), dtype=np.int64)
        # A window starting at index i holds clips i .. i+N-1: one video, with no clip number missing.
        first = np.arange(len(video) - length + 1)
        last = first + length - 1
        whole = (video[first] == video[last]) & (clip[last] - clip[first] == length - 1)
        first = first[whole]
        return np.stack([first, video[first]], axis=1).astype(np.int64)  # (windows, 2)

    def clip_labels(self) -> np.ndarray | None:
        """(clips,) int64: the label of every clip in index order, or None without labels."""
        if self._video_labels is None:
            return None
        return self._video_labels[self.index.columns["video"]]

    def _codebook_size(self, name: str) -> int:
        return math.prod(self.codebook["structure" if name == "structure" else "dynamics"])

    @property
    def videos(self) -> list[str]:
        return self.index.videos

    def __len__(self) -> int:
        return len(self.index) if self.sequence_windows is None else len(self.sequence_windows)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            unit = "clips" if self.sequence_windows is None else f"windows of {self.sequence_length} clips"
            raise IndexError(f"index {index} out of range for a latent dataset of {len(self)} {unit}")
        if self.sequence_windows is None:
            return self.clip(index)
        first, video = (int(value) for value in self.sequence_windows[index])
        clips = [self.clip(first + offset) for offset in range(self.sequence_length)]
        item = {name: torch.stack([clip[name] for clip in clips]) for name in LATENT_NAMES}  # each (N, ...)
        if self._clip_actions is not None:
            item["actions"] = torch.from_numpy(self._clip_actions[first : first + self.sequence_length].copy())  # (N,)
        item["video"] = self.index.videos[video]
        item["first_clip"] = int(self.index.columns["clip"][first])
        if self._video_labels is not None:
            item["label"] = int(self._video_labels[video])
        return item

    def clip(self, index: int) -> dict:
        """One clip by its index in clip order, whatever ``sequence_length`` is (see the class docstring)."""
        if not -len(self.index) <= index < len(self.index):
            raise IndexError(f"clip {index} out of range for a latent dataset of {len(self.index)} clips")
        index = index % len(self.index)
        columns = self.index.columns
        shard, row = int(columns["shard"][index]), int(columns["row"][index])
        handle = self._open(shard)
        item = {name: handle.get_slice(name)[row : row + 1][0] for name in LATENT_NAMES}  # each without the clip axis
        if self.codebook is not None:  # stored in the smallest dtype that holds the codebook
            item = {name: unpack_tokens(tokens) for name, tokens in item.items()}
            for name, tokens in item.items():  # int64 now: min and max work for every stored dtype
                low, high = torch.aminmax(tokens)
                if int(low) < 0 or int(high) >= self._codebook_size(name):
                    raise self._damaged(shard, f"{name} of row {row} holds tokens outside the codebook's "
                                               f"[0, {self._codebook_size(name)})")
        elif self.check_values:
            for name, latent in item.items():
                # A sum is NaN or infinite when any value is: one reduction, several times cheaper than isfinite().all().
                if not math.isfinite(float(latent.sum())):
                    problem = "NaN or infinite values" if not bool(torch.isfinite(latent).all()) else "values too large to be latents"
                    raise self._damaged(shard, f"{name} of row {row} holds {problem}")
        item["video"] = self.index.videos[columns["video"][index]]
        if self._video_labels is not None:
            item["label"] = int(self._video_labels[columns["video"][index]])
        if self._clip_actions is not None:
            item["action"] = torch.tensor(int(self._clip_actions[index]), dtype=torch.int64)
        for name in ("clip", "first_frame", "num_frames", "fps"):
            item[name] = columns[name][index].item()
        return item

    def _damaged(self, shard: int, problem: str) -> LatentDatasetError:
        return LatentDatasetError(
            f"shard {self._shard_paths[shard]} is damaged: {problem}; delete it and run the same encode-dataset "
            "command again to encode its clips again"
        )

    def _open(self, shard: int):
        handle = self._shards.get(shard)
        if handle is None:
            path = self._shard_paths[shard]
            if not path.is_file():
                raise LatentDatasetError(f"{path} is listed in the index but missing; run encode-dataset again to rebuild it")
            info = read_shard_info(path, dataset=self._identity)  # refuses a shard of another dataset
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError) as error:
                raise LatentDatasetError(
                    f"shard {path} is unreadable ({error}); delete it and run the same encode-dataset command again"
                ) from None
            self._check_tensors(shard, handle, len(info.rows))
            self._shards[shard] = handle
        return handle

    def _check_tensors(self, shard: int, handle, num_rows: int) -> None:
        """Refuse a shard whose tensors are missing, or of another dtype or shape than the config gives."""
        present = set(handle.keys())
        for name, (dtype, clip_shape) in self._expected.items():
            if name not in present:
                raise self._damaged(shard, f"it has no {name} tensor")
            tensor = handle.get_slice(name)
            found_dtype, shape = tensor.get_dtype(), tuple(tensor.get_shape())
            if found_dtype != dtype:
                raise self._damaged(shard, f"{name} is {found_dtype}, not {dtype}")
            expected = (num_rows, *(clip_shape if clip_shape is not None else shape[1:]))
            if shape != tuple(expected):
                raise self._damaged(shard, f"{name} has shape {shape}, not {tuple(expected)} ({num_rows} clips)")
        rows = self.index.columns["row"][self.index.columns["shard"] == shard]
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= num_rows):
            raise LatentDatasetError(f"the index of {self.root} names rows that shard {self._shard_paths[shard]} does not "
                                     "hold; run the same encode-dataset command again to rewrite it")

    def __getstate__(self) -> dict:
        # Open shard handles belong to one process: a DataLoader worker opens its own.
        return {**self.__dict__, "_shards": {}}

    def clips_of(self, video: str) -> list[int]:
        """Dataset indices of the clips of one source video, in clip order."""
        position = self.index.videos.index(video) if video in self.index.videos else -1
        indices = np.flatnonzero(self.index.columns["video"] == position)
        if position < 0 or not len(indices):
            known = f"; it failed: {self.failures[video]}" if video in self.failures else ""
            raise LatentDatasetError(f"{video} is not a video of the latent dataset {self.root}{known}")
        return sorted(indices.tolist(), key=lambda i: self.index.columns["clip"][i])

    def encoded_video(self, video: str):
        """All clips of one source video as an :class:`~vidtwin.latents.latent_file.EncodedVideo`,
        which ``decode_latents`` (and ``vidtwin decode``) turns back into the video."""
        from vidtwin.latents.latent_file import EncodedVideo

        indices = self.clips_of(video)
        first = self.index.row(indices[0])
        if len(indices) != first["video_clips"]:
            raise LatentDatasetError(f"the latent dataset {self.root} holds {len(indices)} of the {first['video_clips']} clips of {video}")
        items = [self.clip(i) for i in indices]
        tensors = {name: torch.stack([item[name] for item in items]) for name in LATENT_NAMES}  # each (clips, ...)
        if self.codebook is not None:
            tensors = {name: stored_tokens_to_codes(name, tokens, self.codebook) for name, tokens in tensors.items()}
        # Each tensor gets a tile axis of length 1: (clips, 1, C, ...), the layout of a --spatial resize latent file.
        tensors = {name: tensor.unsqueeze(1) for name, tensor in tensors.items()}
        identity = self.manifest["identity"]
        sampling = identity["sampling"]
        fingerprint = identity.get("weights_fingerprint")
        return EncodedVideo(
            **tensors, fps=first["fps"], num_frames=first["video_frames"], clip_len=sampling["input_size"][0],
            original_size=(first["height"], first["width"]), output_size=tuple(sampling["input_size"][1:]),
            spatial="resize", config=self.config, source=video,
            extra={WEIGHTS_FINGERPRINT_KEY: fingerprint} if fingerprint else {},
        )


def collate_latents(items: list[dict], codebook: dict | None = None) -> dict:
    """Stack dataset items into ``{"latents": VidTwinLatents, "video": [...], "clip": (B,) ...}``.

    ``batch["latents"]`` holds ``structure`` ``(B, d_S, Q, h_S, w_S)``, ``dynamics_x``
    ``(B, d_D, T, w_D)`` and ``dynamics_y`` ``(B, d_D, T, h_D)``: pass it to ``model.decode``.
    Items of an FSQ dataset (integer tokens) also give ``batch["tokens"]``, a ``VidTwinTokens`` of
    int64 ``(B, Q, h_S, w_S)``, ``(B, T, w_D)``, ``(B, T, h_D)``; their codes, for ``batch["latents"]``,
    need the levels: pass ``codebook=dataset.codebook`` (with ``functools.partial``), or leave it
    out to get the tokens alone. Items with labels give ``batch["label"]``, int64 ``(B,)``, and
    items with actions ``batch["action"]``, int64 ``(B,)``.
    """
    from vidtwin.models import VidTwinLatents, VidTwinTokens

    stacked = {name: torch.stack([item[name] for item in items]) for name in LATENT_NAMES}  # each (B, ...)
    batch: dict = {}
    if stacked["structure"].is_floating_point():
        batch["latents"] = VidTwinLatents(*stacked.values())
    else:
        batch["tokens"] = VidTwinTokens(*stacked.values())
        if codebook is not None:
            batch["latents"] = VidTwinLatents(*(stored_tokens_to_codes(name, tokens, codebook)
                                                for name, tokens in stacked.items()))
    if "label" in items[0]:
        batch["label"] = torch.tensor([item["label"] for item in items], dtype=torch.long)  # (B,)
    if "action" in items[0]:
        batch["action"] = torch.stack([item["action"] for item in items])  # (B,)
    return {
        **batch,
        "video": [item["video"] for item in items],
        "clip": torch.tensor([item["clip"] for item in items]),
        "first_frame": torch.tensor([item["first_frame"] for item in items]),
        "num_frames": torch.tensor([item["num_frames"] for item in items]),
        "fps": torch.tensor([item["fps"] for item in items], dtype=torch.float64),
    }


def collate_latent_sequences(items: list[dict]) -> dict:
    """Stack windows of ``LatentDataset(..., sequence_length=N)`` into a batch.

    Returns ``structure`` ``(B, N, ...)``, ``dynamics_x`` ``(B, N, ...)`` and ``dynamics_y``
    ``(B, N, ...)`` as the items hold them (int64 tokens of an FSQ dataset: ``(B, N, Q, h_S, w_S)``,
    ``(B, N, T, w_D)``, ``(B, N, T, h_D)``), ``actions`` ``(B, N)`` int64 when the dataset has
    actions, ``label`` ``(B,)`` int64 when it has labels, ``video`` (a list) and ``first_clip``
    ``(B,)`` int64.
    """
    batch: dict = {name: torch.stack([item[name] for item in items]) for name in LATENT_NAMES}  # each (B, N, ...)
    if "actions" in items[0]:
        batch["actions"] = torch.stack([item["actions"] for item in items])  # (B, N)
    if "label" in items[0]:
        batch["label"] = torch.tensor([item["label"] for item in items], dtype=torch.long)  # (B,)
    batch["video"] = [item["video"] for item in items]
    batch["first_clip"] = torch.tensor([item["first_clip"] for item in items], dtype=torch.long)  # (B,)
    return batch
