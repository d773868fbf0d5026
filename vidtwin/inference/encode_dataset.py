"""``inference.py encode-dataset``: a whole dataset of videos to a sharded latent dataset.

The work runs through Lightning's ``Trainer.predict`` (the engine training uses), so it is launched
the same ways as ``vidtwin train``: ``--devices N`` on one node, torchrun or SLURM across nodes, and
``--accelerator cpu --devices 2`` for two CPU processes (gloo). Each rank encodes a disjoint,
size-balanced share of the videos (:func:`~vidtwin.inference.dataset_plan.assign_shares`) and
writes its own shards; when every rank has finished, rank 0 merges the index and the failures and
marks the manifest complete. All ranks must see the same output folder (a shared filesystem).

Resuming: finished shards are never rewritten, and a rerun of the same command encodes only the
clips that no finished shard holds, so a job killed at any moment ends, after a rerun, with the
dataset an uninterrupted run writes. A manifest written by another model, checkpoint or sampling
is refused unless ``--overwrite`` is given. A shard's clips count only while the video they came
from is still the one its shard recorded: a replaced video is encoded again and its old clips
are left out of the index. The file layout is described in :mod:`vidtwin.latents.shards`.

Stopping: SIGTERM (sent by SLURM and Kubernetes before they kill a job) and SIGUSR1 (SLURM's
warning before a requeue) stop every rank at its next safe point, after the batch in hand: the
clips encoded so far are written as a last shard, and the command exits with ``128 + signal``
(143 for SIGTERM) and a line saying how to resume. A rank that dies (a peer process) is
reported in one line by the others, without gloo's traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import vidtwin
from vidtwin.errors import PartialFailure
from vidtwin.inference.dataset_plan import ClipSampling, ClipStream, VideoSource, assign_shares, collate_clip_items
from vidtwin.inference.compiled import autoencoder_calls
from vidtwin.inference.options import InferenceError, InferenceOptions, precision_context
from vidtwin.latents.actions import INDEX_COLUMN as ACTION_COLUMN
from vidtwin.latents.actions import MANIFEST_KEY as ACTIONS_KEY
from vidtwin.latents.actions import action_vocabulary, clip_action_column
from vidtwin.latents.actions import manifest_entry as actions_manifest_entry
from vidtwin.latents.latent_file import codebook_levels, codes_to_stored_tokens, describe_config_difference
from vidtwin.latents.shards import (
    FAILURES,
    INDEX,
    INDEX_COLUMNS,
    INDEX_TABLE,
    MANIFEST,
    SHARD_DIR,
    SHARD_ROW_COLUMNS,
    IndexColumns,
    check_manifest,
    identity_digest,
    list_shards,
    next_shard_sequence,
    read_manifest,
    read_shard_info,
    remove_stale_temporaries,
    same_source,
    shard_name,
    write_failures,
    write_index,
    write_manifest,
    write_shard,
)
from vidtwin.models.config import LATENT_NAMES

logger = logging.getLogger(__name__)


@dataclass
class DatasetJob:
    """Everything one encode-dataset run needs, the same on every rank."""

    sources: list[VideoSource]
    output: Path
    sampling: ClipSampling
    identity: dict  # what the manifest must match on resume: model config, checkpoint, sampling, dtype
    shard_size: int = 4096
    batch_clips: int = 1
    compile: bool = False  # --compile: encode through torch.compile (not in the identity: eager resumes it)
    num_workers: int = 0
    overwrite: bool = False
    progress: bool = True
    stats: dict = field(default_factory=dict)  # filled on rank 0 at the end (see ShardWriter)
    labels: dict | None = None  # ClassLabels.to_manifest(): recorded in the finished manifest, not the identity
    actions: dict[str, str] | None = None  # video -> one action letter per clip: the index's action column
    actions_source: str = ""  # where the actions came from ("column actions"), for the manifest
    stop: "StopSignals" = field(default_factory=lambda: StopSignals())

    @property
    def dataset_id(self) -> str:
        """What each shard records of its dataset (:func:`~vidtwin.latents.shards.identity_digest`)."""
        return identity_digest(self.identity)

    @functools.cached_property
    def source_paths(self) -> dict[str, str]:
        """Video name as given -> its path."""
        return {source.name: source.path for source in self.sources}


class EncodingStopped(Exception):
    """A stop signal arrived; every clip encoded so far is in a finished shard."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Records SIGTERM and SIGUSR1 so that the work stops at its next safe point instead of at once.

    Lightning's own SIGTERM handler broadcasts to the other ranks from inside the handler, which
    blocks or fails with gloo's "Connection closed by peer" once a rank is gone, and its predict
    loop ignores the signal; so ours replaces it once the Trainer has installed it. On the
    process that launched Lightning's other ranks, the signal is passed on to them, and this
    class also watches them (:meth:`adopt`), in place of Lightning's watcher, which SIGKILLs the
    launcher a few seconds after any rank exits with a non-zero code, 143 included, before it
    could say why.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.signum: int | None = None
        self.children: list = []  # Lightning's launched ranks (subprocess.Popen), on their launcher
        self._previous: dict = {}

    def adopt(self, launcher) -> None:
        """Watch the ranks that Lightning's ``launcher`` started (none on other ranks) instead of Lightning."""
        self.children = list(getattr(launcher, "procs", None) or [])
        if not self.children:
            return
        for thread in threading.enumerate():  # lightning_fabric's _ChildProcessObserver
            if thread.name == "child-process-observer" and hasattr(thread, "_run"):
                thread._run = lambda: True  # its next look ends it without killing anyone

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for signum in self.SIGNALS:
                previous = signal.signal(signum, self._handle)
                self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        """Put back the handlers found before the first :meth:`install`."""
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if first:
            for child in self.children:
                if child.poll() is None:
                    child.send_signal(signum)

    def dead_peer(self) -> str | None:
        """A description of a launched rank that died (non-zero exit), if any."""
        for rank, child in enumerate(self.children, start=1):
            code = child.poll()
            if code not in (None, 0, 128 + signal.SIGTERM, 128 + signal.SIGUSR1):
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                return f"rank {rank}, pid {child.pid}, {how}"
        return None

    def wait_for_children(self, timeout: float = 300.0) -> None:
        """Let the other ranks write their last shards before this process exits; a rank still
        running after ``timeout`` seconds (stuck in a collective with a dead peer) is killed."""
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def stop_children(self) -> None:
        """Ask the ranks still running to stop at their next safe point, and wait for them."""
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        self.wait_for_children(timeout=120.0)


