"""The torch thread policy of train.py and inference.py (vidtwin.cpu_threads)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from vidtwin import cpu_threads
from vidtwin.cpu_threads import apply_cpu_thread_policy, choose_cpu_threads


def test_threads_are_the_free_cores_or_every_core_when_none_is_free():
    assert choose_cpu_threads(cores=2) == 2  # idle: every core
    assert choose_cpu_threads(cores=2, busy_cores=1.0) == 1  # one core taken: stay off it
    assert choose_cpu_threads(cores=16, busy_cores=3.4) == 13
    # Nothing free: every thread shares a core alike, so all of them (a fair share of every core).
    assert choose_cpu_threads(cores=2, busy_cores=2.0) == 2
    assert choose_cpu_threads(cores=2, busy_cores=9.0) == 2
    assert choose_cpu_threads(cores=4, busy_cores=3.6) == 4


def test_the_choice_is_applied_and_said(monkeypatch, caplog):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 1.2)
    try:
        torch.set_num_threads(2)
        with caplog.at_level("INFO", logger="vidtwin.cpu_threads"):
            choice = apply_cpu_thread_policy()
        assert choice.threads == torch.get_num_threads() == 1
        assert "torch CPU threads: 1 of 2 cores (1.2 cores busy with other work" in caplog.text
        monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 0.0)
        assert apply_cpu_thread_policy().threads == 1  # never raised above what was set
    finally:
        torch.set_num_threads(before)


def test_omp_num_threads_wins(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: 0.0)
    torch.set_num_threads(1)
    try:
        choice = apply_cpu_thread_policy()
        assert choice.from_env and choice.threads == 1 and torch.get_num_threads() == 1
        assert choice.describe() == "torch CPU threads: 1 (OMP_NUM_THREADS=1)"
    finally:
        torch.set_num_threads(before)


def stat_lines(*cpus) -> str:
    """A /proc/stat with one line per CPU: (user, idle) ticks each, the other fields 0."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{n} {user} 0 0 {idle} 0 0 0 0 0 0" for n, (user, idle) in enumerate(cpus)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n"


def test_busy_cores_are_read_from_the_kernels_counters_over_a_short_sample(monkeypatch, tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(stat_lines((100, 100), (100, 100)))
    # While we sleep, CPU 0 is busy for 90 of 100 ticks and CPU 1 for 10 of 100.
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda s: stat.write_text(stat_lines((190, 110), (110, 190))))
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: {0, 1})
    assert abs(cpu_threads.busy_cores_now(2, stat_path=str(stat)) - 1.0) < 1e-9
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: {0})  # a CPU we may not use does not count
    stat.write_text(stat_lines((100, 100), (100, 100)))
    assert abs(cpu_threads.busy_cores_now(1, stat_path=str(stat)) - 0.9) < 1e-9


def test_without_the_kernels_counters_the_load_average_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_threads.os, "getloadavg", lambda: (1.4, 0.0, 0.0))
    assert cpu_threads.busy_cores_now(2, stat_path=str(tmp_path / "missing")) == 1.4
    assert cpu_threads.busy_cores_now(1, stat_path=str(tmp_path / "missing")) == 1.0


def test_a_process_started_a_moment_ago_is_seen_busy():
    """The 1-minute load average would still be near its old value; the sample sees the new work."""
    if not os.path.exists(cpu_threads.PROC_STAT):
        pytest.skip("no /proc/stat on this platform")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert cpu_threads.busy_cores_now(cpu_threads.available_cores()) >= 0.7
    finally:
        busy.kill()
        busy.wait()


def test_threads_wait_passively_only_when_every_core_is_shared(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh process, before torch is imported
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", None)  # restored after the test
    for busy, expected in ((0.0, None), (0.9, None), (1.8, "PASSIVE")):  # idle; one core free; none free
        monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores, busy=busy: busy)
        environ = {}
        assert cpu_threads.prepare_cpu_threads(environ) == expected
        assert environ == ({"OMP_WAIT_POLICY": "PASSIVE"} if expected else {})
        assert cpu_threads._startup_busy_cores == busy  # kept for the thread count, so both agree
    for chosen in ({"GOMP_SPINCOUNT": "0"}, {"OMP_WAIT_POLICY": "active"}, {"OMP_NUM_THREADS": "2"}):
        environ = dict(chosen)
        assert cpu_threads.prepare_cpu_threads(environ) is None and environ == chosen


