"""Hugging Face Hub sharing: repos in this project's format, revisions, the official-file fallback,
and push_to_hub with its model card. No network: a Hub cache is laid out as downloads leave it
and read with HF_HUB_OFFLINE=1; uploads go to a patched HfApi."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from vidtwin.hub import HubDownloadError, OFFICIAL_CHECKPOINT_FILE, parse_hub_reference

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, REPO


def _cache_snapshot(cache, repo_id, revision_name, commit, files):
    """Put `files` ({path in repo: source path}) into a huggingface_hub cache as snapshot `commit`,
    with the branch or tag `revision_name` pointing at it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, source in files.items():
        target = repo / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision_name).write_text(commit)


def test_references_parse_owner_name_revision_and_file():
    assert parse_hub_reference("hf://owner/name") == ("owner/name", None, None)
    assert parse_hub_reference("hf://owner/name@v1.0") == ("owner/name", "v1.0", None)
    assert parse_hub_reference("hf://owner/name@abc/dir/w.ckpt") == ("owner/name", "abc", "dir/w.ckpt")
    assert parse_hub_reference("owner/name@main") == ("owner/name", "main", None)
    for bad in ("hf://owner", "hf://owner/name@", "hf:///name"):
        with pytest.raises(HubDownloadError, match="hf://owner/name"):
            parse_hub_reference(bad)


HUB_SCRIPT = """
import sys, torch
from vidtwin import VidTwin, load_model
from vidtwin.hub import HubDownloadError
official_config, official_ckpt = sys.argv[1], sys.argv[2]
reference = load_model(official_config, official_ckpt)

# A repo in this project's format loads by its id, with its own config.json, strictly.
for name in ("lab/finetuned", "hf://lab/finetuned"):
    model = VidTwin.from_pretrained(name)
    assert model.config == reference.config and not model.training
    assert torch.equal(model.conv_in.weight, reference.conv_in.weight + 1), name
assert torch.equal(load_model(None, "hf://lab/finetuned").conv_in.weight, reference.conv_in.weight + 1)

# A pinned revision takes that snapshot; a file path names one file of it.
old = VidTwin.from_pretrained("lab/finetuned@v1")
assert torch.equal(old.conv_in.weight, reference.conv_in.weight)
assert torch.equal(VidTwin.from_pretrained("lab/finetuned", revision="v1").conv_in.weight, reference.conv_in.weight)
pinned = load_model(official_config, "hf://lab/finetuned@v1/model.safetensors")
assert torch.equal(pinned.conv_in.weight, reference.conv_in.weight)

# A repo with only the official Lightning file falls back to it (config given or the published one).
official = VidTwin.from_pretrained("microsoft/vidtwin", config=reference.config)
assert torch.equal(official.conv_in.weight, reference.conv_in.weight)
assert torch.equal(load_model(official_config, "hf://microsoft/vidtwin").conv_in.weight, reference.conv_in.weight)

# Nothing cached for that revision: one clear error naming both formats.
try:
    VidTwin.from_pretrained("lab/finetuned@v2")
except HubDownloadError as error:
    message = str(error)
    assert "lab/finetuned at revision v2" in message and "config.json + model.safetensors" in message, message
    assert "offline mode is on" in message and "vidtwin_structure_7_7_8_dynamics_7_8.ckpt" in message, message
    assert "check the network" not in message.lower(), message  # offline, the network is not the cause
else:
    raise AssertionError("an uncached revision loaded")
print("ok")
"""


def test_repo_ids_revisions_and_official_fallback_from_an_offline_cache(official_model, tmp_path):
    original, finetuned = tmp_path / "original", tmp_path / "finetuned"
    official_model.save_pretrained(original)
    with torch.no_grad():
        official_model.conv_in.weight += 1  # the "fine-tuned" model differs in one tensor
    official_model.save_pretrained(finetuned)

    cache = tmp_path / "hub"
    files = ("config.json", "model.safetensors")
    _cache_snapshot(cache, "lab/finetuned", "main", "1" * 40, {f: finetuned / f for f in files})
    _cache_snapshot(cache, "lab/finetuned", "v1", "2" * 40, {f: original / f for f in files})
    _cache_snapshot(cache, "microsoft/vidtwin", "main", "3" * 40, {OFFICIAL_CHECKPOINT_FILE: OFFICIAL_CKPT})
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", HUB_SCRIPT, str(OFFICIAL_CONFIG), str(OFFICIAL_CKPT)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_push_to_hub_uploads_weights_config_and_a_model_card(official_model, monkeypatch):
    import huggingface_hub

    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        uploaded["created"] = repo_id
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, **kwargs):
        # The folder is temporary: read what would be uploaded before it goes away.
        uploaded.update(repo_id=repo_id, kwargs=kwargs,
                        files={p.name: p.read_bytes() for p in sorted(folder_path.iterdir())})
        return "https://huggingface.co/lab/tiny/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = official_model.push_to_hub("lab/tiny", commit_message="tiny model", private=True)

    assert url.endswith("/commit/0") and uploaded["created"] == uploaded["repo_id"] == "lab/tiny"
    assert uploaded["kwargs"]["commit_message"] == "tiny model"
    assert sorted(uploaded["files"]) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads(uploaded["files"]["config.json"])
    assert config["format"] == "vidtwin" and config["autoencoder"] == official_model.config.to_dict()

    card = uploaded["files"]["README.md"].decode()
    config_values = official_model.config
    shapes = config_values.latent_shapes()
    total = sum(torch.Size(shape).numel() for shape in shapes.values())
    inputs = config_values.in_channels * torch.Size(config_values.input_size).numel()
    assert "library_name: vidtwin" in card
    assert 'VidTwin.from_pretrained("lab/tiny")' in card and "--ckpt hf://lab/tiny" in card
    for name, shape in shapes.items():
        assert f"| {name} | {' x '.join(map(str, shape))} |" in card
    assert f"{100 * total / inputs:.3f}%" in card
    assert json.dumps(config_values.to_dict(), indent=2) in card
