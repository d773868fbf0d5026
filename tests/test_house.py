"""The package's structure: every module imports, packages form no import cycle, importing light
parts stays light, the regularizers share one interface, and files written before that interface
still read."""

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from collections import defaultdict

import pytest
import torch

import vidtwin
from vidtwin.models import config as model_config
from vidtwin.models.regularizers import REGULARIZERS, LatentRegularizer

from conftest import DATA, OFFICIAL_CKPT, OFFICIAL_CONFIG, REPO

LEGACY = DATA / "legacy"  # written by the code of f10a1ce, before the regularizer interface
PACKAGE_ROOT = REPO / "vidtwin"

# The one dependency against the layering, on purpose: VidTwin.from_pretrained / save_pretrained /
# push_to_hub are the familiar entry points of vidtwin.checkpoint, which builds VidTwin; they import it
# when called, never when vidtwin.models is imported.
CALL_TIME_IMPORTS = {("vidtwin.models", "vidtwin.checkpoint")}


def _unit(module: str) -> str:
    """The unit of layering of a module: its subpackage (vidtwin.models) or top-level module (vidtwin.hub)."""
    return ".".join(module.split(".")[:2])


def _imports(path, module: str, package: str):
    """(imported vidtwin module, at import time?) for each import statement of a source file."""
    tree = ast.parse(path.read_text())
    at_import_time = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [base]
        else:
            continue
        for name in names:
            if name.startswith("vidtwin."):
                yield name, id(node) in at_import_time


def _dependencies():
    """unit -> {unit it imports: [(module, imported, at import time)]}, over every source file."""
    edges = defaultdict(lambda: defaultdict(list))
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rsplit(".", 1)[0]
        for imported, at_import_time in _imports(path, module, package):
            if _unit(imported) != _unit(module):
                edges[_unit(module)][_unit(imported)].append((module, imported, at_import_time))
    return edges


def _find_cycle(edges, skip=frozenset()):
    """A list of units that import each other in a circle, or None."""
    state = {}

    def visit(unit, trail):
        state[unit] = "open"
        for target in edges.get(unit, {}):
            if (unit, target) in skip:
                continue
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target] if target in trail else [unit, target]
            if target not in state:
                found = visit(target, trail + [target])
                if found:
                    return found
        state[unit] = "done"
        return None

    for unit in list(edges):
        if unit not in state:
            found = visit(unit, [unit])
            if found:
                return found
    return None


def test_every_module_of_the_package_imports():
    names = [info.name for info in pkgutil.walk_packages(vidtwin.__path__, "vidtwin.")]
    assert len(names) > 40
    for name in names:
        importlib.import_module(name)


def test_packages_import_each_other_in_no_cycle():
    edges = _dependencies()
    assert _find_cycle(edges, skip=CALL_TIME_IMPORTS) is None
    for source, target in CALL_TIME_IMPORTS:
        assert all(not at_import_time for _, _, at_import_time in edges[source][target]), (source, target)
    # the check can fail: a cycle made on purpose is found
    edges["vidtwin.latents"]["vidtwin.inference"].append(("vidtwin.latents.x", "vidtwin.inference.y", True))
    assert _find_cycle(edges, skip=CALL_TIME_IMPORTS) is not None


def test_layers_below_the_models_import_no_model_code():
    edges = _dependencies()
    for low in ("vidtwin.errors", "vidtwin.atomic_io", "vidtwin.hub", "vidtwin.state_dict_io", "vidtwin.cli.convention"):
        assert "vidtwin.models" not in edges.get(low, {}), low
    for low in ("vidtwin.latents", "vidtwin.models", "vidtwin.data"):
        assert not {"vidtwin.inference", "vidtwin.training"} & set(edges.get(low, {})), low


@pytest.mark.parametrize("module, heavy", [
    ("vidtwin.data", ("transformers", "timm", "pytorch_lightning", "vector_quantize_pytorch")),
    ("vidtwin.models", ("transformers", "timm")),
    ("vidtwin.config", ("transformers", "timm", "torch")),
])
def test_light_imports_stay_light(module, heavy):
    code = f"import sys, {module}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import {module} loaded {result.stdout.strip()}"


