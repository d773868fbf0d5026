#!/usr/bin/env python3
"""Training-update benchmark: time per update, FLOPs per update and the share of the matmul rate.

Runs real updates of a config's training module (the autoencoder's ``VidTwinLightningModule``, the
latent generator's ``GeneratorLightningModule`` or the world model's ``WorldLightningModule``)
inside a Lightning Trainer, per precision, and reports for each:

- the time per update: the median over the timed updates of the time from one update's end to the
  next's (data loading included, as a run sees it), and of the update alone (forward, backward,
  optimizer steps, clipping, EMA);
- the FLOPs per update, counted by ``torch.utils.flop_counter.FlopCounterMode`` on real updates:
  the timed ones, repeated in a second run of a fresh module with the same seed and data (the
  counter slows what it counts); what :mod:`scripts.bench_matmul` says it counts (matmuls,
  convolutions and attention, forward and backward; no elementwise work, no optimizer);
- the achieved FLOP/s (FLOPs per update over the time per update), and that as a share of the rate
  of a large matmul of the matching precision (fp32 for ``32``, bf16 for ``bf16-mixed``), timed in
  this run before the updates and after them;
- peak memory (CUDA: ``max_memory_allocated``; CPU: the process's resident set while the row ran).

Data (``--data synthetic``, the default): the autoencoder gets random clips of its input size made
in memory; a generator or world model gets a small latent dataset, encoded by an untrained copy of
the autoencoder its README pipeline trains on (``tiny_digits``, ``tiny_digits_fsq``) from a few
rendered videos of a moving square with an action per clip, and read through the config's own
``LatentDataModule``, so that its data loading is timed. ``--data config`` uses the config's data
section as it is (the quick start's in-memory demo clips; a latent dataset that exists).

    python -m scripts.benchmark_train --demos --precision 32 bf16-mixed --output utilization.json
    python -m scripts.benchmark_train --base tiny --device cpu --batch-size 2
    python -m scripts.benchmark_train --base configs/vidtwin.yaml --device cuda --precision bf16-mixed \\
        --batch-size 2 --output docs/benchmarks_train_h100.json

``--demos`` times the quick-start autoencoder (``tiny``), the generator (``generator/tiny_digits``)
and the world model (``world/tiny_digits``) at their configs' batch sizes and GAN settings.
``--precision auto`` times the precision that ``lightning.trainer.precision: auto`` picks on the
device (``bf16-mixed`` where it computes bf16 natively, else ``32``); the JSON records both.
``--profile FILE`` profiles a few more updates of each row with ``torch.profiler`` and writes the
time by kind of work (data loading, optimizer, attention, matmul, other ops, outside ops) and the
top ops by self CPU time to ``FILE``.

Prints a table and writes one JSON record per row (``--output``, a list; ``--append`` adds to it).
The config's targets are checked as ``vidtwin train`` checks them
(:func:`vidtwin.config.check_config_targets`) before anything is built.
"""

from __future__ import annotations

if __name__ == "__main__":  # as the vidtwin command does, before torch loads: OpenMP reads how threads wait once
    from vidtwin.cpu_threads import prepare_cpu_threads

    prepare_cpu_threads()

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.profilers import Profiler
import torch
from torch.utils.data import DataLoader, Dataset

from vidtwin.atomic_io import atomic_write_text
from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.config import (
    DATA_MODULE, ConfigError, TargetKind, any_target_allowed, build_from_config, check_config_targets, load_config,
    resolve_target,
)
from vidtwin.errors import UserError
from vidtwin.precision import auto_training_precision

from scripts.bench_report import PeakRSS, cpu_name, text_table
from scripts.bench_matmul import MatmulRates, flop_counter, matmul_dtype_of_precision, share_of_peak

# The training modules this benchmark times, by kind.
MODULE_CLASSES = {"autoencoder": "vidtwin.training.module.VidTwinLightningModule",
                  "generator": "vidtwin.training.generator_module.GeneratorLightningModule",
                  "world": "vidtwin.training.world_module.WorldLightningModule"}
TRAINED_MODULE = TargetKind("a VidTwinLightningModule, GeneratorLightningModule or WorldLightningModule class",
                            tuple(MODULE_CLASSES.values()))
