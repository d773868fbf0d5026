"""The configs that ship inside the package, by name: ``tiny``, ``vidtwin``, ``generator/tiny_digits``...

The YAML files live in ``vidtwin/configs/`` (a clone's ``configs/`` points there), so an installed
package has them too. A config reference is resolved in this order:

1. a file that exists, as given (``--base my_run.yaml``, ``--base configs/tiny.yaml`` in a clone);
2. a shipped preset, named with or without a leading ``configs/`` and a trailing ``.yaml``
   (``tiny``, ``configs/tiny.yaml``, ``world/tiny_digits``), so the same spelling works from any folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path, PurePosixPath
from typing import List, Optional, Union

CONFIG_PACKAGE_FOLDER = "configs"
CONFIG_SUFFIX = ".yaml"


def _preset_root() -> Path:
    # files() gives a real folder for both an installed wheel and an editable install.
    return Path(str(resources.files("vidtwin") / CONFIG_PACKAGE_FOLDER))


def preset_names() -> List[str]:
    """Every shipped preset, as its name without ``.yaml`` (``generator/tiny_digits``), sorted."""
    root = _preset_root()
    return sorted(path.relative_to(root).with_suffix("").as_posix() for path in root.rglob(f"*{CONFIG_SUFFIX}"))


def preset_path(name: Union[str, Path]) -> Optional[Path]:
    """The shipped file of the preset ``name`` (``tiny``, ``configs/tiny.yaml``), or None."""
    parts = PurePosixPath(Path(name).as_posix()).parts
    if parts and parts[0] == CONFIG_PACKAGE_FOLDER:
        parts = parts[1:]
    if not parts or any(part in ("..", ".") for part in parts) or Path(name).is_absolute():
        return None
    relative = PurePosixPath(*parts)
    if relative.suffix != CONFIG_SUFFIX:
        relative = relative.with_name(relative.name + CONFIG_SUFFIX)
    path = _preset_root() / relative
    return path if path.is_file() else None


def resolve_config_path(reference: Union[str, Path]) -> Optional[Path]:
    """An existing file as given, else the shipped preset of that name, else None."""
    path = Path(reference)
    if path.is_file():
        return path
    return preset_path(reference)


__all__ = ["preset_names", "preset_path", "resolve_config_path"]
