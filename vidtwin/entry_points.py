"""``train.py``, ``inference.py`` and the ``vidtwin-train`` / ``vidtwin-inference`` commands.

Torch-free until the CPU thread policy has sampled the load and chosen how OpenMP threads wait
(:func:`vidtwin.cpu_threads.prepare_cpu_threads`): OpenMP reads that setting once, when torch loads
it, so it must come before the first ``import torch``.
"""

from __future__ import annotations

from typing import List, Optional

from .cpu_threads import prepare_cpu_threads


def train(argv: Optional[List[str]] = None) -> int:
    """``python train.py``: see :func:`vidtwin.training.cli.main`."""
    prepare_cpu_threads()
    from .training.cli import main

    return main(argv)


def inference(argv: Optional[List[str]] = None) -> int:
    """``python inference.py``: see :func:`vidtwin.inference.cli.main`."""
    prepare_cpu_threads()
    from .inference.cli import main

    return main(argv)
