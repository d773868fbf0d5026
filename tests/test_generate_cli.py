"""`inference.py generate`: a generator trained by train.py writes <class>_<index>.mp4 files of the
autoencoder's clip size and latents that `decode` reads, the same seed gives the same videos, and
it loads from a run directory, a checkpoint and a save_pretrained folder alike."""

import pytest
import torch
from safetensors.torch import load_file

from vidtwin import load_model
from vidtwin.data.video_io import probe_video
from vidtwin.latents.latent_file import weights_fingerprint
from vidtwin.generation import load_generator
from vidtwin.cli import main as inference_main
from vidtwin.cli import train_main

from conftest import TINY_CONFIG, TINY_FRAMES
from generation_helpers import CLASSES, generator_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


@pytest.fixture(scope="module")
def run(tmp_path_factory, labelled_latents):
    """A generator trained for 2 updates through train.py, recording the tiny autoencoder."""
    root = tmp_path_factory.mktemp("generate")
    # The shared dataset (conftest.py) and, under this run's folder where the tests look for it, its autoencoder.
    (root / "tiny.pt").symlink_to(labelled_latents / "tiny.pt")
    config = generator_config(root / "gen.yaml", labelled_latents / "latents", root / "tiny.pt")
    assert train_main(["--logdir", str(root / "logs"), "--name", "gen", "--base", str(config),
                       "lightning.callbacks.samples=null"]) == 0
    return root


def generate(*argv) -> int:
    return inference_main(["generate", "--steps", "3", "--quiet", "--device", "cpu", *map(str, argv)])


def test_generate_writes_videos_and_decodable_latents_for_every_class(run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert generate("--generator", run / "logs" / "gen", "--all-classes", "--num", "2", "--save-latents", "--output", out) == 0
    names = sorted(path.name for path in out.iterdir())
    assert names == sorted(f"{name}_{index:03d}{suffix}" for name in CLASSES for index in range(2)
                           for suffix in (".mp4", ".safetensors"))
    info = probe_video(out / "up_001.mp4")
    assert (info.num_frames, info.height, info.width) == (TINY_FRAMES, 64, 64)  # the tiny autoencoder's clip
    assert "wrote 6 videos and their latents" in capsys.readouterr().out
    decoded = tmp_path / "decoded.mp4"
    assert inference_main(["decode", "--latents", str(out / "up_001.safetensors"), "--output", str(decoded),
                           "--config", str(TINY_CONFIG), "--ckpt", str(run / "tiny.pt"), "--device", "cpu", "--quiet"]) == 0
    assert probe_video(decoded).num_frames == TINY_FRAMES

    # The same seed gives the same latents, for a class asked alone too; another seed others.
    again = tmp_path / "again"
    assert generate("--generator", run / "logs" / "gen", "--class", "up", "--num", "2", "--save-latents", "--output", again) == 0
    for index in range(2):
        first, second = load_file(out / f"up_{index:03d}.safetensors"), load_file(again / f"up_{index:03d}.safetensors")
        assert all(torch.equal(first[key], second[key]) for key in first)
    other = tmp_path / "other"
    assert generate("--generator", run / "logs" / "gen", "--class", "1", "--num", "1", "--seed", "7", "--save-latents",
                    "--output", other) == 0  # class 1 is "up", by index
    assert not torch.equal(load_file(other / "up_000.safetensors")["structure"], first["structure"])

    # An existing output needs --overwrite, and nothing is touched without it.
    before = (again / "up_000.mp4").read_bytes()
    assert generate("--generator", run / "logs" / "gen", "--class", "up", "--num", "1", "--output", again, "--seed", "3") == 2
    assert "already exists" in capsys.readouterr().err and (again / "up_000.mp4").read_bytes() == before


def test_the_generator_loads_from_its_run_checkpoint_and_save_pretrained_folder(run, tmp_path):
    from_run = load_generator(run / "logs" / "gen")
    from_checkpoint = load_generator(run / "logs" / "gen" / "checkpoints" / "last.ckpt")
    recorded = from_run.autoencoder_files
    assert {key: recorded[key] for key in ("config", "ckpt")} == {"config": str(TINY_CONFIG), "ckpt": str(run / "tiny.pt")}
    # The weights that encoded the training data, which any decoding autoencoder must have.
    assert recorded["weights_fingerprint"] == weights_fingerprint(load_model(TINY_CONFIG, run / "tiny.pt"))
    from_run.save_pretrained(tmp_path / "exported")
    from_folder = load_generator(tmp_path / "exported")
    assert from_folder.autoencoder_files == from_run.autoencoder_files  # recorded in config.json
    for model in (from_checkpoint, from_folder):
        for key, value in from_run.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    # The run's EMA weights are what generate uses, not the last trained weights.
    trained = torch.load(run / "logs" / "gen" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not torch.equal(trained["generator.tokens.inputs.0.weight"], from_run.state_dict()["tokens.inputs.0.weight"])


@pytest.mark.parametrize("argv,expected", [
    (["--class", "sideways"], "unknown class 'sideways'; known classes: down, up, zero"),
    (["--class", "up", "--all-classes"], "give one of --class, --all-classes and --unconditional"),
    ([], "say what to generate"),
    (["--all-classes", "--num", "0"], "--num must be >= 1"),
    (["--all-classes", "--config", "OTHER", "--ckpt", "OTHER_CKPT"], "the generator makes latents the autoencoder cannot decode"),
])
def test_bad_requests_are_one_line(run, tmp_path, capsys, argv, expected):
    other = tmp_path / "other.yaml"
    other.write_text(TINY_CONFIG.read_text().replace(f"input_size: [{TINY_FRAMES}, 64, 64]", "input_size: [16, 64, 64]"))
    torch.save(load_model(other).state_dict(), tmp_path / "other.pt")
    argv = [str(other) if a == "OTHER" else str(tmp_path / "other.pt") if a == "OTHER_CKPT" else a for a in argv]
    assert generate("--generator", run / "logs" / "gen", "--output", tmp_path / "out", *argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidtwin generate: error: ") and expected in lines[0], lines
    assert not (tmp_path / "out").exists()
