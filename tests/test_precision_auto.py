"""`lightning.trainer.precision: auto`: bf16-mixed where the trainer's device computes bf16 natively, 32
elsewhere, by the same detection as inference's --dtype auto; said in one line, recorded in config.yaml.

The CPU and GPU are stubbed (torch's capability reports), so these pass on CPUs with and without native bf16.
"""

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from _training_utils import micro_overrides, single_thread, tiny_config_files
from vidtwin.cli import train_main as main
from vidtwin.cli.train import RUN_NAME_ENV, parse_args, prepare, resolve_auto_precision
from vidtwin.training.run_dir import CLAIMED_RUN_ENV, LAUNCH_ID_ENV
from vidtwin.inference.options import auto_dtype as inference_auto_dtype
from vidtwin import precision
from vidtwin.precision import auto_training_precision

# Taken when the module is collected, before a session fixture can replace it.
REAL_BF16_SPEEDUP_PROBE = precision.cpu_bf16_matmul_speedup
# These tests stub the CPU themselves (see conftest.py).
pytestmark = pytest.mark.cpu_dtype_choice


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def stub_cpu(monkeypatch, cpu):
    """Make torch report ``cpu``: ``(capability, flags, speedup)``, the kernels torch runs, exactly
    these flags, and how many times faster than fp32 its bf16 matmuls measure (None: never measured,
    which the stub checks)."""
    capability, flags, speedup = cpu

    def measured_speedup():
        assert speedup is not None, "bf16 was measured on a CPU that torch runs without native bf16"
        return speedup

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **flags})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "cpu_bf16_matmul_speedup", measured_speedup)


