"""``--compile`` (vidtwin.inference.compiled): the compiled encode and decode give eager's outputs,
compile once per callable and precision (the last, partial batch of a video included), and fall
back to eager, with one warning, when torch.compile fails or its code disagrees with eager.

Compiling even the tiny model takes seconds on a CPU, so one counting backend (inductor underneath)
is shared by the module: each graph compiles once, and later tests reuse it from torch's cache.
"""

import functools
import logging

import pytest
import torch

from vidtwin import load_model
from vidtwin.cli import build_parser
from vidtwin.cli.options import inference_options
from vidtwin.inference import InferenceOptions, encode_video, reconstruct_video
from vidtwin.inference.compiled import CompiledAutoencoder, autoencoder_calls, compiled_mismatch, fixed_batch
from vidtwin.inference.encode_dataset import LatentEncoder
from vidtwin.models.config import LATENT_NAMES

from conftest import TINY_CONFIG, TINY_FRAMES
from test_inference_pipeline import _frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

FP32_TOLERANCE = 1e-4
BF16_STEP = 2.0 ** -7  # bf16's spacing between 1 and 2, the magnitude of these outputs


class CountingInductor:
    """A torch.compile backend that counts the graphs it compiles and hands them to inductor."""

    def __init__(self):
        self.graphs = 0
        self.inductor = torch._dynamo.lookup_backend("inductor")

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return self.inductor(graph_module, example_inputs)


@pytest.fixture(scope="module")
def backend():
    """torch.compile with the counting backend for the whole module."""
    counting = CountingInductor()
    real_compile = torch.compile
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", functools.partial(real_compile, backend=counting))
        yield counting


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(TINY_CONFIG)  # random weights: compiled against eager, not quality


@pytest.fixture(scope="module")
def video():
    """20 frames: three 8-frame clips, so batches of two end with a partial batch of one."""
    return _frames(20, 64, 64)


@pytest.fixture(scope="module")
def fp32_run(model, video, backend):
    """One compiled fp32 reconstruction, streamed: the graph count after the first batch and at the end."""
    from vidtwin.inference.pipeline import iter_reconstruction
    from vidtwin.inference.sources import load_source

    source = load_source(video, fps=8.0)
    clips = iter_reconstruction(model, source, InferenceOptions(batch_clips=2, dtype="fp32", compile=True))
    first = next(clips)  # the first batch (clips 0 and 1) has run
    after_first_batch = backend.graphs
    outputs = torch.cat([first.output, *(clip.output for clip in clips)], dim=1)  # (3, 20, 64, 64)
    return outputs, after_first_batch, backend.graphs


@pytest.fixture
def compiled_runner(model, fp32_run):
    """The module's runner, where its compiled code passed the check against eager (see compiled.py)."""
    runner = autoencoder_calls(model, InferenceOptions(batch_clips=2, compile=True))
    if runner.eager:
        pytest.xfail("inductor's code failed or was wrong on this machine (seen with torch 2.14.1 and "
                     "ATEN_CPU_CAPABILITY=avx2), and --compile fell back to eager, as it should")
    return runner


def test_compiled_reconstruction_matches_eager_and_compiles_once(model, video, backend, fp32_run, compiled_runner):
    compiled, after_first_batch, after_video = fp32_run
    eager = reconstruct_video(model, video, fps=8.0, batch_clips=2, dtype="fp32").video
    torch.testing.assert_close(compiled, eager, atol=FP32_TOLERANCE, rtol=0)
    assert after_first_batch >= 2  # encode and decode were compiled, by this module's backend
    assert after_video == after_first_batch  # the partial last batch reused the graphs
    # Another video (one clip: a partial batch from the start) and another length: still no new graph.
    short = reconstruct_video(model, video[:5], fps=8.0, batch_clips=2, dtype="fp32", compile=True).video
    torch.testing.assert_close(short, reconstruct_video(model, video[:5], fps=8.0, dtype="fp32").video,
                               atol=FP32_TOLERANCE, rtol=0)
    assert backend.graphs == after_video
    assert set(compiled_runner.compile_seconds) == {"encode", "decode"}  # the time of each first call, once


