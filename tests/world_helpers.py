"""Token windows shaped as ``collate_latent_sequences`` gives them (the data interface of the world
model), built from tensors: the fixtures of the world model's tests."""

from __future__ import annotations

import math

import torch


def random_windows(config, batch: int = 2, clips: int = 3, seed: int = 0) -> dict:
    """``structure`` ``(B, n, Q, h_S, w_S)``, ``dynamics_x`` ``(B, n, T, w_D)``, ``dynamics_y``
    ``(B, n, T, h_D)`` int64 tokens of a ``WorldModelConfig``'s grids and levels, and ``actions`` ``(B, n)``."""
    random = torch.Generator().manual_seed(seed)
    sizes = {"structure": math.prod(config.structure_levels), "dynamics_x": math.prod(config.dynamics_levels),
             "dynamics_y": math.prod(config.dynamics_levels)}
    windows = {name: torch.randint(0, sizes[name], (batch, clips, *shape), generator=random)
               for name, shape in config.token_shapes.items()}
    windows["actions"] = torch.randint(0, len(config.actions), (batch, clips), generator=random)
    return windows


def small_fsq_autoencoder_config(path):
    """A YAML of a small FSQ autoencoder of 8 frames of 64x64 (tiny.yaml with 8x8 patches, 2
    queries and 125-code levels): 128 structure tokens (2 x 8 x 8) and 2 x 32 dynamics tokens per clip."""
    from omegaconf import OmegaConf

    from conftest import REPO

    config = OmegaConf.merge(OmegaConf.load(REPO / "configs" / "tiny.yaml"), OmegaConf.load(REPO / "configs" / "tiny_fsq.yaml"))
    config.model.params.autoencoder.merge_with({"patch_size": [1, 8, 8], "num_queries": 2,
                                                "structure_levels": [5, 5, 5], "dynamics_levels": [5, 5, 5]})
    OmegaConf.save(config, path)
    return path


def make_play_files(root):
    """An untrained small FSQ autoencoder (``ae.yaml``, ``ae.pt``), a tiny world model that records
    it (``world/``), a 64x64 start video of 12 frames (``start.mp4``), and videos that cannot start
    a rollout: 5 frames (``short.mp4``), 48x64 (``small.mp4``)."""
    from vidtwin import load_model
    from vidtwin.data.video_io import write_video
    from vidtwin.generation import WorldModel, WorldModelConfig, save_world_model

    root.mkdir(parents=True, exist_ok=True)
    config = small_fsq_autoencoder_config(root / "ae.yaml")
    torch.manual_seed(0)
    autoencoder = load_model(str(config))
    torch.save(autoencoder.state_dict(), root / "ae.pt")
    shapes = {name: list(shape) for name, shape in autoencoder.config.token_shapes().items()}
    world = WorldModel(WorldModelConfig.from_preset("tiny", hidden_size=32, depth=1, num_heads=2, token_shapes=shapes,
                                                    decoding_steps=2))
    world.autoencoder_files = {"config": str(config), "ckpt": str(root / "ae.pt")}
    save_world_model(world, root / "world")
    frames = torch.zeros(12, 64, 64, 3, dtype=torch.uint8)
    for index in range(12):  # a bright square moving right
        frames[index, 24:40, 8 + 2 * index:24 + 2 * index] = 220
    write_video(root / "start.mp4", frames, fps=8.0)
    write_video(root / "short.mp4", frames[:5], fps=8.0)
    write_video(root / "small.mp4", frames[:, :48], fps=8.0)
    return root


