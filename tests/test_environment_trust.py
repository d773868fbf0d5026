"""Issue 32's environment and bad-value cases: the load sample and OMP_NUM_THREADS (vidtwin.cpu_threads),
`vidtwin play`'s options, start video and terminal, and encode-dataset's duplicate sources and resumed
progress bar. Each test fails on the code before its fix."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from vidtwin import cpu_threads
from vidtwin.cli import main as vidtwin

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


# ---------------------------------------------------------------------------- the load sample
def stand_in_command(monkeypatch, name: str = "vidtwin.cli.make_meta") -> list:
    """Replace a subcommand's module by one that records that it ran; returns the record."""
    ran = []
    stand_in = types.ModuleType(name)
    stand_in.add_arguments = lambda parser: None
    stand_in.run = lambda args: ran.append(True) or 0
    monkeypatch.setitem(sys.modules, name, stand_in)
    return ran


@pytest.mark.parametrize("line", ["cpu0 12 abc 3 4 5 6 7 8", "cpu0 1 2", "cpu0 1 2 3 -4 5"])
def test_a_cpu_line_that_is_not_counters_falls_back_to_the_load_average(line, monkeypatch, tmp_path, caplog):
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  1 2 3 4 5 6 7 8\n{line}\nintr 1 2\n")
    monkeypatch.setattr(cpu_threads, "PROC_STAT", str(stat))
    monkeypatch.setattr(cpu_threads.os, "getloadavg", lambda: (0.7, 0.0, 0.0))
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh process: the command samples the load at start
    ran = stand_in_command(monkeypatch)
    assert vidtwin(["make-meta"]) == 0 and ran == [True]  # the command ran
    assert cpu_threads._startup_busy_cores == 0.7
    monkeypatch.undo()  # torch back in sys.modules, for the thread policy below
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", 0.7)
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="vidtwin.cpu_threads"):
            cpu_threads.apply_cpu_thread_policy()  # where --verbose says how the load was measured
    finally:
        torch.set_num_threads(before)
    assert "load sample: busy cores from the 1-minute load average (0.7)" in caplog.text
    assert f"{str(stat)} has a CPU line that is not counters: {line!r}" in caplog.text


def test_without_proc_stat_nor_a_load_average_nothing_is_busy(monkeypatch, tmp_path):
    def no_load_average():
        raise OSError("none here")

    monkeypatch.setattr(cpu_threads.os, "getloadavg", no_load_average)
    assert cpu_threads.busy_cores_now(2, stat_path=str(tmp_path / "missing")) == 0.0
    assert "no load average either" in cpu_threads.load_sample_note()


# ---------------------------------------------------------------------------- OMP_NUM_THREADS
@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "2,x"])
def test_an_omp_num_threads_that_openmp_ignores_is_said_to_be_ignored(value, monkeypatch, caplog):
    """OpenMP ignores these (GNU OpenMP prints 'Invalid value' and uses every core): the policy
    chooses, and the report says the value was ignored instead of crediting it."""
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 1.0)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", None)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        choice = cpu_threads.apply_cpu_thread_policy()
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert not choice.from_env and choice.threads == threads == 1
    assert choice.describe() == (f"torch CPU threads: 1 of 2 cores (1.0 cores busy with other work; "
                                 f"OMP_NUM_THREADS={value!r} was ignored, as OpenMP ignores it: give a whole number "
                                 "of 1 or more)")


def test_an_ignored_omp_num_threads_leaves_the_wait_policy_to_the_load(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 1.8)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", None)
    environ = {"OMP_NUM_THREADS": "abc"}
    assert cpu_threads.prepare_cpu_threads(environ) == "PASSIVE"
    environ = {"OMP_NUM_THREADS": " 2,1 "}  # a list of levels: OpenMP takes it
    assert cpu_threads.prepare_cpu_threads(environ) is None


def test_the_values_openmp_takes():
    read = cpu_threads.omp_threads_from_env
    assert read({}) == (None, None) and read({"OMP_NUM_THREADS": " "}) == (None, None)
    assert read({"OMP_NUM_THREADS": "3"}) == ("3", 3) and read({"OMP_NUM_THREADS": "4, 2"}) == ("4, 2", 4)
    for ignored in ("0", "-1", "abc", "1.5", "", "2,", "\u0663"):  # the last: an Arabic-Indic three
        assert read({"OMP_NUM_THREADS": ignored or ","})[1] is None
