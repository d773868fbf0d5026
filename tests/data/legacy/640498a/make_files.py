"""Writes small files with the code of 640498a (run from /tmp/legacy640 with PYTHONPATH=/tmp/legacy640)."""
import json, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

sys.path.insert(0, "/tmp/legacy640/tests")
from _training_utils import MICRO_MODEL  # the micro VidTwin of 640498a's training tests

from vidtwin.config import instantiate_from_config, load_config
from vidtwin.checkpoint import load_model
from vidtwin.data.video_io import write_video

OUT = Path(sys.argv[1])
shutil.rmtree(OUT, ignore_errors=True)
OUT.mkdir(parents=True)
references = {}


def perturb(module, scale, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def write_run(run, config, module, name="last.ckpt"):
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, run / "config.yaml")
    checkpoint = {"state_dict": {k: v.clone() for k, v in module.state_dict().items()}}
    module.on_save_checkpoint(checkpoint)  # what train.py's checkpoints carry besides Lightning's own entries
    torch.save(checkpoint, run / "checkpoints" / name)


# ---------------------------------------------------------------- autoencoder: FSQ micro model (tokens for the world model)
torch.manual_seed(0)
overrides = MICRO_MODEL + [
    "model.params.autoencoder.regularizer=fsq", "model.params.autoencoder.structure_levels=[5,3,3]",
    "model.params.autoencoder.dynamics_levels=[5,3]", "model.params.loss.params.regularization_weights={aux_loss: 1.0}",
    "model.params.ema_decay=0.9", "data.params.demo=true", "model.params.loss.params.disc_num_layers=1",
]
config = load_config("configs/tiny.yaml", overrides)
module = instantiate_from_config(config.model)
perturb(module.autoencoder, 0.01, 1)  # the EMA (a copy at start) and the trained weights differ
module.train_step = 3
ae_run = OUT / "autoencoder_run"
write_run(ae_run, config, module)
ae_ckpt = ae_run / "checkpoints" / "last.ckpt"
ema_model = load_model(str(ae_run / "config.yaml"), str(ae_ckpt))
raw_model = load_model(str(ae_run / "config.yaml"), str(ae_ckpt), ema=False)
raw_model.save_pretrained(OUT / "autoencoder_pretrained")
video = (torch.rand(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1)
references["autoencoder/input"] = video
with torch.no_grad():
    for tag, model in (("ema", ema_model), ("raw", raw_model)):
        latents = model.encode(video)
        references[f"autoencoder/{tag}/structure"] = latents.structure
        references[f"autoencoder/{tag}/dynamics_x"] = latents.dynamics_x
        references[f"autoencoder/{tag}/dynamics_y"] = latents.dynamics_y
        references[f"autoencoder/{tag}/reconstruction"] = model.decode(latents)
        tokens = model.tokenize(video) if hasattr(model, "tokenize") else None
        if tokens is not None:
            references[f"autoencoder/{tag}/structure_tokens"] = tokens.structure

# ---------------------------------------------------------------- latent dataset (encode-dataset of 640498a)
frames = (np.random.default_rng(0).random((8, 32, 32, 3)) * 255).astype(np.uint8)
videos = OUT / "_videos"
write_video(videos / "left" / "a.mp4", frames, fps=8)
write_video(videos / "right" / "b.mp4", frames[::-1].copy(), fps=8)
subprocess.run([sys.executable, "inference.py", "encode-dataset", "--config", str(ae_run / "config.yaml"),
                "--ckpt", str(ae_ckpt), "--input", str(videos), "--output", str(OUT / "latent_dataset"),
                "--labels-from-folders", "--dtype", "fp32", "--quiet"], check=True)
shutil.rmtree(videos)

# ---------------------------------------------------------------- generator: a run of GeneratorLightningModule, and its save_pretrained folder
from vidtwin.generation import load_generator
from vidtwin.training.generator_module import GeneratorLightningModule

torch.manual_seed(1)
gen_config = OmegaConf.create({"model": {"target": "vidtwin.training.GeneratorLightningModule", "params": {
    "dataset": str(OUT / "latent_dataset"), "generator": {"size": "tiny", "hidden_size": 32, "depth": 1, "num_heads": 2},
    "conditional": True, "normalization": "none", "ema_decay": 0.9,
    "autoencoder": {"config": str(ae_run / "config.yaml"), "ckpt": str(ae_ckpt)}}}})
gen_module = instantiate_from_config(gen_config.model)
perturb(gen_module.generator, 0.05, 2)  # adaLN-Zero starts at zero: give every weight a value
gen_module.ema.num_updates = 0
from vidtwin.training.ema import EMA
gen_module.ema = EMA(gen_module.generator, 0.9)
perturb(gen_module.generator, 0.01, 3)
gen_module.train_step = 2
gen_run = OUT / "generator_run"
write_run(gen_run, gen_config, gen_module)
generator = load_generator(gen_run)  # EMA weights
generator.save_pretrained(OUT / "generator_pretrained")
for tag, model in (("ema", generator), ("raw", None)):
    if model is None:
        from vidtwin.generation.files import load_training_checkpoint
        model = load_training_checkpoint(gen_run / "checkpoints" / "last.ckpt", ema=False)
    sample = model.sample([0, 1], steps=3, guidance=2.0, seed=7, progress=False)
    for name, value in sample.items():
        references[f"generator/{tag}/{name}"] = value

# ---------------------------------------------------------------- world model
from vidtwin.generation import WorldModel, WorldModelConfig, save_world_model, load_world_model
from vidtwin.generation.world_files import WORLD_CHECKPOINT_KEY

torch.manual_seed(2)
token_shapes = ema_model.config.token_shapes()
world_config = WorldModelConfig.from_preset("tiny", token_shapes=token_shapes, structure_levels=[5, 3, 3],
                                            dynamics_levels=[5, 3], hidden_size=32, depth=1, num_heads=2,
                                            context_clips=1, start_window=3, actions=["L", "R"])
world = WorldModel(world_config)
perturb(world, 0.05, 4)
world.autoencoder_files = {"config": str(ae_run / "config.yaml"), "ckpt": str(ae_ckpt)}
save_world_model(world, OUT / "world_pretrained")
ema_world = {k: v + 0.01 for k, v in world.state_dict().items()}
world_run = OUT / "world_run"
(world_run / "checkpoints").mkdir(parents=True)
OmegaConf.save(OmegaConf.create({"model": {"target": "vidtwin.training.WorldLightningModule",
                                           "params": {"world": {"size": "tiny"}}}}), world_run / "config.yaml")
# The entries WorldLightningModule.on_save_checkpoint writes (its dataset needs actions: built by hand here).
torch.save({"state_dict": {f"world.{k}": v for k, v in world.state_dict().items()}, "ema_state_dict": ema_world,
            "vidtwin_training": {"train_step": 2, "lightning_steps_per_update": 1, "noise_seed": 0,
                                 "ema_num_updates": 2, "ema_decay": 0.9},
            WORLD_CHECKPOINT_KEY: {"config": world_config.to_dict(), "autoencoder": world.autoencoder_files}},
           world_run / "checkpoints" / "last.ckpt")
g = torch.Generator().manual_seed(9)
start = {name: torch.randint(0, size, (1, 1, *shape), generator=g)
         for (name, shape), size in zip(token_shapes.items(), (45, 15, 15))}
for name, value in start.items():
    references[f"world/start/{name}"] = value
for tag, model in (("pretrained", load_world_model(OUT / "world_pretrained")), ("ema", load_world_model(world_run))):
    clips = model.rollout(start, actions=[[0, 1, 1]], seed=11)
    for name, value in clips.items():
        references[f"world/{tag}/{name}"] = value

# Paths recorded inside the files are relative to the fixture folder.
save_file({k: v.contiguous() for k, v in references.items()}, str(OUT / "reference_outputs.safetensors"))
print("\n".join(sorted(references)))

# ---------------------------------------------------------------- the latent dataset as this code reads it
from vidtwin.latents.dataset import LatentDataset
from safetensors.torch import load_file

references = load_file(str(OUT / "reference_outputs.safetensors"))
dataset = LatentDataset(OUT / "latent_dataset")
for index in range(len(dataset)):
    item = dataset[index]
    for name in ("structure", "dynamics_x", "dynamics_y"):
        references[f"latent_dataset/{index}/{name}"] = item[name]
    references[f"latent_dataset/{index}/label"] = torch.tensor(item["label"])
sequences = LatentDataset(OUT / "latent_dataset", sequence_length=2)
references["latent_dataset/windows"] = torch.tensor(len(sequences))
save_file({k: v.contiguous() for k, v in references.items()}, str(OUT / "reference_outputs.safetensors"))