# --demos: the models of the README's pipelines, by their shipped presets.
DEMO_CONFIGS = ("tiny", "generator/tiny_digits", "world/tiny_digits")
# The autoencoder whose latents each latent model of the README pipelines trains on (an untrained
# copy encodes the synthetic data: the shapes are what matter), and what encode-dataset records.
SYNTHETIC_LATENT_SOURCES = {"generator": ("tiny_digits", ["--label-column", "label"]),
                            "world": ("tiny_digits_fsq", ["--actions-column", "actions"])}


class SyntheticClips(Dataset):
    """Random clips (3, T, H, W) in [-1, 1]; fixed per index so every run sees the same data."""

    def __init__(self, size, length: int):
        self.size, self.length = tuple(size), length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return {"video": torch.rand(3, *self.size, generator=generator) * 2 - 1, "path": f"synthetic{index}", "fps": 8.0}


def _collate(items):
    return {"video": torch.stack([i["video"] for i in items]), "path": [i["path"] for i in items],
            "fps": torch.tensor([i["fps"] for i in items])}


class UpdateTimer(pl.Callback):
    """Per training batch (one update: :func:`build_row_setup` refuses gradient accumulation): its own time
    (forward, backward, optimizer steps) and the time since the previous batch ended (data loading
    and Lightning's loop included). The first batch has no interval."""

    def __init__(self, cuda: bool):
        self.cuda, self.compute, self.intervals = cuda, [], []
        self._start, self._last_end = 0.0, None

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        end = self._now()
        self.compute.append(end - self._start)
        if self._last_end is not None:
            self.intervals.append(end - self._last_end)
        self._last_end = end


