"""A labelled latent dataset of the tiny config, written directly (no videos to encode), and a
generator training config over it: the fixtures of the generator's training and sampling tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vidtwin import load_model
from vidtwin.config import autoencoder_config_from
from vidtwin.latents.labels import ClassLabels
from vidtwin.latents.latent_file import config_to_dict, weights_fingerprint
from vidtwin.latents.shards import (
    INDEX_COLUMNS, SHARD_DIR, IndexColumns, identity_digest, shard_name, write_failures, write_index, write_manifest,
    write_shard,
)
from vidtwin.models.config import LATENT_NAMES

from conftest import TINY_CONFIG

CLASSES = ["down", "up", "zero"]


def write_labelled_dataset(root: Path, ckpt: Path, clips_per_class: int = 4, seed: int = 0) -> Path:
    """A finished latent dataset of the tiny autoencoder in ``ckpt``: one clip per video, each
    class with its own latent mean (class k shifted by ``k - 1``), per-channel scales unlike 1."""
    model = load_model(TINY_CONFIG, ckpt)
    config = autoencoder_config_from(str(TINY_CONFIG))
    shapes = config.latent_shapes()
    identity = {"model_config": config_to_dict(config), "weights_fingerprint": weights_fingerprint(model),
                "sampling": {"input_size": list(config.input_size), "sample_fps": None, "max_frames": None,
                             "spatial": "resize"}, "dtype": "fp32"}
    random = torch.Generator().manual_seed(seed)
    videos = [f"{name}/{index:03d}.mp4" for name in CLASSES for index in range(clips_per_class)]
    labels = [CLASSES.index(video.split("/")[0]) for video in videos]
    tensors = {}
    for name, shape in shapes.items():
        scale = torch.linspace(0.5, 2.0, shape[0]).reshape(1, -1, *[1] * (len(shape) - 1))  # (1, C, 1, ...)
        shift = (torch.tensor(labels, dtype=torch.float32) - 1).reshape(-1, *[1] * len(shape))  # (N, 1, ...)
        tensors[name] = torch.randn(len(videos), *shape, generator=random) * scale + shift + 0.3
    rows = [{"video": video, "clip": 0, "first_frame": 0, "num_frames": config.input_size[0], "fps": 8.0,
             "video_frames": config.input_size[0], "video_clips": 1, "height": 64, "width": 64} for video in videos]
    (root / SHARD_DIR).mkdir(parents=True)
    write_shard(root / SHARD_DIR / shard_name(0, 0), tensors, rows, dataset=identity_digest(identity))
    columns = {name: np.asarray([row[name] for row in rows], dtype=np.float64 if name == "fps" else np.int64)
               for name in INDEX_COLUMNS if name not in ("video", "shard", "row")}
    columns.update(video=np.arange(len(videos)), shard=np.zeros(len(videos), np.int64), row=np.arange(len(videos)))
    write_index(root, IndexColumns(videos, [shard_name(0, 0)], {name: columns[name] for name in INDEX_COLUMNS}))
    write_failures(root, {})
    labelled = ClassLabels.from_names("folders", {video: video.split("/")[0] for video in videos})
    write_manifest(root, {"identity": identity, "status": "complete", "version": "test", "sources": len(videos),
                          "clips": len(videos), "videos": len(videos), "failures": 0, "labels": labelled.to_manifest()})
    assert set(tensors) == set(LATENT_NAMES)
    return root


def latent_training_config(path: Path, target: str, model_params: dict, data_params: dict, max_steps: int = 2) -> Path:
    """A train.py config of the latent model ``target`` (the generator's or the world model's
    Lightning module) on ``LatentDataModule(**data_params)``: ``max_steps`` updates on the CPU, a
    checkpoint every update and a sample video every second one."""
    config = OmegaConf.create({
        "model": {"target": target, "params": model_params},
        "data": {"target": "vidtwin.training.LatentDataModule", "params": {"batch_size": 12, "num_workers": 0, **data_params}},
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


def generator_config(path: Path, dataset: Path, ckpt: Path | None, max_steps: int = 2, **params) -> Path:
    """A train.py config of the tiny generator on ``dataset``, decoding samples with ``ckpt``."""
    model_params = {
        "dataset": "${data.params.root}", "generator": {"size": "tiny", "hidden_size": 32, "depth": 1, "num_heads": 2},
        "autoencoder": {"config": str(TINY_CONFIG), "ckpt": str(ckpt)} if ckpt else None,
        "learning_rate": 3e-3, "warmup_steps": 2, "ema_decay": 0.9, "sample_classes": 2, "sample_steps": 2, **params,
    }
    return latent_training_config(path, "vidtwin.training.GeneratorLightningModule", model_params, {"root": str(dataset)},
                                  max_steps)
