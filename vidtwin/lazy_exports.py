"""Names a package exports but imports only on first use, so that importing the package stays cheap.

    __getattr__, __dir__ = lazy_exports(__name__, {"VidTwin": ".vidtwin_ae"}, __all__)

A name's module is imported (relative names against the package) the first time the name is read;
the value is then cached in the package, so later reads are plain attribute lookups.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable, Iterable, List, Mapping, Tuple


def lazy_exports(package: str, modules: Mapping[str, str],
                 names: Iterable[str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: ``modules`` maps each lazy name
    to the module that defines it; ``names`` is everything the package exports (for ``dir()``)."""
    exported = sorted(names)

    def __getattr__(name: str) -> Any:
        if name in modules:
            value = getattr(import_module(modules[name], package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return exported

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
