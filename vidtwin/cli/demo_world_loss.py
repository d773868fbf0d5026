"""`vidtwin demo world-loss`: a world model's masked-token loss on held-out and training windows.

    vidtwin encode-dataset --config logs/digits_fsq/config.yaml --ckpt logs/digits_fsq/checkpoints/last.ckpt \\
        --input data/digit_game/val.csv --actions-column actions --output data/digit_game_val_tokens
    vidtwin demo world-loss logs/digits_world --data data/digit_game_tokens data/digit_game_val_tokens

The training tokens beside held-out ones show whether the model memorizes its training videos (the
held-out loss rises while the training loss falls). Each dataset (``vidtwin encode-dataset
--actions-column``, by the world model's autoencoder) gives ``--windows`` windows of K + 1 clips,
drawn with ``--seed``; the loss is the training loss (cross-entropy of the masked tokens of the last
clip, in nats per token), with the masks drawn with the same seed for every dataset and checkpoint,
once per context length from 1 to K. A model that keeps its start clip (``start_window`` W) is
scored on windows of W clips, once per predicted clip from 1 to W - 1 (the ``step`` column), with
the context a rollout has there. The world model is a ``vidtwin train`` run directory (its newest
checkpoint), one of its checkpoints or a saved folder, with EMA weights when stored; give several
to follow a run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Sequence

from ..atomic_io import atomic_write_text
from ..demos.world_loss import world_losses


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("world", nargs="+", help="run directories, checkpoints or saved folders of world models")
    parser.add_argument("--data", nargs="+", required=True, dest="datasets",
                        help="token datasets with actions (vidtwin encode-dataset --actions-column)")
    parser.add_argument("--windows", type=int, default=256, help="windows per dataset (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="of the windows and the masks (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the losses to this JSON file")


def table(rows: List[dict], references: Sequence[str], datasets: Sequence[str]) -> str:
    """One line per model and context length ("context"), or predicted clip ("step") for start_window models."""
    width = max(len(row["world"]) for row in rows)
    lines = [f"{'world model':<{width}} {'context/step':>12} " + " ".join(f"{root:>24}" for root in datasets)]
    for reference in references:
        mine = [row for row in rows if row["world"] == reference]
        for label, name in (("context_clips", "context"), ("target_clip", "step")):
            for value in sorted({row[label] for row in mine if label in row}):
                losses = [row["loss"] for row in mine if row.get(label) == value]
                lines.append(f"{reference:<{width}} {f'{name} {value}':>12} " + " ".join(f"{loss:>24.3f}" for loss in losses))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = world_losses(args.world, args.datasets, args.windows, args.seed)
    print(table(rows, args.world, args.datasets))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"seed": args.seed, "rows": rows}, indent=2))
    return 0