def peer_died(output: Path, who: str = "") -> PartialFailure:
    """The one-line failure of a rank whose peer process died."""
    return PartialFailure(
        f"a peer process of this encode-dataset job died{f' ({who})' if who else ''}; the shards finished so far are kept "
        f"in {output}: run the same command again to resume"
    )


# ----------------------------------------------------------------------------------------------
# the output folder, checked before any process starts work
# ----------------------------------------------------------------------------------------------


# What each identity entry is called in the refusal of a mismatched manifest.
IDENTITY_WORDS = {"model_config": "model config", "weights_fingerprint": "checkpoint (other weights)",
                  "sampling": "sampling", "dtype": "--dtype"}


def check_output(job: DatasetJob) -> None:
    """Refuse an output that is a file, not writable, or holds another dataset (unless --overwrite).

    What is already there is checked before anything is created, so a refused folder is left as it was.
    """
    output = job.output
    if output.exists() and not output.is_dir():
        raise InferenceError(f"--output {output} is a file; give a folder for the latent dataset")
    manifest = read_manifest(output) if output.is_dir() else None
    if manifest is not None and not job.overwrite:
        check_manifest(manifest, output)
    if manifest is None and output.is_dir():
        ours = {MANIFEST, INDEX, INDEX_TABLE, FAILURES, SHARD_DIR}
        foreign = sorted(p.name for p in output.iterdir() if p.name not in ours and not p.name.startswith("."))
        if foreign:
            raise InferenceError(
                f"--output {output} already holds other files ({', '.join(foreign[:3])}) and no latent dataset; "
                "give an empty or new folder"
            )
    if manifest is not None and not job.overwrite:
        found = manifest.get("identity", {})
        if found != job.identity:
            differences = [key for key in sorted(set(found) | set(job.identity)) if found.get(key) != job.identity.get(key)]
            detail = ", ".join(IDENTITY_WORDS.get(key, key) for key in differences)
            if "model_config" in differences:
                detail += f" ({describe_config_difference(job.identity['model_config'], found.get('model_config') or {})})"
            raise InferenceError(
                f"--output {output} holds a latent dataset made with another {detail}; "
                "use the same settings to resume it, another --output, or --overwrite to replace it"
            )
    try:
        (output / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        probe = output / SHARD_DIR / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InferenceError(f"cannot write --output {output}: {error.strerror or error}") from None


def clear_dataset(output: Path) -> None:
    """Remove a latent dataset's own files (``--overwrite``); other files in the folder stay."""
    for name in (MANIFEST, INDEX, INDEX_TABLE, FAILURES):
        (output / name).unlink(missing_ok=True)
    shutil.rmtree(output / SHARD_DIR, ignore_errors=True)
    (output / SHARD_DIR).mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------------------------
# Lightning: data, model step, writer
# ----------------------------------------------------------------------------------------------


class ClipDataModule(pl.LightningDataModule):
    """Prepares the output once the processes have met, then gives each rank the clips of its share."""

    def __init__(self, job: DatasetJob):
        super().__init__()
        self.job = job
        self.share: list[VideoSource] = []
        self.finished_videos = 0  # videos of this rank's share that earlier runs completed

    def setup(self, stage: str) -> None:
        job, strategy = self.job, self.trainer.strategy
        if self.trainer.global_rank == 0:
            if job.overwrite and read_manifest(job.output) is not None:
                clear_dataset(job.output)
            write_manifest(job.output, {"identity": job.identity, "status": "running", "version": vidtwin.__version__,
                                        "sources": len(job.sources)})
        try:
            strategy.barrier()  # nobody reads the shards before rank 0 has cleared them
        except RuntimeError:  # gloo's "Connection closed by peer" and its kin
            raise peer_died(job.output) from None
        rank, world = self.trainer.global_rank, self.trainer.world_size
        remove_stale_temporaries(job.output, rank)
        done: dict[str, set[int]] = {}
        clips_of_video: dict[str, int] = {}
        for _, rows in current_rows(job, report=self.trainer.global_rank == 0):
            for _, row in rows:
                done.setdefault(row["video"], set()).add(row["clip"])
                clips_of_video[row["video"]] = row["video_clips"]
        finished = {name for name, clips in done.items() if len(clips) >= clips_of_video[name]}
        self.share = assign_shares(job.sources, world)[rank]
        self.finished_videos = sum(1 for source in self.share if source.name in finished)
        self.stream = ClipStream(self.share, job.sampling, done, finished)
        logger.info("rank %d of %d: %d videos, %d already encoded", rank, world, len(self.share), self.finished_videos)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            self.stream, batch_size=self.job.batch_clips, num_workers=self.job.num_workers,
            collate_fn=collate_clip_items, pin_memory=False, worker_init_fn=_leave_stop_signals_to_the_rank,
        )


