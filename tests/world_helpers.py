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
    # 8 frames, as the game's clips (tiny.yaml's quick start has 4).
    config.model.params.autoencoder.merge_with({"input_size": [8, 64, 64], "patch_size": [1, 8, 8], "num_queries": 2,
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


def encode_game_tokens(files, game, output, train_videos=6, clips_per_video=4):
    """Moving Digits game videos in ``game`` (8-frame clips, one action each, and one validation
    video), encoded into ``output`` by ``files``' small FSQ autoencoder (:func:`make_play_files`)
    through the real ``encode-dataset --actions-column``: ``train_videos * (clips_per_video - 2)``
    windows of 3 clips."""
    from vidtwin.demos.moving_digits import make_moving_digits
    from vidtwin.cli import main as inference

    make_moving_digits(game, game=True, num_frames=8, speed=2, clips_per_video=clips_per_video,
                       train_videos=train_videos, val_videos=1, progress=False)
    assert inference(["encode-dataset", "--config", str(files / "ae.yaml"), "--ckpt", str(files / "ae.pt"),
                      "--input", str(game / "train.csv"), "--actions-column", "actions", "--output", str(output),
                      "--sample-fps", "8", "--num-workers", "0", "--accelerator", "cpu", "--quiet"]) == 0
    return output


def world_training_config(path, dataset, autoencoder=None, max_steps=2, **params):
    """A train.py config of a tiny world model on ``dataset``, decoding samples with ``autoencoder`` (config, ckpt)."""
    from generation_helpers import latent_training_config

    model_params = {
        "dataset": "${data.params.root}", "world": {"size": "tiny", "hidden_size": 32, "depth": 1, "num_heads": 2,
                                                    "context_clips": 2, "decoding_steps": 2},
        "autoencoder": {"config": str(autoencoder[0]), "ckpt": str(autoencoder[1])} if autoencoder else None,
        "learning_rate": 3e-3, "warmup_steps": 2, "ema_decay": 0.9, **params,
    }
    return latent_training_config(path, "vidtwin.training.WorldLightningModule", model_params,
                                  {"root": str(dataset), "sequence_length": 3, "tokens": True}, max_steps)
