"""The run directory of `vidtwin train`: who may start a run there, which checkpoint a resume takes, and
checkpoint files that are never torn.

A run directory ``LOGDIR/NAME`` holds ``config.yaml``, ``configs/``, ``checkpoints/``,
``tensorboard/`` and ``samples/``. Four rules keep the runs in it apart and whole:

- **A new run never writes into an existing one.** ``--name`` of a directory that already holds a
  run is refused with the ``--resume`` command to use instead (or, when that run wrote no complete
  checkpoint, with ``--overwrite``); ``--overwrite`` deletes that run's files first. A new run
  claims its directory only once its config has been built, and one that fails before its first
  update removes what it wrote there (:func:`release_run_directory`). Every process of a
  multi-process launch takes the same decision: the processes that Lightning starts inherit it
  through the environment, and processes started separately
  (torchrun, srun) recognise a directory that rank 0 of their own launch has just claimed by the
  launch identity it wrote into ``.launch`` before anything else.
- **Resume takes the newest valid checkpoint.** Every ``*.ckpt`` of ``checkpoints/`` is opened
  (memory-mapped, so only its small header is read); unreadable ones (truncated by a kill or a
  full disk) are skipped with a warning, and the one with the most updates wins.
- **A resume that does not fit changes nothing.** The checkpoint must load into the module of the
  new config before anything in the directory changes; a mismatch is one line naming the config
  keys that changed. ``config.yaml`` stays the config the run started with; each resume's merged
  config is kept as ``configs/resume-N.yaml`` once its checkpoint is restored, and a resume starts
  from the newest of them (:func:`config_history`).
- **A checkpoint appears whole or not at all.** :class:`AtomicCheckpointIO` writes each one to a
  hidden temporary file beside its final name and renames it into place, on every filesystem.
  The temporary file of a killed save is deleted when the run is resumed. A save that fails (a
  full disk) says which complete checkpoint is left to resume from, or that there is none.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from ..atomic_io import atomic_path, atomic_write_text, is_temp_name
from ..errors import UserError
from ..hints import command
# The newest-readable-checkpoint rule, shared with every model's loading of a run folder.
from ..pretrained import checkpoint_update, newest_valid_checkpoint

logger = logging.getLogger(__name__)

LAUNCH_MARKER = ".launch"
LAUNCH_ID_ENV = "VIDTWIN_LAUNCH_ID"  # one launch's identity, inherited by the processes Lightning starts
CLAIMED_RUN_ENV = "VIDTWIN_CLAIMED_RUN"  # the run directory this launch's rank 0 has claimed
# What a run writes into its directory; --overwrite deletes these and nothing else.
RUN_ENTRIES = ("config.yaml", "configs", "checkpoints", "tensorboard", "samples", "wandb", LAUNCH_MARKER)
RESUME_CONFIGS = "configs"  # configs/resume-N.yaml: the merged config of the N-th resume
# Environment variables that identify one launch of torchrun or srun on every node.
_LAUNCHER_IDENTITY_VARS = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID",
                           "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR", "MASTER_PORT")


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (full disk, read-only folder); the checkpoints written before are intact."""