def _leave_stop_signals_to_the_rank(worker_id: int) -> None:
    """DataLoader workers ignore the stop signals (SLURM sends them to every process of a job):
    their rank stops at its next safe point and then ends them."""
    for signum in StopSignals.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def current_rows(job: DatasetJob, changed: set[str] | None = None, report: bool = False) -> list[tuple[Path, list[tuple[int, dict]]]]:
    """Each finished shard with the ``(position in the shard, row)`` pairs that still count: those
    of a video that is still the file its shard recorded. Rows of a video replaced since are left
    out (its name is added to ``changed``; ``report`` logs it), so that its clips are encoded again
    and never mixed with the new ones.
    """
    verdicts: dict[tuple[str, str], bool] = {}  # (video, recorded fingerprint) -> still the same file
    result = []
    for shard in list_shards(job.output):
        info = read_shard_info(shard, dataset=job.dataset_id)  # refuses a shard of another dataset
        kept = []
        for position, row in enumerate(info.rows):
            video, recorded = row["video"], info.sources.get(row["video"])
            key = (video, repr(recorded))
            if key not in verdicts:
                path = job.source_paths.get(video)
                verdicts[key] = path is None or same_source(recorded, path)  # another input's rows stay unused
                if not verdicts[key]:
                    if report:
                        logger.warning("%s changed since its clips in %s were encoded: it is encoded again", video, shard.name)
                    if changed is not None:
                        changed.add(video)
            if verdicts[key]:
                kept.append((position, row))
        result.append((shard, kept))
    return result


