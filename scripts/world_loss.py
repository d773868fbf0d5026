"""The world model's MaskGIT loss on token datasets: the training tokens beside held-out ones show
whether it memorizes its training videos (the held-out loss rises while the training loss falls).

    python inference.py encode-dataset --config logs/digits_fsq/config.yaml --ckpt logs/digits_fsq/checkpoints/last.ckpt \\
        --input data/digit_game/val.csv --actions-column actions --output data/digit_game_val_tokens
    python -m scripts.world_loss logs/digits_world --data data/digit_game_tokens data/digit_game_val_tokens

Each dataset (``inference.py encode-dataset --actions-column``, by the world model's autoencoder)
gives ``--windows`` windows of K + 1 clips, drawn with ``--seed``; the loss is the training loss
(cross-entropy of the masked tokens of the last clip, in nats per token), with the masks drawn
with the same seed for every dataset and checkpoint, once per context length from 1 to K. A model
that keeps its start clip (``start_window`` W) is scored on windows of W clips, once per
predicted clip from 1 to W - 1 (the ``step`` column), with the context a rollout has there. The
world model is a ``train.py`` run directory (its newest checkpoint), one of its checkpoints or a
saved folder, with EMA weights when stored; give several to follow a run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vidtwin.atomic_io import atomic_write_text
from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.errors import UserError

PROG = "world_loss.py"


class WorldLossError(ValueError, UserError):
    """A token dataset that the world model cannot be scored on."""


def check_dataset(world, root: str) -> None:
    """Raise a one-line error unless the dataset at ``root`` holds the tokens and actions ``world`` was trained on."""
    from vidtwin.training.world_module import token_dataset_settings

    settings = token_dataset_settings(root)  # its own one-line errors: Gaussian latents, no actions
    if settings["actions"] != list(world.config.actions):
        raise WorldLossError(f"{root} has the actions {settings['actions']}, the world model "
                             f"{world.config.actions}: encode it with --actions-column")
    differing = [name for name, value in settings.items() if value != getattr(world.config, name)]
    if differing:
        raise WorldLossError(f"the tokens of {root} differ from the world model's in {', '.join(differing)}: "
                             "encode it with the autoencoder the world model was trained with")


def dataset_windows(world, root: str, windows: int, seed: int) -> dict:
    """A batch of ``windows`` random windows of the model's training length of the dataset at ``root``."""
    from vidtwin.latents.dataset import LatentDataset, collate_latent_sequences

    check_dataset(world, root)
    dataset = LatentDataset(root, sequence_length=world.config.training_window)
    if len(dataset) == 0:
        raise WorldLossError(f"{root} has no video of {world.config.training_window} clips or more")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:windows]
    return collate_latent_sequences([dataset[int(index)] for index in order])


def scored_contexts(world) -> tuple:
    """The ``training_loss`` argument that fixes a window's context, and its values: context
    clips 1 to K, or the predicted clip 1 to W - 1 for a model with ``start_window``."""
    if world.config.start_window:
        return "target_clip", range(1, world.config.training_window)
    return "context_clips", range(1, world.config.context_clips + 1)


def masked_losses(world, batch: dict, seed: int) -> dict:
    """Each value of :func:`scored_contexts` -> the mean masked loss of ``batch``, with masks drawn from ``seed``."""
    argument, values = scored_contexts(world)
    with torch.no_grad():
        return {value: float(world.training_loss(batch, torch.Generator().manual_seed(seed), **{argument: value}))
                for value in values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", nargs="+", help="run directories, checkpoints or saved folders of world models")
    parser.add_argument("--data", nargs="+", required=True, dest="datasets",
                        help="token datasets with actions (encode-dataset --actions-column)")
    parser.add_argument("--windows", type=int, default=256, help="windows per dataset (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="of the windows and the masks (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the losses to this JSON file")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.windows < 1:
        raise WorldLossError("--windows must be >= 1")
    from vidtwin.generation import load_world_model

    rows, batches = [], {}  # (dataset, window length) -> its windows, read once for all the checkpoints
    for reference in args.world:
        world = load_world_model(reference)
        for root in args.datasets:
            key = (root, world.config.training_window)
            if key in batches:
                check_dataset(world, root)
            else:
                batches[key] = dataset_windows(world, root, args.windows, args.seed)
            batch = batches[key]
            label, _ = scored_contexts(world)
            for value, loss in masked_losses(world, batch, args.seed).items():
                rows.append({"world": reference, "dataset": root, label: value,
                             "windows": int(batch["actions"].shape[0]), "loss": loss})
    width = max(len(row["world"]) for row in rows)
    # One line per model and context length ("context"), or predicted clip ("step") for start_window models.
    print(f"{'world model':<{width}} {'context/step':>12} " + " ".join(f"{root:>24}" for root in args.datasets))
    for reference in args.world:
        mine = [row for row in rows if row["world"] == reference]
        for label, name in (("context_clips", "context"), ("target_clip", "step")):
            for value in sorted({row[label] for row in mine if label in row}):
                losses = [row["loss"] for row in mine if row.get(label) == value]
                print(f"{reference:<{width}} {f'{name} {value}':>12} " + " ".join(f"{loss:>24.3f}" for loss in losses))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"seed": args.seed, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
