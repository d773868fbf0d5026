"""The torch thread policy of train.py and inference.py (vidtwin.cpu_threads)."""

from __future__ import annotations

import torch

from vidtwin import cpu_threads
from vidtwin.cpu_threads import apply_cpu_thread_policy, choose_cpu_threads


def test_threads_are_the_free_cores_and_at_least_one():
    assert choose_cpu_threads(cores=2) == 2  # idle: every core
    assert choose_cpu_threads(cores=2, loader_workers=1) == 1
    assert choose_cpu_threads(cores=2, busy_cores=2.0) == 1  # two busy processes beside us
    assert choose_cpu_threads(cores=2, loader_workers=4, busy_cores=9.0) == 1
    assert choose_cpu_threads(cores=16, loader_workers=2, busy_cores=3.4) == 11


def test_the_choice_is_applied_and_said(monkeypatch, caplog):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 1.8)
    try:
        torch.set_num_threads(2)
        with caplog.at_level("INFO", logger="vidtwin.cpu_threads"):
            choice = apply_cpu_thread_policy(loader_workers=0)
        assert choice.threads == torch.get_num_threads() == 1
        assert "torch CPU threads: 1 of 2 cores (0 loader workers, 1.8 cores busy with other work" in caplog.text
        monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 0.0)
        assert apply_cpu_thread_policy(loader_workers=0).threads == 1  # never raised above what was set
    finally:
        torch.set_num_threads(before)


def test_omp_num_threads_wins(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 0.0)
    torch.set_num_threads(1)
    try:
        choice = apply_cpu_thread_policy(loader_workers=0)
        assert choice.from_env and choice.threads == 1 and torch.get_num_threads() == 1
        assert choice.describe() == "torch CPU threads: 1 (OMP_NUM_THREADS=1)"
    finally:
        torch.set_num_threads(before)