def test_the_thread_count_uses_the_sample_taken_before_torch_loaded(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "_startup_busy_cores", 1.1)
    monkeypatch.setattr(cpu_threads, "busy_cores_now", lambda cores: pytest.fail("sampled twice"))
    try:
        torch.set_num_threads(2)
        assert apply_cpu_thread_policy().threads == 1 and cpu_threads._startup_busy_cores is None
    finally:
        torch.set_num_threads(before)


def test_choosing_the_wait_after_torch_is_loaded_changes_nothing():
    environ = {}
    assert "torch" in sys.modules and cpu_threads.prepare_cpu_threads(environ) is None and environ == {}


# (how the command is started, its arguments, the subcommand module it runs)
ENTRIES = [("train.py", [], "vidtwin.cli.train"), ("inference.py", ["reconstruct"], "vidtwin.cli.reconstruct"),
           ("-m vidtwin", ["encode"], "vidtwin.cli.encode")]


@pytest.mark.parametrize("entry, argv, command_module", ENTRIES)
def test_the_entry_points_sample_the_load_before_torch_loads(entry, argv, command_module):
    """The wait policy works only if it is in the environment when torch loads OpenMP. With every
    core taken by a busy process, the entry point must set it before anything imports torch: the
    subcommand (stood in for here, so nothing heavy loads) finds the policy set and torch not loaded."""
    from conftest import REPO

    start = ("runpy.run_module('vidtwin', run_name='__main__', alter_sys=True)" if entry == "-m vidtwin"
             else f"runpy.run_path({str(REPO / entry)!r}, run_name='__main__')")
    code = (
        "import os, runpy, sys, types\n"
        "from vidtwin import cpu_threads\n"
        "cpu_threads.busy_cores_now = lambda cores: float(cores)\n"
        f"stand_in = types.ModuleType({command_module!r})\n"
        "stand_in.add_arguments = lambda parser: None\n"
        "stand_in.run = lambda args: print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY')) or 0\n"
        f"sys.modules[{command_module!r}] = stand_in\n"
        f"sys.argv = ['entry', *{argv!r}]\n"
        f"try:\n    {start}\n"
        "except SystemExit as stop:\n    assert stop.code == 0\n"
    )
    env = {key: value for key, value in os.environ.items()
           if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "PASSIVE"]


def test_a_help_request_skips_the_load_sample(monkeypatch, capsys):
    import types

    import vidtwin.cli as cli

    sampled = []
    monkeypatch.setattr(cli, "prepare_cpu_threads", lambda: sampled.append(True))
    stand_in = types.ModuleType("vidtwin.cli.train")
    stand_in.add_arguments = lambda parser: None
    stand_in.run = lambda args: 0
    monkeypatch.setitem(sys.modules, "vidtwin.cli.train", stand_in)
    for help_request in (["--help"], ["train", "-h"]):
        with pytest.raises(SystemExit) as done:
            cli.main(help_request)
        assert done.value.code == 0
    assert sampled == []
    assert cli.main(["train"]) == 0 and sampled == [True]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads process states from /proc")
def test_the_benchmarks_stand_in_load_ends_when_the_benchmark_is_killed(tmp_path):
    """A killed benchmark (SIGKILL skips StandInLoad.__exit__) must not leave busy processes behind."""
    pids = tmp_path / "pids"
    script = ("import os, sys, time\n"
              "sys.path.insert(0, 'scripts')  # the developer tool itself, by file: tests use no scripts package\n"
              "from benchmark_quickstart import StandInLoad\n"
              "with StandInLoad(2) as load:\n"
              f"    open({str(pids)!r}, 'w').write(' '.join(str(p.pid) for p in load.processes))\n"
              "    time.sleep(60)\n")
    benchmark = subprocess.Popen([sys.executable, "-c", script], cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        load = [int(pid) for pid in pids.read_text().split()]
        assert len(load) == 2 and all(_running(pid) for pid in load)
    finally:
        benchmark.kill()
        benchmark.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in load) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in load), "the stand-in load outlived the killed benchmark"


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, finished but not yet reaped, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
