"""InferenceOptions, and what --dtype auto chooses on each kind of hardware (capabilities stubbed)."""

import pytest
import torch

from vidtwin import load_model, precision
from vidtwin.data.video_io import write_video
from vidtwin.inference import InferenceError, InferenceOptions, reconstruct_video
from vidtwin.inference import options as options_module
from vidtwin.cli import main
from vidtwin.inference.options import auto_dtype, precision_context

from conftest import TINY_CONFIG

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# These tests stub the CPU themselves, and run with one OpenMP thread (see conftest.py).
pytestmark = [pytest.mark.cpu_dtype_choice, pytest.mark.usefixtures("one_torch_thread")]


def stub_cpu(monkeypatch, capability="AVX512", bf16_speedup=2.1, **flags):
    """Make torch report a CPU with exactly these capability flags, running ``capability`` kernels,
    whose bf16 matmuls measure ``bf16_speedup`` times as fast as fp32 ones."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **flags})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "cpu_bf16_matmul_speedup", lambda: bf16_speedup)


@pytest.mark.parametrize(
    "flags, expected",
    [({}, "fp32"), ({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16"), ({"avx512_bf16": False, "amx_bf16": False}, "fp32")],
)
def test_auto_on_the_cpu_uses_bf16_only_with_native_instructions(monkeypatch, flags, expected):
    stub_cpu(monkeypatch, **flags)
    dtype, reason = auto_dtype(CPU)
    assert dtype == expected
    assert torch.backends.cpu.get_cpu_capability() in reason  # the log names torch's CPU capability


def test_auto_on_a_cpu_whose_native_bf16_is_slower_uses_fp32(monkeypatch):
    """An Intel Xeon whose AMX is not enabled has AVX512-BF16, but its bf16 matmuls run at about half
    its fp32 rate: auto measures that and says so."""
    stub_cpu(monkeypatch, avx512_bf16=True, bf16_speedup=0.55)
    dtype, reason = auto_dtype(CPU)
    assert dtype == "fp32"
    assert "native bf16 instructions" in reason and "0.55x as fast as fp32" in reason


def test_auto_follows_torch_kernels_limited_to_avx2(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 on a CPU with AVX512-BF16: torch runs AVX2 kernels, so auto picks fp32
    and says so, instead of claiming native bf16 next to "AVX2"."""
    stub_cpu(monkeypatch, capability="AVX2", avx512_bf16=True)
    dtype, reason = auto_dtype(CPU)
    assert dtype == "fp32"
    assert "AVX2" in reason and "no native bf16" in reason


@pytest.mark.parametrize("bf16_supported, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_prefers_bf16_then_fp16(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert auto_dtype(CUDA)[0] == expected


@pytest.mark.parametrize("flags, autocast_dtype", [({"avx512_bf16": True}, torch.bfloat16), ({}, None)])
def test_auto_precision_context_follows_the_choice(monkeypatch, flags, autocast_dtype):
    stub_cpu(monkeypatch, **flags)
    with precision_context(CPU, "auto"):
        assert torch.is_autocast_enabled("cpu") == (autocast_dtype is not None)
        if autocast_dtype is not None:
            assert torch.get_autocast_dtype("cpu") == autocast_dtype


def test_auto_is_the_default_and_runs_what_it_chose(monkeypatch):
    torch.manual_seed(0)
    model = load_model(TINY_CONFIG)
    frames = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8)
    assert InferenceOptions().dtype == "auto"
    for flags, same_as in (({}, "fp32"), ({"amx_bf16": True}, "bf16")):
        stub_cpu(monkeypatch, **flags)
        auto = reconstruct_video(model, frames, fps=5.0).video
        assert torch.equal(auto, reconstruct_video(model, frames, fps=5.0, dtype=same_as).video)
    assert not torch.equal(auto, reconstruct_video(model, frames, fps=5.0, dtype="fp32").video)


def test_the_command_line_prints_the_auto_choice_once(monkeypatch, tmp_path, capsys):
    stub_cpu(monkeypatch, avx512_bf16=True)
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), tmp_path / "tiny.pt")
    write_video(tmp_path / "clip.mp4", torch.full((9, 64, 64, 3), 90, dtype=torch.uint8), fps=5.0)
    code = main(["reconstruct", "--input", str(tmp_path / "clip.mp4"), "--output", str(tmp_path / "out.mp4"),
                 "--config", str(TINY_CONFIG), "--ckpt", str(tmp_path / "tiny.pt"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0
    assert [line for line in err.splitlines() if line.startswith("dtype auto")] == [
        f"dtype auto: bf16 on cpu (the CPU has native bf16 instructions (torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}); bf16 matmuls ran 2.10x as fast as fp32)"
    ]


def test_options_are_checked_and_take_keyword_overrides():
    base = InferenceOptions(spatial="tile", batch_clips=4)
    assert InferenceOptions.of(base, dtype="fp32") == InferenceOptions(spatial="tile", batch_clips=4, dtype="fp32")
    assert InferenceOptions.of(None) == InferenceOptions()
    with pytest.raises(TypeError, match="unknown inference option.*batch_size"):
        InferenceOptions.of(batch_size=2)
    for bad, message in (({"batch_clips": 0}, "--batch-clips"), ({"max_frames": 0}, "--max-frames"),
                         ({"sample_fps": 0.0}, "--sample-fps"), ({"spatial": "crop"}, "spatial"), ({"dtype": "int8"}, "dtype")):
        with pytest.raises(InferenceError, match=message):
            InferenceOptions(**bad)


def test_cpu_without_capability_report_falls_back_to_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert not options_module.cpu_has_native_bf16()
    assert auto_dtype(CPU)[0] == "fp32"
