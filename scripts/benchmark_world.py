"""Speed and memory of the world model on the CPU: a training update, a predicted clip, and what a
rollout holds as it grows.

    python -m scripts.benchmark_world --json world_bench.json
    python -m scripts.benchmark_world --config configs/world/tiny_digits.yaml --threads 2

The model is the one ``--config`` describes (default ``configs/world/tiny_digits.yaml``: its
``model.params.world`` settings and ``data.params.batch_size``), with random weights (they cost
the same time as trained ones) on the token grids of ``configs/tiny_digits_fsq.yaml`` (or
``--autoencoder``). It reports:

- **update**: the median wall time of one training update (MaskGIT loss, backward, AdamW) on a
  batch of random windows of K + 1 clips, after ``--warmup`` updates;
- **clip**: the median wall time of one predicted clip (``decoding_steps`` passes) for one rollout;
- **held**: the bytes of the tensors a rollout holds (its window and actions) after 2 and after
  ``--steps`` clips, which must be the same (bounded memory).

Wall times are noisy on a shared machine; the CPU and its thread count go into the JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time

from scripts.bench_report import cpu_description, write_json_report
from vidtwin.cli.convention import add_debug_flag, run_cli

PROG = "benchmark_world.py"


def build(config_path: str, autoencoder_path: str):
    """(model, batch size) of the world model ``config_path`` describes, on ``autoencoder_path``'s token grids."""
    from omegaconf import OmegaConf

    from vidtwin.config import autoencoder_config_from, load_config
    from vidtwin.generation import WorldModel, WorldModelConfig

    config = load_config([config_path])
    settings = dict(OmegaConf.to_container(config.model.params.world, resolve=True))
    size = settings.pop("size", "tiny")
    autoencoder = autoencoder_config_from(autoencoder_path)
    model = WorldModel(WorldModelConfig.from_preset(
        size, token_shapes={k: list(v) for k, v in autoencoder.token_shapes().items()},
        structure_levels=list(autoencoder.structure_levels), dynamics_levels=list(autoencoder.dynamics_levels), **settings))
    return model, int(config.data.params.batch_size)


def random_batch(model, batch: int, clips: int, seed: int = 0) -> dict:
    import torch

    random = torch.Generator().manual_seed(seed)
    sizes = {"structure": model.codebook_sizes[0], "dynamics_x": model.codebook_sizes[1], "dynamics_y": model.codebook_sizes[1]}
    tokens = {name: torch.randint(0, sizes[name], (batch, clips, *shape), generator=random)
              for name, shape in model.config.token_shapes.items()}
    tokens["actions"] = torch.randint(0, len(model.config.actions), (batch, clips), generator=random)
    return tokens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/world/tiny_digits.yaml", help="the world model's train.py config")
    parser.add_argument("--autoencoder", default="configs/tiny_digits_fsq.yaml", help="the FSQ autoencoder's config")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--updates", type=int, default=10, help="timed training updates (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates first (default 2)")
    parser.add_argument("--steps", type=int, default=20, help="clips of the timed rollout (default 20)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, batch_size = build(args.config, args.autoencoder)
    windows = random_batch(model, batch_size, model.config.context_clips + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    random = torch.Generator().manual_seed(0)
    update_times = []
    for index in range(args.warmup + args.updates):
        start = time.perf_counter()
        loss = model.training_loss(windows, generator=random)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index >= args.warmup:
            update_times.append(time.perf_counter() - start)

    model.eval()
    first = {name: value[:1, 0] for name, value in windows.items() if name != "actions"}
    state = model.start(first, seed=0)
    clip_times, held = [], {}
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        state.step([step % len(model.config.actions)])
        clip_times.append(time.perf_counter() - start)
        if step in (2, args.steps):
            held[step] = sum(tensor.numel() * tensor.element_size() for tensor in (state.window, state.actions))
    figures = {
        "update_s": statistics.median(update_times), "batch_windows": batch_size,
        "clip_s": statistics.median(clip_times), "decoding_steps": model.config.decoding_steps,
        "held_bytes": {str(step): value for step, value in held.items()},
        "parameters": sum(p.numel() for p in model.parameters()), "tokens_per_clip": model.tokens_per_clip,
        "context_clips": model.config.context_clips, "threads": args.threads, **cpu_description(),
    }
    print(f"{'training update':<28} {figures['update_s']:.3f} s  ({batch_size} windows of "
          f"{model.config.context_clips + 1} clips, {figures['parameters'] / 1e6:.2f}M parameters)")
    print(f"{'predicted clip':<28} {figures['clip_s']:.3f} s  ({model.config.decoding_steps} decoding steps, "
          f"{model.tokens_per_clip} tokens)")
    print(f"{'rollout holds':<28} {held[2]} B at step 2, {held[args.steps]} B at step {args.steps}")
    print(f"{figures['cpu']}, {args.threads} threads")
    write_json_report(args.json, figures)
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