def stub_gpu(monkeypatch, present: bool, bf16: bool = False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# The speedups are of the kinds of CPU measured (docs/benchmarks.md).
NATIVE_BF16_CPU = ("AVX512", {"avx512_bf16": True}, 2.1)  # AMD EPYC
AMX_CPU = ("AVX512", {"amx_bf16": True}, 5.5)  # Intel Xeon with AMX
# An Intel Xeon whose AMX is not enabled: AVX512-BF16 matmuls run at about half the fp32 rate.
SLOW_NATIVE_BF16_CPU = ("AVX512", {"avx512_bf16": True}, 0.55)
AVX2_ONLY_CPU = ("AVX2", {}, None)
# ATEN_CPU_CAPABILITY=avx2 on a CPU with AVX512-BF16: torch reports AVX2 and runs AVX2 kernels.
AVX512_BF16_CPU_LIMITED_TO_AVX2 = ("AVX2", {"avx512_bf16": True}, None)


@pytest.mark.parametrize("cpu, expected", [
    (NATIVE_BF16_CPU, "bf16-mixed"), (AMX_CPU, "bf16-mixed"), (SLOW_NATIVE_BF16_CPU, "32"),
    (AVX2_ONLY_CPU, "32"), (AVX512_BF16_CPU_LIMITED_TO_AVX2, "32"),
])
@pytest.mark.parametrize("accelerator", ["cpu", "auto", None])
def test_on_the_cpu_auto_trains_in_bf16_only_with_native_instructions(monkeypatch, cpu, expected, accelerator):
    stub_cpu(monkeypatch, cpu)
    stub_gpu(monkeypatch, present=False)
    precision, device_type, reason = auto_training_precision(accelerator)
    assert (precision, device_type) == (expected, "cpu")
    assert f"torch CPU capability {cpu[0]}" in reason
    if cpu[2] is not None:  # the measurement that decided is in the log
        assert f"bf16 matmuls ran {cpu[2]:.2f}x" in reason
    # the same detection as inference's --dtype auto, and the same words for it
    assert inference_auto_dtype(torch.device("cpu")) == ("bf16" if expected == "bf16-mixed" else "fp32", reason)


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto"])
@pytest.mark.parametrize("cpu", [NATIVE_BF16_CPU, AVX2_ONLY_CPU])
def test_on_a_gpu_auto_follows_the_gpu_not_the_cpu(monkeypatch, accelerator, cpu):
    stub_cpu(monkeypatch, cpu)
    stub_gpu(monkeypatch, present=True, bf16=True)
    assert auto_training_precision(accelerator) == ("bf16-mixed", "cuda", "the GPU supports bf16")
    # without bf16 the GPU trains in fp32: 16-mixed would need loss scaling
    stub_gpu(monkeypatch, present=True, bf16=False)
    assert auto_training_precision(accelerator) == ("32", "cuda", "the GPU has no bf16 support")


def test_accelerator_cpu_on_a_machine_with_a_bf16_gpu_follows_the_cpu(monkeypatch):
    stub_cpu(monkeypatch, AVX2_ONLY_CPU)
    stub_gpu(monkeypatch, present=True, bf16=True)
    assert auto_training_precision("cpu")[:2] == ("32", "cpu")
    assert auto_training_precision("auto")[:2] == ("bf16-mixed", "cuda")


def test_aten_cpu_capability_avx2_makes_auto_train_in_fp32():
    """The real setting, in a fresh process (torch reads it when it loads), on this machine's real CPU."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    code = "from vidtwin.precision import auto_training_precision; print(*auto_training_precision('cpu'), sep='|')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    precision, device_type, reason = result.stdout.strip().splitlines()[-1].split("|")
    assert (precision, device_type) == ("32", "cpu")
    assert "no native bf16" in reason and "AVX512" not in reason


def test_only_auto_is_replaced_and_the_choice_is_logged(monkeypatch, caplog):
    stub_cpu(monkeypatch, NATIVE_BF16_CPU)
    stub_gpu(monkeypatch, present=False)
    caplog.set_level("INFO", logger="vidtwin.cli.train")
    for named in (32, "bf16-mixed", "16-mixed"):
        config = OmegaConf.create({"lightning": {"trainer": {"precision": named}}})
        assert resolve_auto_precision(config) is None
        assert config.lightning.trainer.precision == named
    assert resolve_auto_precision(OmegaConf.create({"model": {}})) is None  # no lightning section
    assert not [r for r in caplog.records if "precision auto" in r.getMessage()]

    config = OmegaConf.create({"lightning": {"trainer": {"precision": "auto", "accelerator": "cpu"}}})
    assert resolve_auto_precision(config) == "bf16-mixed"
    assert config.lightning.trainer.precision == "bf16-mixed"
    assert [r.getMessage() for r in caplog.records if "precision auto" in r.getMessage()] == [
        "precision auto: bf16-mixed on cpu (the CPU has native bf16 instructions (torch CPU capability AVX512); "
        "bf16 matmuls ran 2.10x as fast as fp32)"]


AUTO = ("lightning.trainer.precision=auto", "lightning.trainer.accelerator=cpu")


def restore_run_environment(monkeypatch):
    """prepare() claims a run for this launch in the environment (run name, launch id, claimed
    folder); undo that after the test, or a later run in this process takes the claim for its own."""
    for variable in (RUN_NAME_ENV, LAUNCH_ID_ENV, CLAIMED_RUN_ENV):
        monkeypatch.setenv(variable, "")  # recorded, so that what prepare() sets is undone
        monkeypatch.delenv(variable)


def test_a_run_says_its_choice_first_records_it_and_a_resume_keeps_it(monkeypatch, tmp_path, capsys):
    stub_cpu(monkeypatch, NATIVE_BF16_CPU)
    stub_gpu(monkeypatch, present=False)
    code = main(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(),
                 *micro_overrides("lightning.trainer.max_steps=1", *AUTO)])
    err = capsys.readouterr().err.splitlines()
    assert code == 0
    choice = [i for i, line in enumerate(err) if "precision auto" in line]
    assert [err[i] for i in choice] == ["INFO vidtwin.cli.train: precision auto: bf16-mixed on cpu (the CPU has "
                                        "native bf16 instructions (torch CPU capability AVX512); bf16 matmuls "
                                        "ran 2.10x as fast as fp32)"]
    assert choice[0] < next(i for i, line in enumerate(err) if "run directory:" in line)  # among the first lines
    run_dir = tmp_path / "run"
    assert OmegaConf.load(run_dir / "config.yaml").lightning.trainer.precision == "bf16-mixed"

    # On a CPU without native bf16 the resume keeps the run's precision (recorded, not "auto") ...
    stub_cpu(monkeypatch, AVX2_ONLY_CPU)
    restore_run_environment(monkeypatch)
    resumed = prepare(parse_args(["--resume", str(run_dir), "lightning.trainer.max_steps=2"]))
    assert resumed.trainer.precision == "bf16-mixed"
    # ... unless the resume asks to choose again, for the machine it runs on; its config records that.
    rechosen = prepare(parse_args(["--resume", str(run_dir), "lightning.trainer.max_steps=2",
                                   "lightning.trainer.precision=auto"]))
    assert rechosen.trainer.precision == "32-true"
    assert rechosen.resume_record.config.lightning.trainer.precision == "32"


def test_a_new_run_on_a_cpu_without_native_bf16_trains_and_records_32(monkeypatch, tmp_path):
    stub_cpu(monkeypatch, AVX512_BF16_CPU_LIMITED_TO_AVX2)
    stub_gpu(monkeypatch, present=False)
    restore_run_environment(monkeypatch)
    run = prepare(parse_args(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(),
                              *micro_overrides("lightning.trainer.max_steps=1", *AUTO)]))
    assert run.trainer.precision == "32-true"
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").lightning.trainer.precision == "32"


def test_the_bf16_measurement_is_a_real_rate_ratio_taken_once_a_run(monkeypatch):
    """The real probe on this machine's CPU (VIDTWIN_TEST_CPU_BF16 replaces it for the other tests):
    a positive ratio, measured once a process and handed to the processes it starts."""
    probe = REAL_BF16_SPEEDUP_PROBE
    monkeypatch.delenv(precision.SPEEDUP_ENV, raising=False)
    probe.cache_clear()
    try:
        speedup = probe()
        assert 0 < speedup < 100
        assert probe() == speedup
        assert (probe.cache_info().misses, probe.cache_info().hits) == (1, 1)
        assert float(os.environ[precision.SPEEDUP_ENV]) == speedup  # what DDP ranks started from here see

        # A rank started with the figure takes it instead of measuring, so every rank chooses alike.
        def no_measuring():
            raise AssertionError("measured again in a process that was handed the figure")

        monkeypatch.setattr(precision, "_measure_bf16_matmul_speedup", no_measuring)
        monkeypatch.setenv(precision.SPEEDUP_ENV, "0.42")
        probe.cache_clear()
        assert probe() == 0.42
    finally:
        probe.cache_clear()
