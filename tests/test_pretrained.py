"""The one save/load stack of the three models (vidtwin.pretrained): run folders by the rule of
--resume, format checks, safe unpickling, the world model's own files and errors, and the cards."""

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

from vidtwin import VidTwin, load_model, pretrained
from vidtwin.errors import UserError
from vidtwin.generation import (
    GeneratorConfig, LatentGenerator, WorldModel, WorldModelConfig, WorldModelConfigError, load_generator,
    load_world_model,
)
from vidtwin.state_dict_io import CheckpointError

from conftest import DATA, REPO

LEGACY = DATA / "legacy" / "640498a"  # train.py runs of each model (tests/data/README.md)


def tiny_world() -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig.from_preset("tiny", hidden_size=32, depth=1, num_heads=2, actions=["L", "R"]))


def run_with_a_torn_newest_checkpoint(source: Path, tmp_path: Path) -> Path:
    """A copy of a run whose last.ckpt was cut by a kill, beside the complete step_00000002.ckpt."""
    run = shutil.copytree(source, tmp_path / source.name)
    good = run / "checkpoints" / "step_00000002.ckpt"
    (run / "checkpoints" / "last.ckpt").rename(good)
    (run / "checkpoints" / "last.ckpt").write_bytes(good.read_bytes()[:4096])
    return run


# ---------------------------------------------------------------------------- run folders
def test_resume_and_every_loader_share_one_newest_checkpoint_rule():
    from vidtwin.training import run_dir

    assert run_dir.newest_valid_checkpoint is pretrained.newest_valid_checkpoint


@pytest.mark.parametrize("run, load", [
    ("autoencoder_run", lambda run: VidTwin.from_pretrained(run)),
    ("autoencoder_run", lambda run: load_model(None, run)),
    ("generator_run", load_generator),  # what `vidtwin generate --generator RUN` calls
    ("world_run", load_world_model),  # what `vidtwin play RUN` calls
])
def test_a_run_whose_newest_checkpoint_is_torn_loads_the_one_resume_takes(tmp_path, caplog, run, load):
    from vidtwin.training.run_dir import resolve_resume

    run = run_with_a_torn_newest_checkpoint(LEGACY / run, tmp_path)
    good = run / "checkpoints" / "step_00000002.ckpt"
    assert resolve_resume(str(run)).checkpoint == good
    expected = type(load(LEGACY / run.name))
    with caplog.at_level("WARNING", logger="vidtwin"):
        model = load(run)
    assert isinstance(model, expected) and "skipping" in caplog.text and "last.ckpt" in caplog.text
    reference = load(LEGACY / run.name)
    assert all(torch.equal(value, reference.state_dict()[key]) for key, value in model.state_dict().items())


def test_a_run_without_a_readable_checkpoint_is_one_line(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {}\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 torn")
    for load in (VidTwin.from_pretrained, LatentGenerator.from_pretrained, load_world_model):
        with pytest.raises(CheckpointError, match="none of its 1 .ckpt files is readable") as error:
            load(run)
        assert "\n" not in str(error.value) and isinstance(error.value, UserError)


def test_an_autoencoder_checkpoint_outside_its_run_needs_a_config(tmp_path):
    checkpoint = shutil.copy(LEGACY / "autoencoder_run" / "checkpoints" / "last.ckpt", tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="records no model config"):
        VidTwin.from_pretrained(checkpoint)
    config = VidTwin.from_pretrained(LEGACY / "autoencoder_run").config
    assert VidTwin.from_pretrained(checkpoint, config=config).config == config
    with pytest.raises(CheckpointError, match=r"load_model\(CONFIG, REFERENCE\)"):
        VidTwin.from_pretrained(checkpoint, config="configs/tiny.yaml")


def test_a_generator_run_is_not_an_autoencoder_run():
    with pytest.raises(CheckpointError, match="no model.params.autoencoder"):
        VidTwin.from_pretrained(LEGACY / "generator_run")
    with pytest.raises(CheckpointError, match="not a checkpoint of the generator .no vidtwin_generator entry"):
        LatentGenerator.from_pretrained(LEGACY / "world_run")


# ---------------------------------------------------------------------------- folders and formats
def test_the_world_model_saves_loads_and_pushes_like_the_others(tmp_path, monkeypatch):
    world = tiny_world()
    world.autoencoder_files = {"config": "ae.yaml", "ckpt": "ae.ckpt"}
    world.save_pretrained(tmp_path / "world", repo_id="lab/world")
    assert sorted(p.name for p in (tmp_path / "world").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "world" / "README.md").read_text()
    assert 'WorldModel.from_pretrained("lab/world")' in card and "vidtwin play hf://lab/world --start" in card
    loaded = WorldModel.from_pretrained(tmp_path / "world")
    assert loaded.config == world.config and loaded.autoencoder_files == world.autoencoder_files
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in world.state_dict().items())

    uploads = []
    monkeypatch.setattr(pretrained, "upload_folder", lambda folder, repo_id, **kw: uploads.append(
        (sorted(p.name for p in Path(folder).iterdir()), repo_id, kw)) or "https://hub/commit")
    assert world.push_to_hub("lab/world", private=True) == "https://hub/commit"
    assert uploads == [(["README.md", "config.json", "model.safetensors"], "lab/world",
                        {"private": True, "commit_message": "Upload VidTwin world model"})]