def global_rank() -> int:
    """This process's global rank from the launcher's environment (Lightning reads the same variables)."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def launched_world_size() -> int:
    """Processes started by an outside launcher (torchrun, srun); 1 when Lightning launches them."""
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def launch_id() -> str:
    """An identity shared by every process of this launch and different for the next launch."""
    if os.environ.get(LAUNCH_ID_ENV):
        return os.environ[LAUNCH_ID_ENV]
    if launched_world_size() > 1:
        identity = ";".join(f"{var}={os.environ.get(var, '')}" for var in _LAUNCHER_IDENTITY_VARS)
    else:
        identity = uuid.uuid4().hex
    os.environ[LAUNCH_ID_ENV] = identity
    return identity


def holds_a_run(run_dir: Path) -> bool:
    checkpoints = run_dir / "checkpoints"
    return (run_dir / "config.yaml").exists() or (checkpoints.is_dir() and any(checkpoints.iterdir()))


def check_run_directory(run_dir: Path, overwrite: bool) -> bool:
    """Decide, before anything is written, whether a new run may use ``run_dir``.

    Returns whether an earlier run must be deleted first (``overwrite``); raises UserError when
    ``run_dir`` holds another run and ``overwrite`` is off. Every process decides the same way.
    """
    if os.environ.get(CLAIMED_RUN_ENV) == str(run_dir.resolve()):
        return False  # started by Lightning after rank 0 of this launch claimed the directory
    marker = run_dir / LAUNCH_MARKER
    claimed_by_this_launch = marker.is_file() and marker.read_text(encoding="utf-8") == launch_id()
    if not holds_a_run(run_dir) or claimed_by_this_launch:
        return False
    if not overwrite:
        if complete_checkpoint(run_dir / "checkpoints") is None:
            raise UserError(f"{run_dir} already holds a run that wrote no complete checkpoint, so there is nothing "
                            "to resume; start it over with --overwrite (deletes its config and logs), or choose "
                            "another --name")
        raise UserError(
            f"{run_dir} already holds a run; continue it with `{command('train', '--resume', run_dir)}`, "
            "or start it over with --overwrite (deletes its checkpoints and logs)"
        )
    return True


def complete_checkpoint(folder: Path) -> Optional[tuple[Path, int]]:
    """``(checkpoint, update)`` that ``--resume`` would take from ``folder`` (:func:`newest_valid_checkpoint`),
    or None when it holds no complete checkpoint."""
    if not folder.is_dir():
        return None
    try:
        return newest_valid_checkpoint(folder)
    except UserError:  # none is readable
        return None


def claim_run_directory(run_dir: Path, clear: bool) -> None:
    """Rank 0 deletes the earlier run (``clear``) and marks ``run_dir`` as this launch's, before writing into it.

    Processes that Lightning starts later inherit the claim through the environment.
    """
    if global_rank() == 0:
        try:
            if clear:
                logger.warning("--overwrite: deleting the earlier run in %s", run_dir)
                for entry in RUN_ENTRIES:
                    path = run_dir / entry
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / LAUNCH_MARKER, launch_id())
        except OSError as error:
            raise UserError(f"cannot write the run directory {run_dir}: {error.strerror or error}; "
                            "choose another --logdir") from None
    os.environ[CLAIMED_RUN_ENV] = str(run_dir.resolve())


def outermost_missing_folder(path: Path) -> Optional[Path]:
    """The outermost of ``path`` and its parents that does not exist yet (what creating ``path`` creates), or None."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def release_run_directory(run_dir: Path, created: Optional[Path]) -> bool:
    """After a new run failed before its first update: rank 0 deletes what the run wrote into ``run_dir``,
    and the empty folders it made (``created``: the outermost, see :func:`outermost_missing_folder`),
    so that no folder looks like a run to resume. Returns whether it was released; a directory that
    holds a complete checkpoint is kept."""
    if complete_checkpoint(run_dir / "checkpoints") is not None:
        return False
    if global_rank() == 0:
        for entry in RUN_ENTRIES:
            path = run_dir / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)
        if created is not None and (run_dir == created or created in run_dir.parents):
            for folder in [run_dir, *run_dir.parents]:
                try:
                    folder.rmdir()
                except OSError:  # something else was put there meanwhile: leave it
                    break
                if folder == created:
                    break
        logger.info("the run stopped before its first update; %s holds nothing of it", run_dir)
    return True


class TrainingStarted(pl.Callback):
    """Whether training reached its first batch: a new run that fails before that leaves no run directory."""

    def __init__(self) -> None:
        super().__init__()
        self.started = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.started = True


# ---------------------------------------------------------------------------- resume
@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    checkpoint: Path
    update: int  # autoencoder updates the checkpoint holds (train_step)


def remove_stale_temp_files(folder: Path) -> None:
    """Delete the temporary files that killed saves left in ``folder`` (a resumed run's checkpoints).

    Only rank 0 calls this, when a resumed run starts training: no save of this run can be in
    flight yet, and a second run never shares the directory.
    """
    stale = [p for p in folder.glob(".*") if p.is_file() and is_temp_name(p.name)] if folder.is_dir() else []
    for path in stale:
        logger.warning("removing %s, left by a save that did not finish (%.1f MB)", path, path.stat().st_size / 2**20)
        path.unlink(missing_ok=True)