class LatentEncoder(pl.LightningModule):
    """Wraps an eval-mode VidTwin: one predict step encodes a batch of clips to posterior means,
    or, for an FSQ model, to its integer tokens (in the smallest dtype that holds each codebook)."""

    def __init__(self, model: torch.nn.Module, dtype: str, options: InferenceOptions | None = None):
        super().__init__()
        self.model = model
        self.dtype_name = dtype
        # The model's own encode, or its compiled runner's (a bound method: not registered as a module twice).
        self.encode = autoencoder_calls(model, options or InferenceOptions()).encode
        self.codebook = codebook_levels(model.config)  # None for Gaussian (kl) latents

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        if batch["pixels"] is None:  # a batch of failures and skipped videos only
            return {"latents": None, "model_seconds": 0.0}
        started = time.perf_counter()
        with precision_context(self.device, self.dtype_name):
            latents = self.encode(batch["pixels"])  # posterior means or FSQ codes: the model is in eval mode
        if self.codebook is None:
            tensors = {name: getattr(latents, name).float().cpu() for name in LATENT_NAMES}  # each (B, C, ...)
        else:  # FSQ codes are exact in bf16 and fp16 (multiples of 1/4 or 1/2), so the tokens are too
            tensors = {name: codes_to_stored_tokens(name, getattr(latents, name), self.codebook)  # each (B, ...)
                       for name in LATENT_NAMES}
        return {"latents": tensors, "model_seconds": time.perf_counter() - started}


class ShardWriter(BasePredictionWriter):
    """Buffers each batch's latents and writes a shard whenever ``shard_size`` clips are ready."""

    def __init__(self, job: DatasetJob):
        super().__init__(write_interval="batch")
        self.job = job

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rank = trainer.global_rank
        self.sequence = next_shard_sequence(self.job.output, self.rank)
        self.rows: list[dict] = []
        self.tensors: dict[str, list[torch.Tensor]] = {name: [] for name in LATENT_NAMES}
        self.failures: dict[str, str] = {}
        self.clips = 0
        self.timing = {"decode": 0.0, "model": 0.0}
        self.started = time.perf_counter()
        datamodule = trainer.datamodule
        label = "videos" if trainer.world_size == 1 else f"rank 0 of {trainer.world_size}: videos"
        self.bar = tqdm(total=len(datamodule.share), initial=datamodule.finished_videos, desc=label, unit="video",
                        disable=not self.job.progress or self.rank != 0, dynamic_ncols=True)
        # Replace the SIGTERM handler the Trainer has just installed, and its watcher of the ranks (see StopSignals).
        self.job.stop.adopt(trainer.strategy.launcher)
        self.job.stop.install()
        self._stop_if_asked()

    def _stop_if_asked(self) -> None:
        """The safe point: on a stop signal, or when a rank this process launched died, write what
        is buffered as a last shard and stop."""
        stop = self.job.stop
        dead = stop.dead_peer()
        if stop.signum is None and dead is None:
            return
        if self.rows:
            self._flush(len(self.rows))
        self.bar.close()
        if dead is not None:
            stop.stop_children()  # the others stop at their safe points and keep their shards
            raise peer_died(self.job.output, dead)
        raise EncodingStopped(stop.signum)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        self.timing["decode"] += batch["decode_seconds"]
        self.timing["model"] += prediction["model_seconds"]
        for name, reason in batch["failures"]:
            self.failures[name] = reason
            if self.rank == 0:
                tqdm.write(f"error: {reason}")
            else:
                logger.warning("%s", reason)
        if prediction["latents"] is not None:
            self.rows.extend(batch["rows"])
            for name in LATENT_NAMES:
                self.tensors[name].append(prediction["latents"][name])
            self.clips += len(batch["rows"])
        while len(self.rows) >= self.job.shard_size:
            self._flush(self.job.shard_size)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(batch["videos_done"])
        self.bar.set_postfix(clips=self.clips, clips_per_s=f"{self.clips / elapsed:.1f}", refresh=False)
        self._stop_if_asked()

    def _flush(self, count: int) -> None:
        """Write the first ``count`` buffered clips as the next shard of this rank."""
        stacked = {name: torch.cat(parts) for name, parts in self.tensors.items()}  # each (buffered, ...)
        rows = self.rows[:count]
        sources = {row["video"]: row["source"] for row in rows if row.get("source") is not None}
        write_shard(
            self.job.output / SHARD_DIR / shard_name(self.rank, self.sequence),
            {name: tensor[:count] for name, tensor in stacked.items()}, rows,
            dataset=self.job.dataset_id, sources=sources,
        )
        self.sequence += 1
        self.rows = self.rows[count:]
        self.tensors = {name: [tensor[count:]] for name, tensor in stacked.items()}

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rows:
            self._flush(len(self.rows))
        self.bar.close()
        mine = {"failures": self.failures, "clips": self.clips, **self.timing}
        try:
            every_rank = _gather(mine, trainer.world_size)  # also waits for every rank's last shard
        except RuntimeError:  # gloo's "Connection closed by peer": another rank is gone
            if self.job.stop.signum is not None:  # it stopped on the signal this rank got too
                raise EncodingStopped(self.job.stop.signum) from None
            raise peer_died(self.job.output, self.job.stop.dead_peer() or "") from None
        self._stop_if_asked()  # a signal that came while waiting for the others
        if trainer.global_rank == 0:
            failures = {name: reason for stats in every_rank for name, reason in stats["failures"].items()}
            self.job.stats = merge_dataset(self.job, failures)
            self.job.stats.update(
                encoded_now=sum(s["clips"] for s in every_rank), decode_seconds=sum(s["decode"] for s in every_rank),
                model_seconds=sum(s["model"] for s in every_rank), seconds=time.perf_counter() - self.started,
                ranks=trainer.world_size,
            )