def test_compiled_encoding_matches_eager_with_the_same_graph(model, video, backend, fp32_run):
    graphs = backend.graphs
    compiled = encode_video(model, video, fps=8.0, batch_clips=2, dtype="fp32", compile=True)
    eager = encode_video(model, video, fps=8.0, batch_clips=2, dtype="fp32")
    for name in LATENT_NAMES:
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name), atol=FP32_TOLERANCE, rtol=0)
    assert backend.graphs == graphs  # reconstruct compiled this encode already


def test_another_model_of_the_architecture_reuses_the_graph_with_its_own_weights(model, video, backend, fp32_run):
    graphs = backend.graphs
    torch.manual_seed(1)
    other = load_model(TINY_CONFIG)
    compiled = reconstruct_video(other, video, fps=8.0, batch_clips=2, dtype="fp32", compile=True).video
    eager = reconstruct_video(other, video, fps=8.0, batch_clips=2, dtype="fp32").video
    torch.testing.assert_close(compiled, eager, atol=FP32_TOLERANCE, rtol=0)
    assert (eager - fp32_run[0]).abs().max() > 0.1  # the weights differ, and the result shows it
    assert backend.graphs == graphs


def test_compiled_bf16_matches_eager_bf16(model, video, backend, fp32_run, compiled_runner):
    graphs = backend.graphs
    compiled = reconstruct_video(model, video, fps=8.0, batch_clips=2, dtype="bf16", compile=True).video
    eager = reconstruct_video(model, video, fps=8.0, batch_clips=2, dtype="bf16").video
    # bf16 tolerance: within four bf16 steps of eager bf16 everywhere (outputs here reach magnitude
    # 1.9; seen: one step here, two on real clips), under one step on average, and as close to fp32
    # as eager bf16 is (inductor may fuse or reorder the rounding, not add to it).
    torch.testing.assert_close(compiled, eager, atol=4 * BF16_STEP, rtol=0)
    assert (compiled - eager).abs().mean() < BF16_STEP
    fp32 = fp32_run[0]
    assert (compiled - fp32).abs().mean() < 1.25 * (eager - fp32).abs().mean()
    assert backend.graphs > graphs  # autocast is part of a graph: bf16 compiled its own
    if compiled_runner.eager:
        pytest.xfail("inductor's bf16 code failed or was wrong on this machine; --compile fell back to eager")
    assert {"encode (bf16 autocast)", "decode (bf16 autocast)"} <= set(compiled_runner.compile_seconds)


def test_encode_dataset_encodes_through_the_runner(model, video, backend, fp32_run):
    graphs = backend.graphs
    clips = torch.stack([_frames(TINY_FRAMES, 64, 64, seed) for seed in range(2)]).permute(0, 4, 1, 2, 3)  # (2, 3, T, 64, 64)
    pixels = clips.float() / 127.5 - 1.0
    compiled = LatentEncoder(model, "fp32", InferenceOptions(batch_clips=2, compile=True))
    eager = LatentEncoder(model, "fp32")
    with torch.inference_mode():
        results = [encoder.predict_step({"pixels": pixels[:count]}, 0)["latents"]
                   for encoder in (compiled, eager) for count in (2, 1)]  # a full and a partial batch
    for name in LATENT_NAMES:
        torch.testing.assert_close(results[0][name], results[2][name], atol=FP32_TOLERANCE, rtol=0)
        torch.testing.assert_close(results[1][name], results[3][name], atol=FP32_TOLERANCE, rtol=0)
    assert backend.graphs == graphs
    assert dict(compiled.named_modules()).keys() == dict(eager.named_modules()).keys()  # nothing registered twice


def _failing_compile(function, **kwargs):
    raise RuntimeError("no C++ compiler found\n(a second line the warning leaves out)")


def _compile_that_fails_when_run(function, **kwargs):
    def compiled(*args):
        raise RuntimeError("inductor: lowering failed")
    return compiled


def _compile_that_gives_nan(function, **kwargs):
    def compiled(*args):
        return tuple(torch.full_like(output, float("nan")) for output in function(*args))
    return compiled


