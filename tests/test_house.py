"""The package's structure: every module imports, neither modules nor packages form an import cycle
(an import inside a function counts), the library never imports the CLI layer, importing light
parts stays light, the regularizers share one interface, and files written before that interface
still read."""

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import vidtwin
from vidtwin.models import config as model_config
from vidtwin.models.regularizers import REGULARIZERS, LatentRegularizer

from conftest import DATA, OFFICIAL_CKPT, OFFICIAL_CONFIG, REPO

LEGACY = DATA / "legacy"  # written by the code of f10a1ce, before the regularizer interface
PACKAGE_ROOT = REPO / "vidtwin"
# The command-line layer, and the only modules outside it that may import it, where the package has
# them: the console-script entry points and `python -m vidtwin`.
CLI_PACKAGE = "cli"
CLI_IMPORTERS = ("entry_points", "__main__")


# ------------------------------------------------------------------------------- the import graph
class ImportEdge(NamedTuple):
    """One import statement of ``source`` that loads ``target``, both modules of the package."""

    source: str
    target: str
    path: Path
    line: int
    in_function: bool  # runs when the function is called, not when ``source`` is imported

    def __str__(self):
        where = " (inside a function)" if self.in_function else ""
        return f"{self.source} -> {self.target}: {self.path}:{self.line}{where}"


def package_modules(package_dir: Path) -> dict:
    """module name -> source file, for every .py file under ``package_dir`` (a package ``a.b`` is
    its ``a/b/__init__.py``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _functions_of(tree) -> set:
    """ids of the import nodes inside a function or lambda body (at any depth)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside |= {id(child) for child in ast.walk(node) if isinstance(child, (ast.Import, ast.ImportFrom))}
    return inside


def _imported_modules(node, module: str, is_package: bool, modules: dict) -> set:
    """The package's modules that one Import / ImportFrom node of ``module`` loads.

    How package nodes are treated: a package is the node of its ``__init__.py``. Python also runs
    every parent package's ``__init__`` before a submodule, but those implicit edges are left out:
    with them each submodule would depend on its package, and every ``__init__`` that re-exports its
    submodules would close a harmless cycle with each of them. What is kept is what the statement
    names: ``import a.b`` loads ``a.b``; ``from a import b`` loads the submodule ``a.b`` where one
    exists, and otherwise takes the name ``b`` from ``a/__init__.py``, an edge to ``a``. So a
    package's ``__init__`` importing its submodules is no cycle by itself, while a submodule that
    takes a name from the ``__init__`` that imports it is one (it would see a half-run ``__init__``).
    """
    def known(name):  # the longest prefix of a dotted name that is a module of the package
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    if isinstance(node, ast.Import):
        found = {known(alias.name) for alias in node.names}
    else:
        base = node.module or ""
        if node.level:  # relative: level 1 is the package that holds ``module``
            package = module if is_package else module.rpartition(".")[0]
            parts = package.split(".")
            anchor = parts[:len(parts) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        found = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base) for alias in node.names}
    return found - {"", module}


def import_graph(package_dir: Path) -> dict:
    """module -> [ImportEdge], for every Import / ImportFrom anywhere in the package's files: at
    the top, in ``if`` / ``try`` blocks, and inside functions (a function-level import closes a
    cycle as surely as a top-level one; it only waits for the first call)."""
    modules = package_modules(package_dir)
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function = _functions_of(tree)
        is_package = path.name == "__init__.py"
        shown = path.relative_to(package_dir.parent)
        graph[module] = [ImportEdge(module, target, shown, node.lineno, id(node) in in_function)
                         for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                         for target in sorted(_imported_modules(node, module, is_package, modules))]
    return graph