def _gather(value: dict, world_size: int) -> list[dict]:
    if world_size == 1 or not torch.distributed.is_initialized():
        return [value]
    gathered: list = [None] * world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def merge_dataset(job: DatasetJob, failures: dict[str, str]) -> dict:
    """Rank 0, after every rank finished: write the index and failures, mark the manifest complete.

    The index lists the clips of the current input's videos that did not fail, sorted by input
    order and clip number, whichever rank or run encoded them. It is built as numpy columns, so a
    dataset of millions of clips merges in bounded, modest memory.
    """
    order = {source.name: source.order for source in job.sources}
    failures = dict(failures)
    changed: set[str] = set()
    shards = current_rows(job, changed)  # without the rows of videos replaced since they were encoded
    failed_orders = {order[name] for name in failures if name in order}
    parts: list[dict[str, np.ndarray]] = []
    for position, (shard, kept) in enumerate(shards):
        rows = [row for _, row in kept]
        part = {name: np.asarray([row[name] for row in rows], dtype=np.float64 if name == "fps" else np.int64)
                for name in SHARD_ROW_COLUMNS if name != "video"}
        part["video"] = np.asarray([order.get(row["video"], -1) for row in rows], dtype=np.int64)  # -1: not in this input
        part["shard"] = np.full(len(rows), position, dtype=np.int64)
        part["row"] = np.asarray([row_position for row_position, _ in kept], dtype=np.int64)
        parts.append(part)
    columns = {name: np.concatenate([part[name] for part in parts]) if parts else np.zeros(0, np.int64) for name in INDEX_COLUMNS}
    keep = (columns["video"] >= 0) & ~np.isin(columns["video"], list(failed_orders))
    columns = {name: column[keep] for name, column in columns.items()}
    # One entry per (video, clip), sorted by input order then clip; the first shard (by name) wins a repeat.
    key = columns["video"] * (int(columns["clip"].max(initial=0)) + 1) + columns["clip"]
    _, first = np.unique(key, return_index=True)
    columns = {name: column[first] for name, column in columns.items()}
    present, columns["video"] = np.unique(columns["video"], return_inverse=True)  # input order -> position in `videos`
    names = [job.sources[i].name for i in present.tolist()]
    counts = np.bincount(columns["video"], minlength=len(names))
    expected = np.zeros(len(names), dtype=np.int64)
    expected[columns["video"]] = columns["video_clips"]
    incomplete = [names[i] for i in np.flatnonzero(counts != expected)]
    replaced = [name for name in incomplete if name in changed]  # replaced again while this run encoded it
    if replaced:
        keep = ~np.isin(columns["video"], [names.index(name) for name in replaced])
        columns = {name: column[keep] for name, column in columns.items()}
        present, columns["video"] = np.unique(columns["video"], return_inverse=True)
        names = [names[i] for i in present.tolist()]
    # A video replaced after this run read it has no current clips at all, or only some.
    for name in sorted(changed - set(names) - set(failures)):
        if name in order:
            failures[name] = f"{name} changed while it was being encoded; run the same command again to encode it"
    if set(incomplete) - set(replaced):
        raise RuntimeError(f"clips missing from the shards of {incomplete[:3]} after all ranks finished")
    extra = {"labels": job.labels} if job.labels is not None else {}  # shards hold none: a rerun may relabel
    vocabulary = None
    if job.actions is not None:  # nor actions: a rerun with another --actions-column rewrites them
        vocabulary = action_vocabulary({name: job.actions[name] for name in names})
        video_clips = np.zeros(len(names), dtype=np.int64)
        video_clips[columns["video"]] = columns["video_clips"]
        columns[ACTION_COLUMN] = clip_action_column(job.actions, vocabulary, names, video_clips.tolist(),
                                                    columns["video"], columns["clip"])
        extra[ACTIONS_KEY] = actions_manifest_entry(job.actions_source, vocabulary)
    write_index(job.output, IndexColumns(names, [shard.name for shard, _ in shards], columns), action_vocabulary=vocabulary)
    failed = {name: failures[name] for name in sorted(failures, key=lambda name: order.get(name, -1))}
    write_failures(job.output, failed)
    summary = {"clips": len(columns["clip"]), "videos": len(names), "failures": len(failed)}
    write_manifest(job.output, {"identity": job.identity, "status": "complete", "version": vidtwin.__version__,
                                "sources": len(job.sources), **summary, **extra})
    return summary