@pytest.mark.parametrize("broken_compile, warning", [
    (_failing_compile, "--compile: torch.compile failed (RuntimeError: no C++ compiler found); running eagerly"),
    (_compile_that_fails_when_run, "--compile: torch.compile failed (RuntimeError: inductor: lowering failed); running eagerly"),
    (_compile_that_gives_nan, "--compile: the compiled encode differs from eager on the first batch (non-finite values "
                              "where eager's are finite, or the reverse); running eagerly"),
])
def test_a_failed_or_wrong_compile_warns_once_and_runs_eagerly(monkeypatch, caplog, video, broken_compile, warning):
    torch.manual_seed(0)
    model = load_model(TINY_CONFIG)  # a model without a compiled runner yet
    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="vidtwin.inference.compiled"):
        compiled = reconstruct_video(model, video, fps=8.0, batch_clips=2, dtype="fp32", compile=True).video
    eager = reconstruct_video(model, video, fps=8.0, batch_clips=2, dtype="fp32").video
    assert torch.equal(compiled, eager)
    assert [record.getMessage() for record in caplog.records] == [warning]  # one line, once for encode and decode


def test_the_check_against_eager_allows_rounding_and_catches_wrong_results():
    eager = (torch.linspace(-2, 2, 100), torch.linspace(0, 30, 10))
    assert compiled_mismatch(tuple(t + 1e-4 for t in eager), eager, reduced_precision=False) is None
    assert compiled_mismatch(tuple(t + 0.02 for t in eager), eager, reduced_precision=True) is None  # bf16 steps
    assert compiled_mismatch((eager[0] + 0.02, eager[1]), eager, reduced_precision=False) == "max |difference| 0.02"
    assert compiled_mismatch((eager[0] * -1, eager[1]), eager, reduced_precision=True) == "max |difference| 4"
    broken = eager[1].clone()
    broken[3] = float("nan")
    assert "non-finite" in compiled_mismatch((eager[0], broken), eager, reduced_precision=True)


def test_batches_are_fixed_fresh_copies():
    view = torch.arange(24.0).reshape(4, 6)[:, ::2]  # (4, 3), not contiguous
    batch = fixed_batch(view[:3], 5)
    assert batch.shape == (5, 3) and batch.is_contiguous()
    assert torch.equal(batch[:3], view[:3]) and torch.equal(batch[3:], torch.zeros(2, 3))
    runner = CompiledAutoencoder(torch.nn.Linear(1, 1), batch_size=2)
    with pytest.raises(ValueError, match="batch of 3 inputs .* batches of 2"):
        runner.encode(torch.zeros(3, 3, 8, 64, 64))


def test_the_flag_reaches_the_options_of_the_commands_that_run_the_autoencoder(tmp_path):
    common = ["--output", str(tmp_path / "out"), "--config", str(TINY_CONFIG), "--ckpt", "x.pt", "--dtype", "fp32", "--quiet"]
    for command in ("reconstruct", "encode", "decode", "encode-dataset"):
        argv = [command, "--latents" if command == "decode" else "--input", "in.mp4", *common]
        args = build_parser(argv).parse_args(argv + ["--compile"])
        assert inference_options(args).compile
        args = build_parser(argv).parse_args(argv)
        assert not inference_options(args).compile  # off by default
    assert InferenceOptions().compile is False
    model = torch.nn.Linear(1, 1)
    assert autoencoder_calls(model, InferenceOptions()) is model  # eager: the model's own calls


def test_encode_dataset_hands_the_flag_to_its_job_and_generate_does_not_offer_it(model, tmp_path, monkeypatch, capsys):
    from vidtwin.cli import main
    from vidtwin.data.video_io import write_video
    from vidtwin.inference import encode_dataset

    jobs = []

    def recording_run_job(job, *args, **kwargs):
        jobs.append(job)
        raise SystemExit(0)  # the compiled encoder itself is tested above; only what reaches the job matters here

    monkeypatch.setattr(encode_dataset, "run_job", recording_run_job)
    write_video(tmp_path / "videos" / "clip.mp4", _frames(8, 64, 64).numpy(), fps=8)
    model.save_pretrained(tmp_path / "model")
    argv = ["encode-dataset", "--ckpt", str(tmp_path / "model"), "--input", str(tmp_path / "videos"),
            "--output", str(tmp_path / "latents"), "--compile", "--quiet"]
    with pytest.raises(SystemExit):
        main(argv)
    assert [job.compile for job in jobs] == [True]
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--generator", "g", "--output", str(tmp_path / "samples"), "--compile"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --compile" in capsys.readouterr().err
