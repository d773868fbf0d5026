"""The model code a diffusers folder carries, so that diffusers loads it without the vidtwin package.

    diffusers.AutoModel.from_pretrained(folder, trust_remote_code=True)

works when ``config.json`` has ``"auto_map": {"AutoModel": "autoencoder_vidtwin.AutoencoderVidTwin"}``
and the code sits beside the weights (diffusers >= 0.36). The files are this package's own
modules, copied at conversion time with their imports of each other rewritten to the flat
relative imports diffusers supports (``from .vidtwin_config import ...``): the network, the packed
layout and the tiling, nothing else. The loading layer of the package (``vidtwin.hub``,
``vidtwin.pretrained``, ``vidtwin.state_dict_io``) is replaced by :mod:`.standalone`; diffusers
loads the weights there. An import of any other vidtwin module is an error here, at conversion,
not on the user's machine.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Dict, List

from ..atomic_io import atomic_write_text

ENTRY_MODULE = "autoencoder_vidtwin"
CLASS_NAME = "AutoencoderVidTwin"
AUTO_MAP = {"AutoModel": f"{ENTRY_MODULE}.{CLASS_NAME}"}

# Package module -> its file (without .py) in the folder.
BUNDLED: Dict[str, str] = {
    "vidtwin.diffusers.autoencoder_vidtwin": ENTRY_MODULE,
    "vidtwin.diffusers.layout": "vidtwin_packed_layout",
    "vidtwin.diffusers.standalone": "vidtwin_standalone",
    "vidtwin.generation.packing": "vidtwin_packing",
    "vidtwin.inference.tiling": "vidtwin_tiling",
    "vidtwin.latents.layout": "vidtwin_clip_layout",
    "vidtwin.models.attention": "vidtwin_attention",
    "vidtwin.models.config": "vidtwin_config",
    "vidtwin.models.distributions": "vidtwin_distributions",
    "vidtwin.models.qformer": "vidtwin_qformer",
    "vidtwin.models.regularizers": "vidtwin_regularizers",
    "vidtwin.models.st_transformer": "vidtwin_st_transformer",
    "vidtwin.models.vidtwin_ae": "vidtwin_autoencoder",
}
# The loading layer, which the network module imports but diffusers replaces.
STAND_INS = {"vidtwin.hub", "vidtwin.pretrained", "vidtwin.state_dict_io"}

_FROM_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from[ \t]+\.*[\w.]*[ \t]+import\b")


class RemoteCodeError(RuntimeError):
    """A module of the bundle imports a vidtwin module that the bundle does not carry (a bug here)."""


def _absolute(module: str, package: str) -> str:
    """``from MODULE import`` inside ``package`` as an absolute module name."""
    dots = len(module) - len(module.lstrip("."))
    if not dots:
        return module
    base = package.split(".")
    base = base[:len(base) - (dots - 1)]
    rest = module[dots:]
    return ".".join(base + ([rest] if rest else []))


def bundled_source(module: str) -> str:
    """The source of ``module`` with its vidtwin imports pointing at the bundle's flat files."""
    source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    package = module.rsplit(".", 1)[0]
    lines = source.splitlines(keepends=True)
    # The import statements themselves (found by the parser, so examples in docstrings stay as written).
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "vidtwin" for alias in node.names):
            raise RemoteCodeError(f"{module} has an `import vidtwin...` statement; the bundle rewrites `from ... import` only")
        if not isinstance(node, ast.ImportFrom):
            continue
        target = _absolute("." * node.level + (node.module or ""), package)
        if not target.startswith("vidtwin"):
            continue
        stem = BUNDLED.get(target) or (BUNDLED["vidtwin.diffusers.standalone"] if target in STAND_INS else None)
        if stem is None:
            raise RemoteCodeError(f"{module} imports {target}, which a model folder's code does not carry; "
                                  "add it to vidtwin.diffusers.remote_code.BUNDLED or import it lazily elsewhere")
        index = node.lineno - 1
        lines[index], count = _FROM_IMPORT.subn(f"\\g<indent>from .{stem} import", lines[index], count=1)
        if count != 1:
            raise RemoteCodeError(f"{module} line {node.lineno}: cannot rewrite {lines[index].strip()!r}")
    return "".join(lines)


def remote_code_files() -> Dict[str, str]:
    """``{file name: source}`` of every file a folder carries."""
    files = {f"{stem}.py": bundled_source(module) for module, stem in BUNDLED.items()}
    # diffusers copies, for a local folder, only the files the entry file imports itself, so the
    # entry file names every file of the bundle.
    names = [stem for stem in BUNDLED.values() if stem != ENTRY_MODULE]
    files[f"{ENTRY_MODULE}.py"] += (
        "\n\n# Every file of this folder's model code: diffusers copies the files this module imports itself.\n"
        + "".join(f"from .{stem} import __name__ as _{stem}_module  # noqa: E402,F401\n" for stem in names))
    return files


def write_remote_code(folder: Path) -> List[Path]:
    """Write the model code into ``folder`` (each file complete or absent); returns the paths."""
    written = []
    for name, source in remote_code_files().items():
        atomic_write_text(Path(folder) / name, source)
        written.append(Path(folder) / name)
    return written


__all__ = ["AUTO_MAP", "BUNDLED", "CLASS_NAME", "ENTRY_MODULE", "RemoteCodeError", "remote_code_files", "write_remote_code"]