@pytest.mark.parametrize("values, message", [
    ({"format": "vidtwin-world-model", "format_version": 2, "world_model": {}},
     "format_version 2; this code reads versions up to 1"),
    ({"model_type": "bert", "architectures": ["BertModel"]}, "its format is None, not 'vidtwin-world-model'"),
    ({"format": "vidtwin-generator", "format_version": 1, "generator": {}}, "not a VidTwin world model config"),
    ({"format": "vidtwin-world-model", "format_version": 1, "world_model": {"depth": 1, "colour": 3}},
     "holds no valid world model config .unknown world model setting.s.: colour"),
])
def test_a_folder_of_another_format_or_a_newer_version_is_refused(tmp_path, values, message):
    tiny_world().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match=message):
        WorldModel.from_pretrained(tmp_path)


def test_world_settings_raise_the_world_models_own_error():
    from vidtwin.generation import GeneratorConfigError, LatentModelConfigError

    with pytest.raises(WorldModelConfigError, match="unknown world model setting"):
        WorldModelConfig.from_dict({"colour": 3})
    with pytest.raises(WorldModelConfigError) as error:
        WorldModelConfig(hidden_size=30, num_heads=4)
    assert not isinstance(error.value, GeneratorConfigError) and isinstance(error.value, LatentModelConfigError)
    with pytest.raises(GeneratorConfigError):
        GeneratorConfig(hidden_size=30, num_heads=4)


def test_a_checkpoint_with_python_objects_loads_only_with_the_opt_in(tmp_path):
    world = tiny_world()
    checkpoint = {"state_dict": {f"world.{k}": v for k, v in world.state_dict().items()},
                  "vidtwin_world_model": {"config": world.config.to_dict(), "autoencoder": None},
                  "hyper_parameters": {"path": Path("data")}}  # a Python object: unpickling runs code
    torch.save(checkpoint, tmp_path / "world.ckpt")
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle=True"):
        WorldModel.from_pretrained(tmp_path / "world.ckpt")
    loaded = WorldModel.from_pretrained(tmp_path / "world.ckpt", allow_unsafe_pickle=True)
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in world.state_dict().items())


def test_model_cards_name_the_installed_command(tmp_path):
    generator = LatentGenerator(GeneratorConfig())
    assert "vidtwin generate --generator hf://lab/gen --all-classes" in generator.model_card("lab/gen")
    autoencoder_card = VidTwin.from_pretrained(LEGACY / "autoencoder_pretrained").model_card("lab/ae")
    assert "vidtwin reconstruct --ckpt hf://lab/ae --input clip.mp4" in autoencoder_card
    assert "python inference.py" not in autoencoder_card


def test_no_model_module_imports_a_loader():
    loaders = {"vidtwin.checkpoint", "vidtwin.generation.files", "vidtwin.generation.world_files"}
    for module in ("models/vidtwin_ae.py", "generation/generator.py", "generation/world.py", "pretrained.py"):
        tree = ast.parse((REPO / "vidtwin" / module).read_text())
        imported = set()
        for node in ast.walk(tree):  # function-level imports too
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                package = ("vidtwin." + module.rsplit("/", 1)[0].replace("/", ".")) if "/" in module else "vidtwin"
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                imported |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        assert not imported & loaders, module