# ---------------------------------------------------------------------------- a stand-in token dataset
# The world model reads windows through LatentDataModule(sequence_length=K + 1, tokens=True) (the
# data interface of issue 17). Until that side is merged, the training tests put these stand-ins
# in its place: windows of random tokens with actions, items and batches laid out as the interface
# says, in the seeded per-epoch order of the real data module.
class StandInTokenDataset(torch.utils.data.Dataset):
    """``root/windows.pt`` (written by :func:`write_stand_in_dataset`) as the interface's ``LatentDataset``."""

    def __init__(self, root, sequence_length=None, **_):
        from pathlib import Path

        stored = torch.load(Path(root) / "windows.pt", weights_only=True)
        self.root, self.config, self.codebook, self.actions = str(root), stored["config"], stored["codebook"], stored["actions"]
        self.windows = stored["windows"]
        self.videos = [f"video_{index}.mp4" for index in range(len(self))]
        self.sequence_length = sequence_length

    def __len__(self):
        return len(self.windows["actions"])

    def __getitem__(self, index):
        item = {name: value[index] for name, value in self.windows.items()}
        return {**item, "video": self.videos[index], "first_clip": 0}


def collate_stand_in(items):
    batch = {name: torch.stack([item[name] for item in items]) for name in ("structure", "dynamics_x", "dynamics_y", "actions")}
    return {**batch, "video": [item["video"] for item in items], "first_clip": torch.zeros(len(items), dtype=torch.long)}


class StandInDataModule:
    """Built by train.py in place of ``vidtwin.training.LatentDataModule``."""

    def __new__(cls, root, batch_size=4, num_workers=0, seed=0, sequence_length=None, tokens=False, drop_last=True):
        import pytorch_lightning as pl
        from torch.utils.data import DataLoader, DistributedSampler

        class _Module(pl.LightningDataModule):
            def __init__(self):
                super().__init__()
                self.dataset = StandInTokenDataset(root, sequence_length)
                self.sequence_length = sequence_length

            def train_dataloader(self):
                sampler = DistributedSampler(self.dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
                return DataLoader(self.dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_stand_in,
                                  drop_last=True)

        return _Module()


def write_stand_in_dataset(root, autoencoder_config, windows=12, clips=3, seed=0):
    """Random token windows of the FSQ autoencoder ``autoencoder_config`` (a YAML), with actions D L R U."""
    from vidtwin.config import autoencoder_config_from
    from vidtwin.latents.latent_file import config_to_dict

    config = autoencoder_config_from(str(autoencoder_config))
    world_config = type("Grids", (), {"token_shapes": {k: list(v) for k, v in config.token_shapes().items()},
                                      "structure_levels": list(config.structure_levels),
                                      "dynamics_levels": list(config.dynamics_levels), "actions": ["D", "L", "R", "U"]})
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config_to_dict(config), "actions": ["D", "L", "R", "U"],
                "codebook": {"structure": list(config.structure_levels), "dynamics": list(config.dynamics_levels)},
                "windows": random_windows(world_config, batch=windows, clips=clips, seed=seed)}, root / "windows.pt")
    return root


def world_training_config(path, dataset, autoencoder=None, max_steps=2, **params):
    """A train.py config of a tiny world model on ``dataset``, decoding samples with ``autoencoder`` (config, ckpt)."""
    from omegaconf import OmegaConf

    model_params = {
        "dataset": "${data.params.root}", "world": {"size": "tiny", "hidden_size": 32, "depth": 1, "num_heads": 2,
                                                    "context_clips": 2, "decoding_steps": 2},
        "autoencoder": {"config": str(autoencoder[0]), "ckpt": str(autoencoder[1])} if autoencoder else None,
        "learning_rate": 3e-3, "warmup_steps": 2, "ema_decay": 0.9, **params,
    }
    config = OmegaConf.create({
        "model": {"target": "vidtwin.training.WorldLightningModule", "params": model_params},
        "data": {"target": "vidtwin.training.LatentDataModule",
                 "params": {"root": str(dataset), "sequence_length": 3, "tokens": True, "batch_size": 12, "num_workers": 0}},
        "lightning": {
            "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": max_steps, "log_every_n_steps": 1,
                        "limit_val_batches": 0, "num_sanity_val_steps": 0, "enable_model_summary": False},
            "checkpoint": {"every_n_steps": 1},
            "callbacks": {"samples": {"target": "vidtwin.training.callbacks.VideoGridLogger",
                                      "params": {"every_n_steps": 2, "max_samples": 1}}},
        },
    })
    OmegaConf.save(config, path)
    return path