def import_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm), each as
    (sorted modules, the import edges between them): every cycle lies inside one of them."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for edge in graph[module]:
            if edge.target not in index:
                visit(edge.target)
                low[module] = min(low[module], low[edge.target])
            elif edge.target in on_stack:
                low[module] = min(low[module], index[edge.target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                members = set(component)
                components.append((sorted(members), [edge for source in sorted(members) for edge in graph[source]
                                                     if edge.target in members]))

    for module in graph:
        if module not in index:
            visit(module)
    return components


def cli_imports(graph: dict, package: str) -> list:
    """The import edges that load ``PACKAGE.cli`` (or a submodule) from a module outside the CLI layer."""
    cli = f"{package}.{CLI_PACKAGE}"
    allowed = {f"{package}.{name}" for name in CLI_IMPORTERS}
    in_cli = lambda module: module == cli or module.startswith(cli + ".")  # noqa: E731
    return [edge for module, edges in graph.items() if not in_cli(module) and module not in allowed
            for edge in edges if in_cli(edge.target)]


def describe_cycles(cycles) -> str:
    """One paragraph per cycle: its modules, then each import between them with its file and line."""
    return "\n".join(f"cycle of {' <-> '.join(modules)}:\n" + "\n".join(f"    {edge}" for edge in edges)
                     for modules, edges in cycles)


def _unit(module: str) -> str:
    """The unit of layering of a module: its subpackage (vidtwin.models) or top-level module (vidtwin.hub)."""
    return ".".join(module.split(".")[:2])


def _unit_dependencies(graph) -> dict:
    """unit -> {unit it imports: [ImportEdge]}, between different units."""
    edges = defaultdict(lambda: defaultdict(list))
    for module, imports in graph.items():
        for edge in imports:
            if _unit(edge.target) != _unit(module):
                edges[_unit(module)][_unit(edge.target)].append(edge)
    return edges


def _find_cycle(edges):
    """A list of units that import each other in a circle, or None."""
    state = {}

    def visit(unit, trail):
        state[unit] = "open"
        for target in edges.get(unit, {}):
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


def _reachable(graph, module) -> set:
    """Every module that importing ``module`` (and calling its functions) can load."""
    seen, todo = set(), [module]
    while todo:
        for edge in graph[todo.pop()]:
            if edge.target not in seen:
                seen.add(edge.target)
                todo.append(edge.target)
    return seen


def _library_modules() -> list:
    """Every module of the package but ``vidtwin.__main__``, which runs the command when imported."""
    return [info.name for info in pkgutil.walk_packages(vidtwin.__path__, "vidtwin.") if not info.name.endswith(".__main__")]


def test_every_module_of_the_package_imports():
    names = _library_modules()
    assert len(names) > 40
    for name in names:
        importlib.import_module(name)


def test_modules_import_each_other_in_no_cycle():
    cycles = import_cycles(import_graph(PACKAGE_ROOT))
    assert not cycles, "import cycles (a function-level import counts too):\n" + describe_cycles(cycles)


def test_the_library_never_imports_the_cli_layer():
    found = cli_imports(import_graph(PACKAGE_ROOT), "vidtwin")
    assert not found, "library modules import vidtwin.cli:\n" + "\n".join(f"    {edge}" for edge in found)


def test_packages_import_each_other_in_no_cycle():
    edges = _unit_dependencies(import_graph(PACKAGE_ROOT))
    cycle = _find_cycle(edges)
    assert cycle is None, " -> ".join(cycle) + "\n" + "\n".join(
        f"    {edge}" for source, target in zip(cycle, cycle[1:]) for edge in edges[source][target])
    # the check can fail: a cycle made on purpose is found
    made = ImportEdge("vidtwin.latents.x", "vidtwin.inference.y", Path("x.py"), 1, False)
    edges["vidtwin.latents"]["vidtwin.inference"].append(made)
    assert _find_cycle(edges) is not None


def test_layers_below_the_models_import_no_model_code():
    graph = import_graph(PACKAGE_ROOT)
    for low in ("vidtwin.errors", "vidtwin.atomic_io", "vidtwin.hub", "vidtwin.state_dict_io", "vidtwin.cli.convention"):
        assert not {module for module in _reachable(graph, low) if _unit(module) == "vidtwin.models"}, low
    edges = _unit_dependencies(graph)
    for low in ("vidtwin.latents", "vidtwin.models", "vidtwin.data"):
        assert not {"vidtwin.inference", "vidtwin.training"} & set(edges.get(low, {})), low


def _write_package(root: Path, files: dict) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


def test_the_checker_sees_function_level_cycles_and_cli_imports(tmp_path):
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "from .a import make\n",
        "pkg/a.py": "import os\nfrom pkg.b import helper\n\ndef make():\n    return helper()\n",
        # b imports nothing of pkg at its top: the way back to a is one import inside a function
        "pkg/b.py": "def helper():\n    return 1\n\n\ndef loader():\n    from . import a\n    return a\n",
        "pkg/report.py": "def show():\n    from .cli.options import add_flags\n    return add_flags\n",
        "pkg/entry_points.py": "def main():\n    from .cli import run\n    return run()\n",
        "pkg/cli/__init__.py": "from pkg.a import make\n\ndef run():\n    return make()\n",
        "pkg/cli/options.py": "from . import run\nadd_flags = run\n",
    })
    graph = import_graph(package)
    ((modules, edges),) = import_cycles(graph)
    assert modules == ["pkg.a", "pkg.b"]
    assert [(edge.source, edge.target, edge.line, edge.in_function) for edge in edges] == [
        ("pkg.a", "pkg.b", 2, False), ("pkg.b", "pkg.a", 6, True)]
    assert "pkg/b.py:6 (inside a function)" in describe_cycles(import_cycles(graph))
    # the library module is reported; the entry points and the CLI package's own modules are not
    found = [(edge.source, edge.target, edge.line) for edge in cli_imports(graph, "pkg")]
    assert found == [("pkg.report", "pkg.cli.options", 2)]


def test_a_package_importing_its_submodules_is_no_cycle_but_taking_names_from_it_is(tmp_path):
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "from .a import A\nfrom .sub import B\nfrom . import c\nVERSION = 1\n",
        "pkg/a.py": "from . import c\nfrom pkg.c import C\nimport pkg.sub.b\nA = C\n",
        "pkg/c.py": "C = 3\n",
        "pkg/sub/__init__.py": "from .b import B\n",
        "pkg/sub/b.py": "from .. import c\nfrom ..c import C\nB = C\n",
    })
    assert import_cycles(import_graph(package)) == []  # every import names a submodule: no edge back to a package
    (package / "c.py").write_text("def version():\n    from pkg import VERSION\n    return VERSION\n")
    ((modules, edges),) = import_cycles(import_graph(package))
    # VERSION comes from pkg/__init__.py, which imports c directly and through a and sub: one cycle of them all
    assert modules == ["pkg", "pkg.a", "pkg.c", "pkg.sub", "pkg.sub.b"]
    assert ("pkg.c", "pkg", 2) in [(edge.source, edge.target, edge.line) for edge in edges]


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
    for name in _library_modules():
        module = importlib.import_module(name)
        found += [value for value in vars(module).values()
                  if isinstance(value, type) and issubclass(value, UserError) and value.__module__ == name]
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
