"""scripts/benchmark.py: the FLOPs of a round trip and each row's share of the matmul rate of its
dtype. The matmul rate is stubbed: nothing here is timed."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from conftest import REPO, TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def inference_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    benchmark = importlib.import_module("scripts.benchmark")
    bench_matmul = importlib.import_module("scripts.bench_matmul")

    def measured(device, dtype, size=None, warmup=3, repeats=10):
        return {"dtype": dtype, "size": 2048, "repeats": repeats, "tflops_best": 0.25, "tflops_median": 0.25,
                "seconds_best": 1.0}

    monkeypatch.setattr(bench_matmul, "measure_matmul_rate", measured)
    return benchmark


def test_the_round_trip_flops_are_those_the_training_counter_counts(inference_benchmark, tiny_model):
    flop_counter = importlib.import_module("scripts.bench_matmul").flop_counter

    clips = torch.rand(1, 3, *tiny_model.input_size) * 2 - 1
    with flop_counter() as counter:  # the same formulas, with autograd on (the counter's module tracker needs it)
        tiny_model.decode(tiny_model.encode(clips))
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    assert counts["aten._scaled_dot_product_flash_attention_for_cpu"] > 0
    assert inference_benchmark.count_round_trip_flops(tiny_model, clips) == counter.get_total_flops()


def test_each_row_shows_its_share_of_the_matmul_rate(inference_benchmark, tmp_path, capsys):
    report = tmp_path / "inference.json"
    assert inference_benchmark.main(["--config", str(TINY_CONFIG), "--device", "cpu", "--dtypes", "fp32", "--warmup", "0",
                           "--iters", "1", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    [row] = data["results"]
    assert row["matmul_tflops"] == 0.25
    assert row["matmul_share"] == pytest.approx(row["achieved_tflops"] / 0.25)
    assert row["achieved_tflops"] == pytest.approx(data["round_trip_tflop_per_clip"] / row["round_trip_s"])
    assert [(m["dtype"], m["when"]) for m in data["matmul_rates"]] == [("fp32", "before"), ("fp32", "after")]
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if text.startswith("sdpa"))
    assert line.split()[-2:] == [f"{row['achieved_tflops']:.3f}", f"{row['matmul_share']:.0%}"]