def run_job(job: DatasetJob, model: torch.nn.Module, dtype: str, accelerator: str, devices, num_nodes: int) -> dict:
    """Encode the dataset described by ``job``; returns the summary (on rank 0; empty elsewhere)."""
    per_node = devices if isinstance(devices, int) else len(devices.rstrip(",").split(",")) if "," in str(devices) else 1
    world = per_node * num_nodes
    distributed = world > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # The writer takes each clip's identity from the batch itself, so Lightning's batch indices
    # (which it cannot know for a stream) are not needed.
    warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
    # Lightning's own use of a torch API that newer torch deprecates: nothing for the user to act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    trainer = pl.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp" if distributed else "auto",
        precision="32-true", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, callbacks=[ShardWriter(job)],
    )
    datamodule = ClipDataModule(job)
    job.stop.install()  # from here on a stop signal waits for the next safe point
    try:
        options = InferenceOptions(batch_clips=job.batch_clips, compile=job.compile, progress=job.progress)
        trainer.predict(LatentEncoder(model, dtype, options), datamodule=datamodule, return_predictions=False)
    except EncodingStopped:
        job.stop.wait_for_children()  # their last shards, before the launcher exits
        dead = job.stop.dead_peer()
        if dead is not None:  # a rank died rather than stopped
            raise peer_died(job.output, dead) from None
        raise
    finally:
        job.stop.restore()
    return job.stats if trainer.global_rank == 0 else {}


def format_summary(stats: dict, output: Path) -> str:
    seconds = max(stats["seconds"], 1e-9)
    return (
        f"wrote {output}: {stats['clips']} clips of {stats['videos']} videos, {stats['failures']} failed "
        f"({stats['encoded_now']} clips encoded now in {stats['seconds']:.1f} s, "
        f"{stats['encoded_now'] / seconds:.1f} clips/s on {stats['ranks']} process(es); "
        f"decoding {stats['decode_seconds']:.1f} s, model {stats['model_seconds']:.1f} s)"
    )


__all__ = ["DatasetJob", "EncodingStopped", "check_output", "run_job", "merge_dataset", "format_summary"]
