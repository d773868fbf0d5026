"""scripts/benchmark_train.py and scripts/bench_matmul.py: the FLOPs they count, the shares they
compute, the profile's kinds of work, and the table and JSON they write. Nothing here is timed: the
matmul rate is stubbed where a share is checked, and the runs are one update long."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    benchmark_train = importlib.import_module("scripts.benchmark_train")
    bench_matmul = importlib.import_module("scripts.bench_matmul")

    return SimpleNamespace(train=benchmark_train, peak=bench_matmul)


@pytest.fixture
def fixed_matmul_rate(scripts, monkeypatch):
    """Every matmul 'runs' at 0.5 TFLOP/s (fp32) or 2 TFLOP/s (bf16): shares without timing."""
    def measured(device, dtype, size=None, warmup=3, repeats=10):
        rate = {"fp32": 0.5, "bf16": 2.0}[dtype]
        return {"dtype": dtype, "size": size or 2048, "repeats": repeats, "tflops_best": rate,
                "tflops_median": rate, "seconds_best": 1.0}

    monkeypatch.setattr(scripts.peak, "measure_matmul_rate", measured)


def test_cpu_attention_is_counted_forward_and_backward(scripts):
    batch, heads, length, dim = 2, 3, 16, 8
    query = torch.randn(batch, heads, length, dim, requires_grad=True)
    with FlopCounterMode(display=False) as torch_counter:  # torch's own table lacks the CPU kernel
        F.scaled_dot_product_attention(query, query, query).sum().backward()
    assert torch_counter.get_total_flops() == 0
    with scripts.peak.flop_counter() as counter:
        F.scaled_dot_product_attention(query, query, query, is_causal=True).sum().backward()
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    product = 2 * batch * heads * length * length * dim  # one (length x dim) @ (dim x length) per head
    assert counts["aten._scaled_dot_product_flash_attention_for_cpu"] == 2 * product  # QK^T, then AV; causal in full
    assert counts["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == 5 * product  # recomputed scores, 4 grads


def test_the_precision_picks_the_matching_matmul(scripts):
    pick = scripts.peak.matmul_dtype_of_precision
    assert [pick(p) for p in ("32", "32-true", "bf16-mixed", "bf16-true", "16-mixed")] == [
        "fp32", "fp32", "bf16", "bf16", "fp16"]


def test_matmul_peak_is_the_best_at_the_rows_thread_count(scripts, monkeypatch):
    rates = iter([0.3, 0.5, 0.4, 6.0, 0.9])

    def measured(device, dtype, size=None, warmup=3, repeats=10):
        return {"dtype": dtype, "size": 8, "repeats": repeats, "tflops_best": next(rates)}

    monkeypatch.setattr(scripts.peak, "measure_matmul_rate", measured)
    matmul = scripts.peak.MatmulRates("cpu")
    threads = torch.get_num_threads()
    matmul.ensure("fp32")  # 0.3
    matmul.ensure("fp32")  # measured already at this thread count: nothing
    matmul.measurements.append({"dtype": "fp32", "threads": threads + 1, "tflops_best": 5.0, "when": "before"})
    matmul.measure("bf16")  # 0.5
    matmul.remeasure()  # in the order first measured: fp32 0.4, fp32 at the other count 6.0, bf16 0.9
    assert matmul.peak("fp32") == pytest.approx(0.4) and matmul.peak("bf16") == pytest.approx(0.9)
    assert matmul.peak("fp32", threads + 1) == 6.0 and matmul.peak("fp16") is None
    assert [m["threads"] for m in matmul.measurements if m["when"] == "after"] == [threads, threads + 1, threads]
    assert torch.get_num_threads() == threads


def test_an_update_of_the_quick_start_counts_its_flops_and_writes_table_and_json(
        scripts, fixed_matmul_rate, tmp_path, capsys):
    from vidtwin.config import build_from_config, load_config

    output = tmp_path / "train.json"
    assert scripts.train.main(["--base", "tiny", "--steps", "1", "--warmup", "1", "--threads", "1", "--gan", "config",
                               "--output", str(output)]) == 0
    [row] = json.loads(output.read_text())
    # The update's FLOPs are those of the autoencoder's forward and backward (no discriminator, no
    # perceptual loss in the quick start): counted here on their own, they agree to the FLOP.
    module = build_from_config(load_config(["tiny"]).model, "model", scripts.train.TRAINED_MODULE)
    with scripts.peak.flop_counter() as counter:
        reconstruction, _ = module.autoencoder(torch.rand(2, 3, *module.autoencoder.input_size) * 2 - 1, sample=True)
        reconstruction.mean().backward()
    assert row["flops_per_update"] == counter.get_total_flops() > 0
    assert row["flops_per_timed_update"] == [row["flops_per_update"]]
    assert sum(row["flops_by_op"].values()) == row["flops_per_update"]
    assert row["flops_by_op"]["aten._scaled_dot_product_flash_attention_for_cpu_backward"] > 0
    assert (row["model"], row["precision"], row["batch_size"], row["gan_active"]) == ("autoencoder", "32", 2, False)
    assert row["achieved_tflops"] == pytest.approx(row["flops_per_update"] / row["update_s_median"] / 1e12, rel=1e-3)
    assert row["matmul_tflops"] == 0.5 and row["matmul_share"] == pytest.approx(row["achieved_tflops"] / 0.5)
    assert [m["when"] for m in row["matmul_rates"]] == ["before", "after"]
    table = capsys.readouterr().out
    line = next(text for text in table.splitlines() if text.startswith("autoencoder"))
    assert line.split()[-3:] == [f"{row['matmul_tflops']:.3g}", "fp32", f"{row['matmul_share']:.1%}"]
    assert f"{row['flops_per_update'] / 1e9:.2f}" in line.split()

    scripts.train.write_records(str(output), [{"model": "another"}], append=True)
    assert [r["model"] for r in json.loads(output.read_text())] == ["autoencoder", "another"]


def test_a_generator_update_is_profiled_by_kind_of_work(scripts, fixed_matmul_rate, labelled_latents, tmp_path):
    profile, output = tmp_path / "profile.txt", tmp_path / "generator.json"
    assert scripts.train.main([
        "--base", "generator/tiny_digits", "--data", "config", f"data.params.root={labelled_latents / 'latents'}",
        "model.params.autoencoder=null", "model.params.generator.hidden_size=32", "model.params.generator.depth=1",
        "model.params.generator.num_heads=2", "data.params.batch_size=4", "--steps", "1", "--warmup", "1",
        "--threads", "1", "--profile", str(profile), "--profile-steps", "1",
        "--output", str(output)]) == 0
    [row] = json.loads(output.read_text())
    assert (row["model"], row["batch_size"], row["flops_per_update"] > 0) == ("generator", 4, True)
    report = row["profile"]
    assert report["updates"] == 1 and set(report["share"]) == set(scripts.train.PROFILE_GROUPS)
    assert sum(report["seconds_per_update"].values()) == pytest.approx(report["wall_s"], rel=1e-6)
    # The forward and backward run inside the optimizer's step (Lightning's closure), and are not its work.
    ops = report["ops_per_update"]
    assert min(ops["matmul and convolution"], ops["attention"], ops["other ops"], ops["optimizer"]) > 0
    assert ops["optimizer"] < ops["matmul and convolution"] + ops["other ops"]
    assert ops["data loading"] > 0 and ops["outside ops"] == 0
    text = profile.read_text()
    assert text.startswith("== generator (generator/tiny_digits), precision 32, batch 4")
    assert "share of FLOPs" in text and "top ops by self CPU time" in text


def test_a_failed_synthetic_encoding_leaves_no_dataset_to_reuse(scripts, monkeypatch, tmp_path):
    """A failed encoding writes a manifest too; a later run would reuse it and find no clips."""
    import vidtwin.cli

    def failing_encode(argv):
        output = tmp_path / "world_latents"
        assert argv[argv.index("--output") + 1] == str(output)
        output.mkdir()
        (output / "manifest.json").write_text("{}")
        return 1

    def no_videos(folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.csv").write_text("videos,label,actions\n")

    monkeypatch.setattr(vidtwin.cli, "main", failing_encode)
    monkeypatch.setattr(scripts.train, "synthetic_action_videos", no_videos)
    with pytest.raises(RuntimeError, match="encoding the synthetic latent dataset for the world model failed"):
        scripts.train.synthetic_latent_dataset("world", tmp_path)
    assert not (tmp_path / "world_latents").exists()


def _event(name, parent=None):
    return SimpleNamespace(name=name, cpu_parent=parent)


def test_ops_are_the_innermost_scopes(scripts):
    group = scripts.train.profile_group
    step = _event("Optimizer.step#AdamW.step", _event("[LightningModule]M.optimizer_step"))
    forward = _event("[Strategy]SingleDeviceStrategy.training_step", step)
    linear = _event("aten::linear", forward)
    assert group(_event("aten::mm", linear)) == "matmul and convolution"
    assert group(_event("aten::t", linear)) == "matmul and convolution"
    assert group(_event("aten::mul_", step)) == "optimizer"
    assert group(_event("aten::gelu", forward)) == "other ops"
    assert group(forward) == "autograd and scopes"
    backward = _event("autograd::engine::evaluate_function: X", _event("[Strategy]SingleDeviceStrategy.backward", step))
    assert group(_event("aten::_scaled_dot_product_flash_attention_for_cpu_backward", backward)) == "attention"
    loader = _event("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__")
    assert group(_event("aten::stack", loader)) == "data loading"
