"""``train.py``, ``inference.py`` and the ``vidtwin-train`` / ``vidtwin-inference`` commands.

Torch-free until the CPU thread policy has sampled the load and chosen how OpenMP threads wait
(:func:`vidtwin.cpu_threads.prepare_cpu_threads`): OpenMP reads that setting once, when torch loads
it, so it must come before the first ``import torch``.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from .cpu_threads import prepare_cpu_threads

HELP_FLAGS = ("-h", "--help")


def _prepare_unless_help(argv: Optional[List[str]]) -> None:
    """The load sample takes half a second; a request for help runs no model and skips it."""
    if not any(flag in (sys.argv[1:] if argv is None else argv) for flag in HELP_FLAGS):
        prepare_cpu_threads()


def train(argv: Optional[List[str]] = None) -> int:
    """``python train.py``: see :func:`vidtwin.cli.train.main`."""
    _prepare_unless_help(argv)
    from .cli.train import main

    return main(argv)


def inference(argv: Optional[List[str]] = None) -> int:
    """``python inference.py``: see :func:`vidtwin.cli.inference.main`."""
    _prepare_unless_help(argv)
    from .cli.inference import main

    return main(argv)
