"""The world model's MaskGIT loss on token datasets: the training tokens beside held-out ones show
whether it memorizes its training videos (the held-out loss rises while the training loss falls).
``vidtwin demo world-loss`` prints the table.

Each dataset (``vidtwin encode-dataset --actions-column``, by the world model's autoencoder) gives
a number of windows of K + 1 clips, drawn with a seed; the loss is the training loss (cross-entropy
of the masked tokens of the last clip, in nats per token), with the masks drawn with the same seed
for every dataset and checkpoint, once per context length from 1 to K. A model that keeps its start
clip (``start_window`` W) is scored on windows of W clips, once per predicted clip from 1 to W - 1
(the ``step`` column), with the context a rollout has there.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from ..errors import UserError


class WorldLossError(ValueError, UserError):
    """A token dataset that the world model cannot be scored on."""


def check_dataset(world, root: str) -> None:
    """Raise a one-line error unless the dataset at ``root`` holds the tokens and actions ``world`` was trained on."""
    from ..training.world_module import token_dataset_settings

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
    from ..latents.dataset import LatentDataset, collate_latent_sequences

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


def world_losses(references: Sequence[str], roots: Sequence[str], windows: int, seed: int = 0) -> List[dict]:
    """One row per world model, dataset and scored context: ``{"world", "dataset", "context_clips" or
    "target_clip" (see :func:`scored_contexts`), "windows", "loss"}``.

    references: run directories, checkpoints or saved folders of world models (EMA weights when stored).
    Each dataset's windows are read once per window length, for all the models.
    """
    from ..generation import load_world_model

    if windows < 1:
        raise WorldLossError("--windows must be >= 1")
    rows, batches = [], {}  # (dataset, window length) -> its windows
    for reference in references:
        world = load_world_model(reference)
        for root in roots:
            key = (root, world.config.training_window)
            if key in batches:
                check_dataset(world, root)
            else:
                batches[key] = dataset_windows(world, root, windows, seed)
            batch = batches[key]
            label, _ = scored_contexts(world)
            for value, loss in masked_losses(world, batch, seed).items():
                rows.append({"world": reference, "dataset": root, label: value,
                             "windows": int(batch["actions"].shape[0]), "loss": loss})
    return rows


__all__ = ["WorldLossError", "check_dataset", "dataset_windows", "masked_losses", "scored_contexts", "world_losses"]
