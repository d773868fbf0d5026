#!/usr/bin/env python3
"""Training-step benchmark: time per update, samples/s and peak memory for a config.

Runs real updates of ``VidTwinLightningModule`` (autoencoder + discriminator, both optimizers)
inside a Lightning Trainer on synthetic clips of the model's input size, so data loading is not
part of the figure. By default the discriminator is active (``disc_start: 0``), which is the
expensive phase of training; ``--no-gan`` measures the phase before ``disc_start``.

    python -m scripts.benchmark_train --base configs/tiny.yaml --device cpu --batch-size 2
    python -m scripts.benchmark_train --base configs/vidtwin.yaml --device cuda --precision bf16-mixed \\
        --batch-size 2 --output docs/benchmarks_train_h100.json

``--precision auto`` times the precision that ``lightning.trainer.precision: auto`` picks on the device
(``bf16-mixed`` where it computes bf16 natively, else ``32``); the JSON records both.

Prints a table and writes the numbers as JSON (``--output``). The config's targets are checked as
``vidtwin train`` checks them (:func:`vidtwin.config.check_config_targets`) before anything is built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vidtwin.atomic_io import atomic_write_text
from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.errors import UserError
from vidtwin.precision import auto_training_precision
from vidtwin.config import (
    ConfigError, TargetKind, any_target_allowed, build_from_config, check_config_targets, load_config,
)

from scripts.bench_report import cpu_name


# The model this benchmark times: it reads the autoencoder and the discriminator of VidTwinLightningModule.
AUTOENCODER_MODULE = TargetKind("a vidtwin.training.VidTwinLightningModule class",
                                ("vidtwin.training.module.VidTwinLightningModule",))


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


class StepTimer(pl.Callback):
    """Wall time of each training batch (forward, both backward passes, both optimizer steps)."""

    def __init__(self, cuda: bool):
        self.cuda, self.times, self._start = cuda, [], 0.0

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def peak_memory_mb(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux: the peak resident memory of the whole process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotlist config overrides")
    parser.add_argument("--base", nargs="+", required=True, help="config files, merged in order")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="32",
                        help="Lightning precision: 32, bf16-mixed, 16-mixed, or auto (bf16-mixed where the device "
                             "computes bf16 natively, as vidtwin train's precision: auto)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed updates")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first (allocator, autotuning)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-gan", action="store_true", help="time the updates before disc_start (no discriminator)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--append", action="store_true", help="add to the list of results already in --output")
    parser.add_argument("--allow-any-target", action="store_true",
                        help="let the config import targets outside the packages vidtwin train allows (a config is "
                             "code: only for configs you trust)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    args.overrides += [o for o in args.base if "=" in o]
    args.base = [b for b in args.base if "=" not in b]

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    requested_precision = args.precision
    if args.precision == "auto":  # the choice vidtwin train makes for this device
        args.precision, _, reason = auto_training_precision(args.device)
        print(f"precision auto: {args.precision} on {args.device} ({reason})", flush=True)
    disc_start = 10**9 if args.no_gan else 0
    overrides = list(args.overrides) + [f"model.params.loss.params.disc_start={disc_start}",
                                         f"model.params.gradient_checkpointing={str(args.gradient_checkpointing).lower()}"]
    try:
        config = load_config(args.base, overrides)
        check_config_targets(config, args.allow_any_target, ", ".join(args.base))  # before anything is built
        module = build_from_config(config.model, "model", AUTOENCODER_MODULE, args.allow_any_target)
    except (ConfigError, ValueError) as error:  # the config, or a constructor's check of its values
        raise UserError(str(error)) from None

    load_before = round(os.getloadavg()[0], 2)
    updates = args.warmup + args.steps
    dataset = SyntheticClips(module.autoencoder.input_size, updates * args.batch_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=_collate, num_workers=0)
    timer = StepTimer(cuda=args.device == "cuda")
    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, precision=args.precision,
        max_steps=updates * module.lightning_steps_per_update, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[timer],
    )
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with any_target_allowed(args.allow_any_target):  # the module builds its optimizers in fit
        trainer.fit(module, train_dataloaders=loader)

    timed = timer.times[args.warmup:]
    step = statistics.median(timed)
    result = {
        "config": args.base, "overrides": args.overrides, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "cpu_threads": torch.get_num_threads(), "precision": args.precision,
        "precision_requested": requested_precision, "batch_size": args.batch_size,
        "input_size": list(module.autoencoder.input_size), "gan_active": not args.no_gan,
        "gradient_checkpointing": args.gradient_checkpointing, "timed_updates": len(timed),
        "step_time_s_median": round(step, 4), "step_time_s_mean": round(statistics.fmean(timed), 4),
        "step_time_s_min": round(min(timed), 4), "samples_per_s": round(args.batch_size / step, 3),
        "peak_memory_mb": round(peak_memory_mb(args.device == "cuda"), 1),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "process peak RSS",
        "parameters_autoencoder": sum(p.numel() for p in module.autoencoder.parameters()),
        "parameters_discriminator": sum(p.numel() for p in module.loss.discriminator.parameters()),
        "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        # Other processes compete for a shared CPU: the 1-minute load average before the run.
        "load_average_1min_before": load_before,
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        records = result
        if args.append and output.is_file():
            previous = json.loads(output.read_text())
            records = (previous if isinstance(previous, list) else [previous]) + [result]
        atomic_write_text(output, json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main, "benchmark_train.py")