def test_user_errors_share_one_base_class():
    from vidtwin.errors import UserError

    found = []
    for info in pkgutil.walk_packages(vidtwin.__path__, "vidtwin."):
        module = importlib.import_module(info.name)
        found += [value for name, value in vars(module).items()
                  if isinstance(value, type) and issubclass(value, UserError) and value.__module__ == info.name]
    names = {cls.__name__ for cls in found}
    assert {"ConfigError", "CheckpointError", "HubDownloadError", "InferenceError", "LatentFileError",
            "LatentDatasetError", "VideoReadError", "VideoWriteError", "MissingOptionalDependency"} <= names


# ------------------------------------------------------------------------------- regularizers
def test_every_config_regularizer_has_an_implementation():
    assert tuple(REGULARIZERS) == model_config.REGULARIZERS
    for kind, cls in REGULARIZERS.items():
        assert issubclass(cls, LatentRegularizer) and cls.kind == kind


@pytest.mark.parametrize("config_files", [["tiny.yaml"], ["tiny.yaml", "tiny_fsq.yaml"]])
def test_the_model_asks_its_regularizer(config_files):
    from vidtwin import load_model

    model = load_model([REPO / "configs" / name for name in config_files])
    regularizer = model.structure_regularizer
    video = torch.rand(2, 3, *model.config.input_size) * 2 - 1
    latents = model.encode(video)
    assert set(model.regularization_log(latents, step=0)) == set(regularizer.loss_terms(latents, model.config, 0))
    assert regularizer.head_channels(model.config.expect_ch) == model.bottle_down.out_channels
    if regularizer.has_tokens:
        assert torch.equal(model.decode(model.detokenize(model.tokenize(video))), model.decode(latents))
    else:
        with pytest.raises(ValueError, match="needs an FSQ model"):
            model.tokenize(video)


def test_a_config_field_added_later_leaves_old_identities_alone(monkeypatch):
    from vidtwin.latents import latent_file

    config = model_config.VidTwinConfig()
    before = latent_file.config_identity(config)[0]
    # A field that exists now but not in the first files: at its default it is left out of the identity.
    plain = {**config.to_dict(), "some_new_field": 3}
    monkeypatch.setitem(latent_file.LEFT_OUT_AT_DEFAULT, "some_new_field", 3)
    assert latent_file.config_identity(plain)[0] == before
    plain["some_new_field"] = 4  # away from the default it counts
    assert latent_file.config_identity(plain)[0] != before


def test_regularizer_weights_are_kept_as_autoencoder_weights():
    from vidtwin.state_dict_io import split_state_dict

    weight = torch.zeros(3)
    autoencoder, _, other = split_state_dict({"structure_regularizer.codebook": weight, "conv_in.weight": weight})
    assert set(autoencoder) == {"structure_regularizer.codebook", "conv_in.weight"} and not other


# ------------------------------------------------------------------------------- files of earlier code
@pytest.mark.parametrize("kind, config, ckpt", [
    ("kl", OFFICIAL_CONFIG, OFFICIAL_CKPT),
    ("fsq", LEGACY / "tiny_fsq_config.yaml", LEGACY / "tiny_fsq.pt"),
])
def test_latent_files_and_datasets_of_earlier_code_still_read(kind, config, ckpt):
    from vidtwin import load_model
    from vidtwin.inference import decode_latents
    from vidtwin.latents import LatentDataset, config_identity, load_latents

    model = load_model(config, ckpt)
    encoded = load_latents(LEGACY / f"{kind}_clip.safetensors")
    encoded.check_config(model.config)  # the config identity of the earlier file still matches
    encoded.check_weights(model)
    assert decode_latents(model, encoded, dtype="fp32").video.shape == (3, 16, 64, 64)  # (C, frames, H, W)
    dataset = LatentDataset(LEGACY / f"{kind}_dataset")
    assert len(dataset) == encoded.num_clips == 2
    assert dataset.manifest["identity"]["weights_fingerprint"] == encoded.extra["weights_fingerprint"]
    for clip in range(2):
        item = dataset[clip]
        for name in ("structure", "dynamics_x", "dynamics_y"):
            stored = getattr(encoded, name)[clip]  # (tiles=1, C, ...): the file's latents of this clip
            if kind == "fsq":  # the dataset gives the integer tokens of the codes in the file
                regularizer = model.structure_regularizer if name == "structure" else model.dynamics_regularizer
                assert torch.equal(item[name], regularizer.codes_to_indices(stored)[0]), name
            else:
                assert torch.allclose(item[name], stored[0], atol=1e-6), name
    manifest = json.loads((LEGACY / f"{kind}_dataset" / "manifest.json").read_text())
    assert config_identity(manifest["identity"]["model_config"])[0] == config_identity(model.config)[0]
