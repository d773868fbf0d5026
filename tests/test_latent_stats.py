"""`vidtwin latent-stats`: per-channel statistics of a latent dataset against a direct computation,
streaming in any batch size, in the file the generator's normalization reads."""

import json

import pytest
import torch

from vidtwin.cli import main
from vidtwin.diffusers.layout import PackedLatentLayout
from vidtwin.generation import LatentNormalization
from vidtwin.latents import LatentDataset
from vidtwin.latents.latent_file import stored_tokens_to_codes
from vidtwin.latents.stats import (
    ChannelMoments, LatentStatisticsError, compute_latent_statistics, read_latent_statistics,
)
from vidtwin.models.config import LATENT_NAMES, VidTwinConfig

from conftest import DATA

KL_DATASET = DATA / "latent_dataset_f10a1ce"
FSQ_DATASET = DATA / "legacy" / "fsq_dataset"


def all_latents(dataset: LatentDataset) -> dict:
    """Every clip's latents stacked, FSQ tokens as codes: each (clips, C, ...)."""
    stacked = {name: torch.stack([dataset[i][name] for i in range(len(dataset))]) for name in LATENT_NAMES}
    if dataset.codebook is not None:
        stacked = {name: stored_tokens_to_codes(name, value, dataset.codebook) for name, value in stacked.items()}
    return stacked


def direct(values: torch.Tensor, mask: torch.Tensor = None):
    """Per-channel mean and population std of (clips, C, ...) in float64, over ``mask`` if given."""
    flat = values.double().transpose(0, 1).reshape(values.shape[1], -1)  # (C, clips * ...)
    if mask is None:
        return flat.mean(1), flat.std(1, unbiased=False)
    keep = mask.transpose(0, 1).reshape(values.shape[1], -1)
    means = torch.stack([row[k].mean() for row, k in zip(flat, keep)])
    stds = torch.stack([row[k].std(unbiased=False) for row, k in zip(flat, keep)])
    return means, stds


@pytest.mark.parametrize("root", [KL_DATASET, FSQ_DATASET], ids=["kl", "fsq"])
def test_statistics_equal_a_direct_computation_in_any_batch_size(root):
    dataset = LatentDataset(root)
    latents = all_latents(dataset)
    stats = compute_latent_statistics(dataset, batch_size=1)
    for name in LATENT_NAMES:
        mean, std = direct(latents[name])
        torch.testing.assert_close(torch.tensor(stats["mean"][name], dtype=torch.float64), mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.tensor(stats["std"][name], dtype=torch.float64), std, rtol=0, atol=1e-12)
    layout = PackedLatentLayout(VidTwinConfig.from_dict(dataset.config))
    packed = layout.pack(latents)  # (clips, C, N)
    mean, std = direct(packed, layout.valid_mask().expand_as(packed))
    torch.testing.assert_close(torch.tensor(stats["packed"]["mean"], dtype=torch.float64), mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.tensor(stats["packed"]["std"], dtype=torch.float64), std, rtol=0, atol=1e-12)
    whole = compute_latent_statistics(dataset, batch_size=64)
    for name in LATENT_NAMES:  # one batch of every clip gives what one clip per batch gave
        assert whole["mean"][name] == pytest.approx(stats["mean"][name], rel=1e-12, abs=1e-15)
        assert whole["std"][name] == pytest.approx(stats["std"][name], rel=1e-12, abs=1e-15)


def test_moments_merge_exactly_across_batches():
    values = torch.randn(10, 3, 5, dtype=torch.float64) * 1e3 + 1e6  # a large offset: naive sums lose digits
    merged = ChannelMoments()
    for part in values.split([1, 4, 5]):
        merged.update(part)
    mean, std = direct(values)
    torch.testing.assert_close(merged.mean, mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(merged.std(), std, rtol=1e-10, atol=0)


def test_the_command_writes_a_file_the_generator_normalization_reads(tmp_path, capsys):
    output = tmp_path / "stats.json"
    assert main(["latent-stats", str(KL_DATASET), "--output", str(output), "--no-progress"]) == 0
    stats = read_latent_statistics(output)
    assert stats["clips"] == 2 and stats["weights_fingerprint"] == LatentDataset(KL_DATASET).manifest["identity"]["weights_fingerprint"]
    normalization = LatentNormalization.from_dict(json.loads(output.read_text()))
    normalized = normalization.normalize(all_latents(LatentDataset(KL_DATASET)))
    for name in LATENT_NAMES:
        mean, std = direct(normalized[name])
        torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-5)
        torch.testing.assert_close(std, torch.ones_like(std), rtol=0, atol=1e-5)
    before = output.read_text()
    assert main(["latent-stats", str(KL_DATASET), "--output", str(output), "--no-progress"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and output.read_text() == before
    assert main(["latent-stats", str(KL_DATASET), "--output", str(output), "--no-progress", "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name != "stats.json"]  # no temporary or claim file left


def test_the_command_refuses_a_folder_that_is_not_a_dataset_and_a_file_that_is_not_statistics(tmp_path, capsys):
    assert main(["latent-stats", str(tmp_path), "--output", str(tmp_path / "s.json")]) == 2
    assert "not a latent dataset" in capsys.readouterr().err and not (tmp_path / "s.json").exists()
    (tmp_path / "other.json").write_text(json.dumps({"mean": {}}))
    with pytest.raises(LatentStatisticsError, match="not a file of `vidtwin latent-stats`"):
        read_latent_statistics(tmp_path / "other.json")
