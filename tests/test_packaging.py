"""Packaging: the dependency split of pyproject.toml matches the imports, a core install encodes and
decodes without the optional stacks, a missing extra is named, and every tool runs with `python -m`."""

import ast
import json
import subprocess
import sys

import pytest

from vidtwin.optional import MissingOptionalDependency, require

from conftest import REPO, TINY_CONFIG

# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"pytorch_lightning": "pytorch-lightning", "vector_quantize_pytorch": "vector-quantize-pytorch", "skvideo": "scikit-video", "yaml": "pyyaml", "PIL": "pillow"}


def pyproject() -> dict:
    """pyproject.toml, parsed; the tests that read it skip on Python 3.10, which has no tomllib."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement_names(requirements):
    names = set()
    for requirement in requirements:
        name = requirement.split(";")[0].split("[")[0]
        for stop in "<>=!~ ":
            name = name.split(stop)[0]
        names.add(name.strip().lower())
    return names


def _module_level_imports(path):
    """Top-level packages imported when `path` is imported (function-level imports excluded)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_dependencies_cover_the_imports_of_everything_but_training():
    core = _requirement_names(pyproject()["project"]["dependencies"])
    optional_stacks = {"pytorch-lightning", "tensorboard", "matplotlib", "scikit-video", "scikit-learn", "lpips"}
    assert not core & optional_stacks, "the core install must not pull the training, plotting or demo stacks"
    stdlib = set(sys.stdlib_module_names)
    # Lightning-only modules: the training datamodule and encode-dataset (the `dataset` extra).
    # Modules of an extra other than the training stack: the Lightning-only training datamodule and
    # encode-dataset (the `dataset` extra), and the diffusers model class (the `diffusers` extra).
    training_only = {REPO / "vidtwin" / "data" / "datamodule.py", REPO / "vidtwin" / "inference" / "encode_dataset.py",
                     REPO / "vidtwin" / "diffusers" / "autoencoder_vidtwin.py"}
    for path in (REPO / "vidtwin").rglob("*.py"):
        if "training" in path.parts or path in training_only:
            continue
        for module in _module_level_imports(path) - stdlib - {"vidtwin", "__future__"}:
            assert DISTRIBUTIONS.get(module, module).lower() in core, f"{path.name} imports {module}"


def test_extras_name_the_optional_stacks_and_test_pulls_them_all():
    extras = pyproject()["project"]["optional-dependencies"]
    assert "pytorch-lightning" in _requirement_names(extras["train"])
    assert "tensorboard" in _requirement_names(extras["train"])
    assert _requirement_names(extras["dataset"]) == {"pytorch-lightning"}
    assert _requirement_names(extras["demo"]) == {"scikit-video", "scikit-learn"}
    assert _requirement_names(extras["plots"]) == {"matplotlib"}
    assert _requirement_names(extras["diffusers"]) == {"diffusers"}
    assert any(r.startswith("vidtwin[") and all(x in r for x in ("train", "demo", "plots")) for r in extras["test"])
    assert not (REPO / "setup.py").exists()
    assert (REPO / "vidtwin" / "py.typed").is_file()


def test_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingOptionalDependency, match=r"--plots needs the matplotlib package.*vidtwin\[plots\]"):
        require("matplotlib", "plots", "--plots")


CORE_ONLY = """
import sys

# Behave as if the optional stacks were not installed: importing them fails, find_spec finds nothing.
# (torchvision stays: timm, a core dependency, imports it.)
for name in ("pytorch_lightning", "lightning", "tensorboard", "matplotlib", "skvideo", "lpips"):
    sys.modules[name] = None
import torch
from vidtwin import load_model
import vidtwin.cli.reconstruct, vidtwin.cli.encode, vidtwin.cli.decode, vidtwin.cli.cross  # the core commands
model = load_model(sys.argv[1])
video = torch.rand(1, 3, *model.input_size) * 2 - 1
with torch.no_grad():
    assert model.decode(model.encode(video)).shape == video.shape
try:
    import vidtwin.training
except ImportError as error:
    assert "pip install 'vidtwin[train]'" in str(error), error
else:
    raise AssertionError("training imported without pytorch_lightning")
print("ok")
"""


def test_a_core_install_encodes_and_decodes_without_the_optional_stacks():
    result = subprocess.run([sys.executable, "-c", CORE_ONLY, str(TINY_CONFIG)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def _commands() -> list[list[str]]:
    """Every subcommand of the `vidtwin` command, groups expanded (``["demo", "digits"]``)."""
    from vidtwin.cli import COMMANDS

    commands = []
    for name, (target, _) in COMMANDS.items():
        commands += [[name, sub] for sub in target] if isinstance(target, dict) else [[name]]
    return commands


# One interpreter asks every subcommand for its help, instead of one interpreter per command paying
# the same seconds of imports.
EVERY_HELP = """
import contextlib, io, json, sys
from vidtwin.cli import main
results = {}
for words in json.loads(sys.argv[1]):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            main([*words, "--help"])
        code = 0
    except SystemExit as done:
        code = done.code or 0
    results[" ".join(words)] = [code, out.getvalue()[:len("usage: vidtwin " + " ".join(words))]]
print(json.dumps(results))
"""


def test_every_command_gives_its_help():
    commands = _commands()
    assert len(commands) >= 17 and ["play"] in commands and ["demo", "check-world"] in commands
    result = subprocess.run([sys.executable, "-c", EVERY_HELP, json.dumps(commands)], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {" ".join(words): [0, "usage: vidtwin " + " ".join(words)] for words in commands}
    assert outcomes == expected, result.stderr


def test_scripts_hold_developer_tools_only():
    """User tools are `vidtwin` subcommands; scripts/ keeps benchmarks and GPU checks, and nothing imports it."""
    names = sorted(path.stem for path in (REPO / "scripts").glob("*.py"))
    assert all(name.startswith(("bench", "gpu", "fetch")) for name in names), names
    assert not (REPO / "scripts" / "__init__.py").exists()
    for path in [*(REPO / "vidtwin").rglob("*.py"), *(REPO / "tests").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] != "scripts", f"{path} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] != "scripts" for alias in node.names), f"{path} imports scripts"
