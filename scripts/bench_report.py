"""What every benchmark records about the machine, its peak memory, and how it writes its tables
and JSON reports.

Light on purpose (no torch, no package import at module level): the memory benchmarks import it
into a parent process whose own size must stay small.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
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


class PeakRSS:
    """Samples the process's resident set size in a background thread (Linux /proc; else None)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int | None:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self._page
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self.peak_bytes = max(self.peak_bytes or 0, rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def text_table(header: list[str], rows: list[list]) -> str:
    """Rows of cells as text: each column as wide as its widest cell, the first left-aligned and the
    others right-aligned, a rule under the header."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                         for column, (cell, width) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), "-" * len(line(cells[0])), *(line(row) for row in cells[1:])])


def write_json_report(path: str | os.PathLike | None, report: dict) -> None:
    """Write ``report`` as indented JSON to ``path`` (atomically; its folder is created); nothing for None."""
    if path is None:
        return
    from vidtwin.atomic_io import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