def resolve_resume(resume: str) -> ResumePoint:
    """The run directory and checkpoint of ``--resume RUN_DIR`` (newest valid checkpoint) or ``--resume FILE.ckpt``."""
    path = Path(resume)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise UserError(f"--resume {resume}: not a run directory of `vidtwin train` (no config.yaml)")
        checkpoint, update = newest_valid_checkpoint(path / "checkpoints")
        run_dir = path
    elif path.is_file():
        if path.suffix != ".ckpt":
            raise UserError(f"--resume {resume}: give a run directory or a .ckpt checkpoint of `vidtwin train`")
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"--resume {resume}: no config.yaml in {run_dir}, the run directory of that checkpoint")
        try:
            checkpoint, update = path, checkpoint_update(path)
        except Exception as error:  # see newest_valid_checkpoint
            raise UserError(f"--resume {resume}: not a complete training checkpoint ({type(error).__name__}: "
                            f"{' '.join(str(error).split())[:200]})") from None
    else:
        raise UserError(f"--resume {resume}: no such run directory or checkpoint")
    logger.info("resuming from %s at update %d", checkpoint, update)
    return ResumePoint(run_dir, checkpoint, update)


# ---------------------------------------------------------------------------- configs of a run
def save_config_atomic(config: Any, path: Path) -> None:
    """Write ``config`` as YAML to ``path``, complete or absent."""
    from omegaconf import OmegaConf

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temp:
            OmegaConf.save(config, temp)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}; choose another --logdir") from None


def _resume_number(path: Path) -> int:
    number = path.stem.removeprefix("resume-")
    return int(number) if number.isdigit() else -1


def config_history(run_dir: Path) -> list[Path]:
    """The run's merged configs, oldest first: ``config.yaml``, then ``configs/resume-N.yaml`` by N."""
    resumes = [p for p in (run_dir / RESUME_CONFIGS).glob("resume-*.yaml") if _resume_number(p) >= 0]
    return [run_dir / "config.yaml"] + sorted(resumes, key=_resume_number)


class RecordResumeConfig(pl.Callback):
    """Rank 0 writes the resume's merged config to ``configs/resume-N.yaml`` when training starts,
    i.e. once Lightning has restored the checkpoint (weights, optimizers) into it: a resume that
    fails before never becomes the config that the next ``--resume`` starts from. The temporary
    files of killed saves go at the same point."""

    def __init__(self, run_dir: Path, config: Any) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.config = config
        self.restored = False  # whether Lightning has restored the whole checkpoint

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.restored = True
        if not trainer.is_global_zero:
            return
        remove_stale_temp_files(self.run_dir / "checkpoints")
        number = max([_resume_number(p) for p in config_history(self.run_dir)[1:]], default=0) + 1
        save_config_atomic(self.config, self.run_dir / RESUME_CONFIGS / f"resume-{number}.yaml")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def changed_config_keys(before: Any, after: Any) -> list[str]:
    """``key: old -> new`` for every setting that differs between two configs (OmegaConf or plain)."""
    from omegaconf import OmegaConf

    def plain(config: Any) -> dict:
        return OmegaConf.to_container(config, resolve=False) if OmegaConf.is_config(config) else dict(config)

    old, new = _flatten(plain(before)), _flatten(plain(after))
    missing = "(unset)"
    return [f"{key}: {old.get(key, missing)} -> {new.get(key, missing)}"
            for key in sorted(set(old) | set(new)) if old.get(key, missing) != new.get(key, missing)]


def _shape(tensor: Any) -> tuple:
    return tuple(tensor.shape) if hasattr(tensor, "shape") else ()


def model_changes(run_config: Any, config: Any) -> list[str]:
    """The ``model.`` settings that a resume's merged ``config`` changes in the run's newest config."""
    return [change for change in changed_config_keys(run_config, config) if change.startswith("model.")]