class UpdateFlops(pl.Callback):
    """FLOPs of updates ``first`` to ``last - 1``, each counted by its own ``FlopCounterMode`` (matmuls,
    convolutions and attention, forward and backward; not elementwise work, norms, losses or the
    optimizer: :mod:`scripts.bench_matmul`). The counter slows what it counts, so :func:`run_row`
    counts in a run of its own."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.flops, self.by_op, self._mode, self._batches = first, last, [], [], None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first <= self._batches < self.last:
            self._mode = flop_counter()
            self._mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._batches += 1
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.flops.append(self._mode.get_total_flops())
            self.by_op.append({str(op): count for op, count in self._mode.get_flop_counts()["Global"].items()})
            self._mode = None

    def mean_by_op(self) -> dict[str, float]:
        """FLOPs per update of each counted op (``aten.mm``, ...), averaged over the counted updates."""
        ops = sorted({op for counts in self.by_op for op in counts})
        return {op: statistics.fmean(counts.get(op, 0) for counts in self.by_op) for op in ops}


# --profile: the kinds of work an update's time is split into, in the order they are reported
# (profile_group says which an op's time is).
PROFILE_GROUPS = ("data loading", "optimizer", "attention", "matmul and convolution", "other ops",
                  "autograd and scopes", "outside ops")
MATMUL_OPS = frozenset(f"aten::{name}" for name in (
    "mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation", "mkldnn_linear", "conv1d", "conv2d",
    "conv3d", "convolution", "_convolution", "mkldnn_convolution", "convolution_backward", "cudnn_convolution"))


# Scopes that say whose an op is, whatever runs around them: torch's DataLoader and optimizer
# scopes, and Lightning's actions (LightningScopes). Under automatic optimization the forward and
# backward run in the optimizer's closure, inside its step: the innermost scope decides.
DATA_SCOPES = ("enumerate(DataLoader)", "[_TrainingEpochLoop].train_dataloader_next")
OPTIMIZER_SCOPES = ("Optimizer.step", "Optimizer.zero_grad")
MODEL_SCOPES = ("autograd::engine::evaluate_function",)  # and Lightning's training_step and backward actions


def _is_model_scope(name: str) -> bool:
    return name.startswith(MODEL_SCOPES) or (name.startswith("[") and name.endswith((".training_step", ".backward")))


def profile_group(event) -> str:
    """The :data:`PROFILE_GROUPS` kind of a profiler event's self time: that of the innermost scope
    around it that says whose it is (data loading, the optimizer's own work), and within the model's
    work, attention when an attention op is around it, else matmul when a matmul or convolution is
    (an addmm inside attention is attention's; a transpose inside linear is the matmul's)."""
    inner = []  # the event and the ops around it, up to the innermost scope that says whose it is
    while (event is not None and not event.name.startswith(DATA_SCOPES + OPTIMIZER_SCOPES)
           and not _is_model_scope(event.name)):
        inner.append(event.name)
        event = event.cpu_parent
    if event is not None and event.name.startswith(DATA_SCOPES):
        return "data loading"
    if event is not None and event.name.startswith(OPTIMIZER_SCOPES):
        return "optimizer"
    if not inner:
        return "autograd and scopes"  # a scope's own time
    if any(name.startswith("aten::") and ("attention" in name or "scaled_dot_product" in name) for name in inner):
        return "attention"
    if any(name in MATMUL_OPS for name in inner):
        return "matmul and convolution"
    # Elementwise ops, norms, softmax, losses, casts, copies, gradient clipping, the EMA.
    return "other ops" if inner[0].startswith("aten::") else "autograd and scopes"


class LightningScopes(Profiler):
    """Lightning's profiled actions (the batch fetch, training_step, backward, optimizer_step) as
    ``torch.profiler`` scopes, so that :func:`profile_group` can tell the model's work in an
    optimizer's closure from the optimizer's own."""

    def __init__(self):
        super().__init__()
        self._open: dict[str, list] = {}

    def start(self, action_name: str) -> None:
        scope = torch.profiler.record_function(action_name)
        scope.__enter__()
        self._open.setdefault(action_name, []).append(scope)

    def stop(self, action_name: str) -> None:
        if self._open.get(action_name):
            self._open[action_name].pop().__exit__(None, None, None)


class UpdateProfiler(pl.Callback):
    """``torch.profiler`` (CPU activity: on CUDA, the host's side) over ``updates`` updates after
    the first ``start_after``: from the end of update ``start_after`` to the end of the last, so
    that each profiled update's data loading is in. Leaves ``report`` (the time by kind of work,
    for JSON) and ``text`` (the top ops)."""

    def __init__(self, start_after: int, updates: int, cuda: bool, rows: int = 25):
        self.start_after, self.updates, self.cuda, self.rows = start_after, updates, cuda, rows
        self.report, self.text, self._profile, self._started, self._batches = None, "", None, 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._batches += 1
        if self._batches == self.start_after:
            from torch.profiler import ProfilerActivity, profile

            self._profile = profile(activities=[ProfilerActivity.CPU])
            self._profile.start()
            self._started = time.perf_counter()
        elif self._batches == self.start_after + self.updates:
            self._summarize()

    def _summarize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - self._started
        self._profile.stop()
        updates = self.updates
        groups, ops = dict.fromkeys(PROFILE_GROUPS, 0.0), dict.fromkeys(PROFILE_GROUPS, 0)
        covered = 0.0
        for event in self._profile.events():
            seconds, group = event.self_cpu_time_total / 1e6, profile_group(event)
            groups[group] += seconds
            ops[group] += event.name.startswith("aten::")  # many small ops: per-op overhead
            covered += seconds
        groups["outside ops"] = max(wall - covered, 0.0)  # Python between ops: the loop, hooks, module code
        averages = sorted(self._profile.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        self.report = {
            "updates": updates, "wall_s": wall, "seconds_per_update": {k: v / updates for k, v in groups.items()},
            "share": {k: v / wall for k, v in groups.items()},
            "ops_per_update": {k: v / updates for k, v in ops.items()},
            "top_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count}
                        for e in averages[:self.rows]],
        }
        self.text = self._profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.rows)


def profile_report(row: dict, text: str) -> str:
    """The --profile file's section of one row: the time by kind of work, then the top ops."""
    profile = row["profile"]
    title = (f"{row['model']} ({' '.join(row['config'])}), precision {row['precision']}, batch {row['batch_size']}, "
             f"{row['cpu_threads']} threads: {profile['updates']} updates in {profile['wall_s']:.3f} s "
             "(data loading included)")
    counted = sum(row["flops_by_op"].values()) or 1.0
    attention = sum(flops for op, flops in row["flops_by_op"].items() if "attention" in op) / counted
    flop_shares = {"attention": f"{attention:.1%}", "matmul and convolution": f"{1 - attention:.1%}"}
    groups = text_table(["kind of work", "s/update", "share of time", "share of FLOPs", "ops/update"],
                        [[name, f"{profile['seconds_per_update'][name]:.4f}", f"{profile['share'][name]:.1%}",
                          flop_shares.get(name, ""), f"{profile['ops_per_update'][name]:.0f}"] for name in PROFILE_GROUPS])
    return f"== {title}\n{groups}\n\ntop ops by self CPU time:\n{text}"


def model_kind(config, allow_any_target: bool) -> str:
    """autoencoder, generator or world: which training module ``config.model`` builds."""
    module_class = resolve_target(config.model.get("target"), "model", TRAINED_MODULE, allow_any_target)
    for kind, path in MODULE_CLASSES.items():
        if issubclass(module_class, resolve_target(path, "model", TRAINED_MODULE)):
            return kind
    raise ConfigError(f"model.target: {config.model.get('target')} is none of {', '.join(MODULE_CLASSES.values())}")


def synthetic_action_videos(folder: Path, videos: int = 4, clips: int = 9, clip_frames: int = 8) -> Path:
    """A meta CSV (``train.csv``) of ``videos`` 64x64 videos at 8 fps, a bright square moving 2
    pixels a frame the way each clip's action (U, D, L or R) says, with a ``label`` (0 or 1) and
    an ``actions`` column (one letter per clip): what encode-dataset reads for a generator's classes
    and a world model's actions. The default 9 clips of 8 frames give the world model 2 windows of
    8 clips per video and the generator 4 clips of 16 frames."""
    from vidtwin.data.video_io import write_video

    folder.mkdir(parents=True, exist_ok=True)
    steps = {"U": (-2, 0), "D": (2, 0), "L": (0, -2), "R": (0, 2)}
    random = torch.Generator().manual_seed(0)
    rows = ["videos,label,actions"]
    for index in range(videos):
        actions = "".join("UDLR"[int(i)] for i in torch.randint(0, 4, (clips,), generator=random))
        frames = torch.zeros(clips * clip_frames, 64, 64, 3, dtype=torch.uint8)  # (T, H, W, 3)
        y, x = 24, 24
        for frame in range(len(frames)):
            dy, dx = steps[actions[frame // clip_frames]]
            y, x = (y + dy) % 48, (x + dx) % 48  # the 16x16 square stays inside the frame
            frames[frame, y:y + 16, x:x + 16] = 220
        write_video(folder / f"{index:03d}.mp4", frames, fps=8.0)
        rows.append(f"{index:03d}.mp4,{index % 2},{actions}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder / "train.csv"


def synthetic_latent_dataset(kind: str, folder: Path) -> Path:
    """A latent dataset for the ``kind`` latent model in ``folder`` (reused when it is there):
    :func:`synthetic_action_videos` encoded by ``vidtwin encode-dataset`` with an untrained
    autoencoder of the config that the README pipeline encodes with."""
    from omegaconf import OmegaConf

    from vidtwin import load_model
    from vidtwin.cli import main as vidtwin_main

    preset, label_arguments = SYNTHETIC_LATENT_SOURCES[kind]
    output = folder / f"{kind}_latents"
    if (output / "manifest.json").is_file():
        return output
    threads = torch.get_num_threads()  # encode-dataset picks its own thread count
    meta = folder / "videos" / "train.csv"
    if not meta.is_file():
        synthetic_action_videos(meta.parent)
    config = folder / f"{preset}.yaml"
    OmegaConf.save(load_config([preset]), config)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        weights = folder / f"{preset}.pt"
        torch.save(load_model(str(config)).state_dict(), weights)
    code = vidtwin_main(["encode-dataset", "--config", str(config), "--ckpt", str(weights), "--input", str(meta),
                         "--output", str(output), "--sample-fps", "8", "--num-workers", "0", "--accelerator", "cpu",
                         "--quiet", *label_arguments])
    torch.set_num_threads(threads)
    if code != 0:
        # What a failed encoding wrote has a manifest too: leave nothing that a later run would reuse.
        shutil.rmtree(output, ignore_errors=True)
        raise RuntimeError(f"encoding the synthetic latent dataset for the {kind} model failed (exit status {code})")
    return output


def checked_kind(bases: list[str], args) -> str:
    """Which kind of model the config trains, once its targets are checked as ``vidtwin train``
    checks them (before anything outside the allowed packages is imported, or anything is built)."""
    try:
        config = load_config(bases, args.overrides)
        check_config_targets(config, args.allow_any_target, ", ".join(bases))
        return model_kind(config, args.allow_any_target)
    except (ConfigError, ValueError) as error:
        raise UserError(str(error)) from None


def build_row_setup(bases: list[str], kind: str, args, data_folder: Path):
    """(module, fit arguments) of one config of ``kind`` (:func:`checked_kind`) under this run's options."""
    overrides = list(args.overrides)
    try:
        if kind == "autoencoder":
            gan = args.gan or ("config" if args.demos else "on")
            if gan != "config":
                overrides.append(f"model.params.loss.params.disc_start={0 if gan == 'on' else 10**9}")
            overrides.append(f"model.params.gradient_checkpointing={str(args.gradient_checkpointing).lower()}")
        else:
            if not any(override.startswith("model.params.seed=") for override in overrides):
                overrides.append("model.params.seed=0")  # the draws of each update: the same in both of run_row's runs
            if args.data == "synthetic":
                overrides += [f"data.params.root={synthetic_latent_dataset(kind, data_folder)}",
                              "model.params.autoencoder=null"]
        if args.batch_size is not None:
            overrides.append(f"data.params.batch_size={args.batch_size}")
        config = load_config(bases, overrides)
        module = build_from_config(config.model, "model", TRAINED_MODULE, args.allow_any_target)
        if getattr(module, "grad_accumulation", 1) != 1:  # the Trainer here accumulates nothing for the others
            raise ConfigError("the benchmark times one batch per update; set model.params.grad_accumulation=1")
        if kind == "autoencoder" and args.data == "synthetic":
            batch_size = int(config.get("data", {}).get("params", {}).get("batch_size", 1))
            clips = SyntheticClips(module.autoencoder.input_size, (args.warmup + args.steps + args.profile_steps) * batch_size)
            fit = {"train_dataloaders": DataLoader(clips, batch_size=batch_size, collate_fn=_collate, num_workers=0)}
        else:
            fit = {"datamodule": build_from_config(config.data, "data", DATA_MODULE, args.allow_any_target)}
    except (ConfigError, ValueError) as error:  # the config, or a constructor's check of its values
        raise UserError(str(error)) from None
    return module, fit


def fit_updates(module, fit: dict, updates: int, precision: str, args, callbacks: list, profiler=None) -> None:
    """Train ``module`` for ``updates`` updates in a Trainer that logs and saves nothing."""
    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=updates * module.lightning_steps_per_update, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=callbacks, profiler=profiler,
    )
    with any_target_allowed(args.allow_any_target):  # the modules build their optimizers in fit
        trainer.fit(module, **fit)


def run_row(bases: list[str], kind: str, precision: str, requested: str, args, data_folder: Path,
            matmul: MatmulRates) -> tuple[dict, str]:
    """Time one config at one precision; returns its JSON record and the profile's top ops (or "").

    Two runs of a fresh module each: the first is timed (and profiled after the timed updates), the
    second counts the FLOPs of the timed updates, whose numbers and random draws (the world model's
    context length) it repeats: the module's seed and the data order are fixed.
    """
    cuda = args.device == "cuda"
    matmul_dtype = matmul_dtype_of_precision(precision)
    matmul.ensure(matmul_dtype)
    timer = UpdateTimer(cuda)
    profiler = UpdateProfiler(args.warmup + args.steps, args.profile_steps, cuda) if args.profile else None
    module, fit = build_row_setup(bases, kind, args, data_folder)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    load_before = round(os.getloadavg()[0], 2)
    with PeakRSS() as rss:
        fit_updates(module, fit, args.warmup + args.steps + (args.profile_steps if profiler else 0), precision, args,
                    [timer] + ([profiler] if profiler else []), LightningScopes() if profiler else None)
    peak_memory = torch.cuda.max_memory_allocated() if cuda else rss.peak_bytes or 0
    flops = UpdateFlops(args.warmup, args.warmup + args.steps)
    counted_module, counted_fit = build_row_setup(bases, kind, args, data_folder)
    fit_updates(counted_module, counted_fit, args.warmup + args.steps, precision, args, [flops])
    timed = slice(args.warmup, args.warmup + args.steps)
    compute = timer.compute[timed]
    intervals = timer.intervals[args.warmup - 1:args.warmup - 1 + args.steps]  # interval i ends batch i + 1
    update_s = statistics.median(intervals)
    flops_per_update = statistics.fmean(flops.flops)
    achieved = flops_per_update / update_s / 1e12  # the mean update's FLOPs at the median update's time
    peak = matmul.peak(matmul_dtype)
    batch_size = getattr(fit.get("train_dataloaders"), "batch_size", None) or getattr(fit.get("datamodule"), "batch_size", None)
    row = {
        "model": kind, "config": bases, "overrides": args.overrides, "data": args.data, "device": args.device,
        "device_name": torch.cuda.get_device_name() if cuda else cpu_name(), "cpu_threads": torch.get_num_threads(),
        "precision": precision, "precision_requested": requested, "batch_size": batch_size,
        "timed_updates": len(intervals),
        "update_s_median": round(update_s, 4), "update_s_min": round(min(intervals), 4),
        "compute_s_median": round(statistics.median(compute), 4),
        # The names of earlier versions of this record: the update alone, without data loading.
        "step_time_s_median": round(statistics.median(compute), 4), "step_time_s_mean": round(statistics.fmean(compute), 4),
        "step_time_s_min": round(min(compute), 4), "samples_per_s": round(batch_size / update_s, 3) if batch_size else None,
        "flops_per_update": flops_per_update, "flops_per_timed_update": flops.flops, "flops_by_op": flops.mean_by_op(),
        "achieved_tflops": achieved, "matmul_dtype": matmul_dtype, "matmul_tflops": peak,
        "matmul_share": share_of_peak(achieved, peak),
        "peak_memory_mb": round(peak_memory / 2**20, 1),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "process resident set while the row ran",
        "parameters": sum(p.numel() for p in module.parameters()),
        "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
        # Other processes compete for a shared CPU: the 1-minute load average before the row.
        "load_average_1min_before": load_before,
    }
    if kind == "autoencoder":
        row.update(input_size=list(module.autoencoder.input_size), gan_active=bool(module._discriminator_active()),
                   gradient_checkpointing=args.gradient_checkpointing)
    if profiler is not None:
        row["profile"] = profiler.report
    return row, profiler.text if profiler is not None else ""


def format_rows(rows: list[dict]) -> str:
    """The utilization table: one line per model and precision."""
    def rate(value):
        return "-" if value is None else f"{value:.3g}"

    header = ["model", "precision", "batch", "s/update", "update alone s", "GFLOP/update", "TFLOP/s",
              "matmul TFLOP/s", "share"]
    lines = [[row["model"], row["precision"], row["batch_size"], f"{row['update_s_median']:.3f}",
              f"{row['compute_s_median']:.3f}",
              "-" if row["flops_per_update"] is None else f"{row['flops_per_update'] / 1e9:.2f}",
              rate(row["achieved_tflops"]), f"{rate(row['matmul_tflops'])} {row['matmul_dtype']}",
              "-" if row["matmul_share"] is None else f"{row['matmul_share']:.1%}"] for row in rows]
    return text_table(header, lines)


def write_records(path: str, records: list[dict], append: bool) -> None:
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    if append and output.is_file():
        previous = json.loads(output.read_text())
        records = (previous if isinstance(previous, list) else [previous]) + records
    atomic_write_text(output, json.dumps(records, indent=2) + "\n")
    print(f"wrote {output}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotlist config overrides")
    parser.add_argument("--base", nargs="+", default=None, help="config files or presets, merged in order")
    parser.add_argument("--demos", action="store_true",
                        help=f"time the README pipelines' models, one after another: {', '.join(DEMO_CONFIGS)}")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", nargs="+", default=["32"],
                        help="Lightning precisions, one row each: 32, bf16-mixed, 16-mixed, or auto (bf16-mixed where "
                             "the device computes bf16 natively, as vidtwin train's precision: auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's data.params.batch_size")
    parser.add_argument("--steps", type=int, default=10, help="timed updates")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first (allocator, autotuning)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: what vidtwin train chooses for the cores free now)")
    parser.add_argument("--data", choices=("synthetic", "config"), default="synthetic",
                        help="synthetic clips or latents (default), or the config's data section as it is")
    parser.add_argument("--gan", choices=("on", "off", "config"), default=None,
                        help="autoencoder: time the discriminator's phase (on), the updates before disc_start (off), "
                             "or what the config does at its first update (config); default on, config with --demos")
    parser.add_argument("--no-gan", dest="gan", action="store_const", const="off", help="--gan off")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="size of the square matmul whose rate is the peak (default: 2048 on the CPU, 8192 on CUDA)")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="profile more updates of each row with torch.profiler; write the report here")
    parser.add_argument("--profile-steps", type=int, default=3, help="updates profiled per row")
    parser.add_argument("--work-dir", default=None,
                        help="where the synthetic latent datasets are written and reused (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--append", action="store_true", help="add to the list of results already in --output")
    parser.add_argument("--allow-any-target", action="store_true",
                        help="let the config import targets outside the packages vidtwin train allows (a config is "
                             "code: only for configs you trust)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    # KEY=VALUE overrides written after --base or --precision (nargs="+") land in their lists.
    args.overrides += [o for o in (args.base or []) + args.precision if "=" in o]
    bases = [b for b in args.base or [] if "=" not in b]
    args.precision = [p for p in args.precision if "=" not in p] or ["32"]
    if bool(bases) == args.demos:
        raise UserError("give --base CONFIG or --demos (one of them)")
    if min(args.warmup, args.steps) < 1:
        raise UserError("--warmup and --steps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible")
    configs = [[name] for name in DEMO_CONFIGS] if args.demos else [bases]
    kinds = [checked_kind(config_bases, args) for config_bases in configs]
    from vidtwin.training.run_report import quiet_lightning

    quiet_lightning()  # the tips and stop lines vidtwin train hides
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`")  # none is timed
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.device == "cpu":
        from vidtwin.cpu_threads import apply_cpu_thread_policy

        print(apply_cpu_thread_policy().describe(), flush=True)

    precisions = {}  # precision -> what was asked for; auto resolves to one of the others
    for requested in args.precision:
        precision = requested
        if requested == "auto":  # the choice vidtwin train makes for this device
            precision, _, reason = auto_training_precision(args.device)
            print(f"precision auto: {precision} on {args.device} ({reason})", flush=True)
        precisions.setdefault(precision, requested)
    matmul = MatmulRates(args.device, args.matmul_size)
    rows, profiles = [], []
    with tempfile.TemporaryDirectory(prefix="benchmark_train_") as temporary:
        data_folder = Path(args.work_dir or temporary)
        data_folder.mkdir(parents=True, exist_ok=True)
        for config_bases, kind in zip(configs, kinds):
            for precision, requested in precisions.items():
                print(f"== {' '.join(config_bases)}, precision {precision}", flush=True)
                row, top_ops = run_row(config_bases, kind, precision, requested, args, data_folder, matmul)
                rows.append(row)
                profiles.append(top_ops)
    matmul.remeasure()
    for row in rows:  # against the best of the matmul timed before and after the rows
        row["matmul_tflops"] = matmul.peak(row["matmul_dtype"], row["cpu_threads"])
        row["matmul_share"] = share_of_peak(row["achieved_tflops"], row["matmul_tflops"])
        row["matmul_rates"] = [m for m in matmul.measurements
                               if m["dtype"] == row["matmul_dtype"] and m["threads"] == row["cpu_threads"]]
    print(format_rows(rows))
    if args.profile:
        sections = [profile_report(row, top_ops) for row, top_ops in zip(rows, profiles)]
        atomic_write_text(Path(args.profile), "\n\n".join(sections) + "\n")
        print(f"wrote {args.profile}")
    if args.output:
        write_records(args.output, rows, args.append)
    return 0


if __name__ == "__main__":
    run_cli(main, "benchmark_train.py")
