"""What every benchmark records about the machine, and how it writes its JSON report.

Light on purpose (no torch, no package import at module level): the memory benchmarks import it
into a parent process whose own size must stay small.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> dict:
    """The CPU, its core count, the vector instructions torch uses on it and whether it has native bf16."""
    import torch

    from vidtwin.inference.options import cpu_has_native_bf16

    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_native_bf16": cpu_has_native_bf16()}


def write_json_report(path: str | os.PathLike | None, report: dict) -> None:
    """Write ``report`` as indented JSON to ``path`` (atomically; its folder is created); nothing for None."""
    if path is None:
        return
    from vidtwin.atomic_io import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