def resume_mismatch(resume: ResumePoint, changes: list[str], problem: str) -> UserError:
    """The one-line error of a checkpoint that does not load into a resume's config."""
    what = f"the changed config ({'; '.join(changes[:6])}{'; ...' if len(changes) > 6 else ''})" if changes \
        else "the run's config"
    return UserError(f"--resume {resume.run_dir}: {resume.checkpoint.name} does not load into {what}: {problem}; "
                     f"no checkpoint or config in {resume.run_dir} was changed. Resume without those changes, or "
                     "start a new run from these weights with --base and model.params.ckpt_path")


def check_resume_fits(module: torch.nn.Module, resume: ResumePoint, changes: list[str]) -> None:
    """Raise UserError, in one line, when the weights of ``resume``'s checkpoint do not fit ``module``.

    ``module`` is built from the resume's merged config; ``changes`` (:func:`model_changes`) are
    named in the message. Lightning checks the optimizer states when it restores them.
    """
    checkpoint = torch.load(resume.checkpoint, map_location="cpu", weights_only=True, mmap=True)
    upgrade = getattr(module, "upgrade_checkpoint", None)
    if upgrade is not None:  # names of an older release, as the module renames them when it loads
        checkpoint = upgrade(checkpoint)
    saved = checkpoint.get("state_dict", {})
    expected = module.state_dict()
    strict = getattr(module, "strict_loading", True)
    missing = [k for k in expected if k not in saved] if strict else []
    unused = [k for k in saved if k not in expected] if strict else []
    reshaped = [k for k in expected if k in saved and _shape(saved[k]) != _shape(expected[k])]
    if not (missing or unused or reshaped):
        return
    problems = []
    if reshaped:
        key = reshaped[0]
        problems.append(f"{len(reshaped)} weights change shape (e.g. {key}: {list(_shape(saved[key]))} in the "
                        f"checkpoint, {list(_shape(expected[key]))} now)")
    if missing:
        problems.append(f"{len(missing)} weights are not in the checkpoint (e.g. {missing[0]})")
    if unused:
        problems.append(f"{len(unused)} checkpoint weights have no place (e.g. {unused[0]})")
    raise resume_mismatch(resume, changes, ", ".join(problems))


# ---------------------------------------------------------------------------- saving
class _WriteErrorRecorder:
    """A binary file that remembers the OSError of a failed write: torch.save reports it as a RuntimeError."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: Optional[OSError] = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, writing beside the final path and renaming into place.

    Lightning's own saver copies from /tmp when the log directory is on another filesystem, so a
    kill mid-copy leaves a torn file under the final name. Here a failed write (a full disk, a
    read-only folder) keeps the previous checkpoint and raises :class:`CheckpointWriteError`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)  # raises: not supported
        path = Path(path)
        recorder = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as temp, open(temp, "wb") as handle:
                recorder = _WriteErrorRecorder(handle)
                torch.save(checkpoint, recorder)
                handle.flush()
                os.fsync(handle.fileno())
        except (OSError, RuntimeError) as error:
            cause = recorder.error if recorder is not None and recorder.error is not None else error
            if not isinstance(cause, OSError):
                raise
            raise CheckpointWriteError(f"cannot write checkpoint {path}: {cause.strerror or cause}; "
                                       f"{_what_is_left(path)}") from None


def _what_is_left(path: Path) -> str:
    """What a failed save of ``path`` (``RUN/checkpoints/NAME.ckpt``) leaves to continue from, and the command to use."""
    run_dir = path.parent.parent
    in_a_run = (run_dir / "config.yaml").is_file()
    fix = "Free space (or fix the folder's permissions), then"
    kept = complete_checkpoint(path.parent)
    if kept is not None:
        left = f"the newest complete checkpoint, {kept[0].name} (update {kept[1]}), is kept"
        return f"{left}. {fix} resume with `{command('train', '--resume', run_dir)}`" if in_a_run else f"{left}"
    left = "no complete checkpoint of this run exists yet, so there is nothing to resume"
    if not in_a_run:
        return f"{left}. {fix} start the run again"
    again = command("train", "--base", run_dir / "config.yaml", "--logdir", run_dir.parent, "--name", run_dir.name,
                    "--overwrite")
    return f"{left}. {fix} start it over with `{again}`"
