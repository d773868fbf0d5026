"""The latent generator (vidtwin.generation): packing, training signal, sampler, normalization, files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vidtwin.generation import (
    GENERATOR_SIZES,
    GeneratorConfig,
    GeneratorConfigError,
    GeneratorSampleError,
    LatentGenerator,
    LatentNormalization,
    LatentPacking,
    guided_velocity,
    solve_flow,
    transformer_flops,
)
from vidtwin.generation import transformer as transformer_module
from vidtwin.state_dict_io import CheckpointError

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

PUBLISHED_CONFIG = REPO / "configs" / "vidtwin.yaml"

# Odd grids everywhere: 7x7 structure with patch 2, 5 query frames, 9 frames, dynamics of lengths 7 and 5.
ODD_SHAPES = {"structure": (3, 5, 7, 7), "dynamics_x": (2, 9, 7), "dynamics_y": (2, 9, 5)}


def random_latents(shapes, batch, seed=0, mean=0.0, std=1.0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, *shape, generator=generator) * std + mean for name, shape in shapes.items()}


def tiny_generator(num_classes=3, **settings) -> LatentGenerator:
    torch.manual_seed(0)
    return LatentGenerator(GeneratorConfig.from_preset("tiny", num_classes=num_classes, **settings))


def with_random_weights(generator: LatentGenerator) -> LatentGenerator:
    """The zero-initialized heads and gates make a new model's velocity 0 for every input; give
    every weight a random value so that the velocity depends on the input, time and class."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.normal_(0.0, 0.1)
    return generator.eval()


# ---------------------------------------------------------------------------- packing
@pytest.mark.parametrize("structure_patch,dynamics_patch", [((2, 2, 2), (2, 2)), ((1, 1, 1), (1, 1)), ((3, 2, 4), (4, 3))])
def test_pack_unpack_round_trips_exactly_on_odd_grids(structure_patch, dynamics_patch):
    packing = LatentPacking(ODD_SHAPES, structure_patch, dynamics_patch)
    latents = random_latents(ODD_SHAPES, batch=2)
    tokens = packing.pack(latents)
    for part, group in zip(tokens, packing.groups):
        assert part.shape == (2, group.num_tokens, group.token_dim)
    restored = packing.unpack(tokens)
    for name in ODD_SHAPES:
        assert torch.equal(restored[name], latents[name]), name


def test_packing_layout_follows_the_paper():
    packing = LatentPacking(ODD_SHAPES, (2, 2, 2), (2, 2))
    structure, dynamics = packing.groups
    assert structure.grid == (3, 4, 4)  # Q 5 -> 6, 7x7 -> 8x8, patch 2
    assert dynamics.volume == (2, 1, 9, 12)  # one frame: T rows, w_D + h_D columns
    assert dynamics.grid == (1, 5, 6)
    latents = random_latents(ODD_SHAPES, batch=1)
    structure_tokens, dynamics_tokens = packing.pack(latents)
    # The first structure token is the patch at the origin, channel-major.
    assert torch.equal(structure_tokens[0, 0], latents["structure"][0, :, 0:2, 0:2, 0:2].reshape(-1))
    # The dynamics image is dynamics_x then dynamics_y along the pooled axis: the last column patch
    # of the first row holds dynamics_y's last values and one padded row.
    last = dynamics_tokens[0, 5].reshape(2, 2, 2)  # (C, rows, columns)
    assert torch.equal(last[:, :, :], latents["dynamics_y"][0, :, 0:2, 3:5])
    # Padding is zero, and the mask finds exactly the real values.
    masks = packing.valid_mask()
    real = sum(int(mask.sum()) for mask in masks)
    assert real == sum(torch.Size(shape).numel() for shape in ODD_SHAPES.values())
    for part, mask in zip(packing.pack(latents), masks):
        assert torch.all(part[~mask.expand_as(part)] == 0)


def test_integer_tokens_pack_with_a_channel_axis_of_one():
    """The world model's use: FSQ tokens (B, Q, h, w), (B, T, w), (B, T, h) with patch 1."""
    token_shapes = {name: (1, *shape[1:]) for name, shape in ODD_SHAPES.items()}
    packing = LatentPacking(token_shapes, (1, 1, 1), (1, 1))
    tokens = {name: torch.randint(0, 1000, (2, *shape)) for name, shape in token_shapes.items()}
    sequence = torch.cat(packing.pack(tokens), dim=1)  # (B, N, 1)
    assert sequence.dtype == torch.int64 and sequence.shape == (2, 5 * 7 * 7 + 9 * 12, 1)
    restored = packing.unpack(packing.split(sequence))
    assert all(torch.equal(restored[name], tokens[name]) for name in tokens)


def test_pack_names_a_latent_of_the_wrong_shape():
    packing = LatentPacking(ODD_SHAPES, (2, 2, 2), (2, 2))
    latents = random_latents(ODD_SHAPES, batch=1)
    latents["dynamics_y"] = latents["dynamics_y"][..., :4]
    with pytest.raises(ValueError, match="dynamics_y has shape"):
        packing.pack(latents)


# ---------------------------------------------------------------------------- training signal
def test_a_tiny_generator_overfits_one_batch():
    generator = tiny_generator(num_classes=2, class_dropout=0.0)
    latents = random_latents(generator.config.latent_shapes, batch=4, seed=3)
    labels = torch.tensor([0, 1, 0, 1])
    optimizer = torch.optim.AdamW(generator.parameters(), lr=3e-3)
    random = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        loss = generator.training_loss(latents, labels, generator=random)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert first > 1.5  # velocity data - noise of unit-variance data and noise: about 2 per value
    assert last < 0.5 * first, (first, last)


def test_a_tiny_generator_learns_to_follow_its_class():
    """Two classes whose latents sit at -2 and +2 (std 0.3): samples follow their class, more so
    with guidance, and unconditional samples fall on either side."""
    generator = tiny_generator(num_classes=2, class_dropout=0.2)
    shapes = generator.config.latent_shapes
    random = torch.Generator().manual_seed(0)

    def batch(size):
        labels = torch.randint(0, 2, (size,), generator=random)
        side = (labels * 4 - 2).float()
        return {name: torch.randn(size, *shape, generator=random) * 0.3 + side.view(-1, *[1] * len(shape))
                for name, shape in shapes.items()}, labels

    generator.set_normalization(LatentNormalization.fit(batch(64)[0] for _ in range(4)))
    optimizer = torch.optim.AdamW(generator.parameters(), lr=2e-3)
    for _ in range(250):
        loss = generator.training_loss(*batch(32), generator=random)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generator.eval()
    labels = torch.tensor([0] * 16 + [1] * 16)

    def right_side(guidance):
        means = generator.sample(labels, steps=16, guidance=guidance, seed=0, progress=False)["structure"].mean(dim=(1, 2, 3, 4))
        return ((means > 0) == (labels == 1)).float().mean().item()

    assert right_side(2.0) >= 0.9
    assert right_side(2.0) >= right_side(1.0) >= 0.75
    assert 0.2 <= right_side(0.0) <= 0.8  # the unconditional model ignores the class


def test_every_parameter_gets_a_gradient():
    generator = with_random_weights(tiny_generator()).train()
    generator.training_loss(random_latents(generator.config.latent_shapes, batch=3), torch.tensor([0, 1, 2])).backward()
    missing = [name for name, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_class_dropout_replaces_a_share_of_the_labels():
    generator = tiny_generator(num_classes=5, class_dropout=0.25)
    labels = generator._training_labels(torch.zeros(4000, dtype=torch.long), 4000, "cpu", torch.Generator().manual_seed(0))
    dropped = (labels == generator.null_label).float().mean().item()
    assert 0.22 < dropped < 0.28
    assert set(labels.unique().tolist()) == {0, generator.null_label}


# ---------------------------------------------------------------------------- sampling
def test_sampling_is_deterministic_for_a_seed():
    generator = with_random_weights(tiny_generator())
    first = generator.sample([0, 1, 2], steps=4, seed=7, progress=False)
    again = generator.sample([0, 1, 2], steps=4, seed=7, progress=False)
    other = generator.sample([0, 1, 2], steps=4, seed=8, progress=False)
    for name, shape in generator.config.latent_shapes.items():
        assert first[name].shape == (3, *shape)
        assert torch.equal(first[name], again[name])
        assert not torch.allclose(first[name], other[name])


def test_guidance_one_is_the_conditional_model_and_zero_the_unconditional_one():
    generator = with_random_weights(tiny_generator())
    labels = [0, 2]
    calls = []
    original = generator.velocity

    def counted(x, t, classes):
        calls.append(classes.tolist())
        return original(x, t, classes)

    generator.velocity = counted
    conditional = generator.sample(labels, steps=3, guidance=1.0, seed=1, progress=False)
    assert calls == [labels] * 3  # one pass per step, with the classes
    calls.clear()
    unconditional = generator.sample(labels, steps=3, guidance=0.0, seed=1, progress=False)
    assert calls == [[3, 3]] * 3  # one pass per step, with the null label
    no_labels = generator.sample(None, num_samples=2, steps=3, seed=1, progress=False)
    for name in conditional:
        assert torch.equal(unconditional[name], no_labels[name])
        assert not torch.allclose(conditional[name], unconditional[name])


def test_guidance_extrapolates_from_the_unconditional_velocity():
    def velocity(x, t, labels):  # conditional: 1 per value; unconditional (label 9): 3 per value
        return [torch.where(labels[:, None, None] == 9, 3.0, 1.0).expand_as(part) for part in x]

    x = [torch.zeros(2, 4, 3)]
    guided = guided_velocity(velocity, x, torch.zeros(2), torch.tensor([0, 1]), null_label=9, guidance=4.0)
    assert torch.allclose(guided[0], torch.full((2, 4, 3), 3.0 + 4.0 * (1.0 - 3.0)))


def test_heun_is_exact_where_euler_is_not_on_a_linear_velocity():
    def velocity(x, t):  # dx/dt = 2t: x(1) = x(0) + 1
        return [torch.ones_like(part) * 2 * t[:, None, None] for part in x]

    start = [torch.zeros(1, 2, 2)]
    assert torch.allclose(solve_flow(velocity, start, steps=4, method="heun", progress=False)[0], torch.ones(1, 2, 2))
    assert torch.allclose(solve_flow(velocity, start, steps=4, method="euler", progress=False)[0], torch.full((1, 2, 2), 0.75))


def test_classes_are_named_or_numbered():
    generator = tiny_generator(class_names=["3-left", "3-right", "7-up"])
    assert generator.class_labels(["7-up", 0, "1"]) == [2, 0, 1]
    with pytest.raises(GeneratorSampleError, match=r"unknown class '9-down'; known classes: 3-left, 3-right, 7-up"):
        generator.class_labels(["9-down"])
    with pytest.raises(GeneratorSampleError, match=r"unknown class '3'; known classes: 3-left"):
        generator.class_labels([3])
    with pytest.raises(GeneratorSampleError, match="unconditional"):
        tiny_generator(num_classes=0).class_labels(["a"])


def test_sampling_names_bad_labels():
    with pytest.raises(GeneratorSampleError, match=r"class labels must be in \[0, 3\)"):
        tiny_generator().sample([5], steps=1, progress=False)
    with pytest.raises(GeneratorSampleError, match="unconditional"):
        tiny_generator(num_classes=0).sample([0], steps=1, progress=False)


# ---------------------------------------------------------------------------- normalization
class OnePassBatches:
    """Batches that can be iterated once only, to show the statistics take one pass."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        assert self.passes == 1, "the statistics iterated the batches twice"
        return iter(self.batches)


SCALED_MEAN = {"structure": [100.0, -5.0, 0.0], "dynamics_x": [0.5, 2.0], "dynamics_y": [-3.0, 1e-3]}
SCALED_STD = {"structure": [10.0, 0.01, 1.0], "dynamics_x": [3.0, 0.2], "dynamics_y": [50.0, 2.0]}


def scaled_batches(count=5, batch=7):
    batches = []
    for index in range(count):
        latents = random_latents(ODD_SHAPES, batch=batch, seed=index)
        for name, values in latents.items():
            shape = (1, -1) + (1,) * (values.dim() - 2)
            mean, std = torch.tensor(SCALED_MEAN[name]).reshape(shape), torch.tensor(SCALED_STD[name]).reshape(shape)
            latents[name] = values * std + mean
        batches.append(latents)
    return batches


def test_normalization_statistics_are_exact_in_one_pass_and_round_trip():
    batches = scaled_batches()
    source = OnePassBatches(batches)
    stats = LatentNormalization.fit(source)
    assert source.passes == 1
    for name in ODD_SHAPES:
        everything = torch.cat([b[name] for b in batches]).double().transpose(0, 1).reshape(len(SCALED_MEAN[name]), -1)
        assert torch.allclose(torch.tensor(stats.mean[name], dtype=torch.float64), everything.mean(1), rtol=1e-9, atol=1e-9)
        assert torch.allclose(torch.tensor(stats.std[name], dtype=torch.float64), everything.std(1, unbiased=False), rtol=1e-9)
    normalized = stats.normalize(batches[0])
    restored = stats.denormalize(normalized)
    for name in ODD_SHAPES:
        channel_means = normalized[name].transpose(0, 1).reshape(normalized[name].shape[1], -1).mean(1)
        assert channel_means.abs().max() < 0.5  # one batch of five: near 0, not exactly
        assert torch.allclose(restored[name], batches[0][name], rtol=1e-5, atol=1e-4 * max(SCALED_STD[name]))
    assert LatentNormalization.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def test_a_model_whose_velocity_is_the_data_direction_samples_latents_in_the_datasets_scale():
    """With the exact velocity towards one data point d, v = (d - x_t) / (1 - t), Euler lands on d:
    the sampler's output must be that dataset clip in the autoencoder's scale, not its normalized form."""
    batches = scaled_batches(count=3, batch=4)
    stats = LatentNormalization.fit(batches)
    config = GeneratorConfig.from_preset("tiny", latent_shapes=ODD_SHAPES, structure_patch_size=[2, 2, 2],
                                         normalization=stats.to_dict())
    generator = LatentGenerator(config)
    real = batches[1]  # four dataset clips, values around 100 +- 10, -5 +- 0.01, ...
    targets = generator.packing.pack(stats.normalize(real))  # what the model sees in training

    def data_direction(x, t, labels):
        return [(target - part) / (1 - t[:, None, None]) for target, part in zip(targets, x)]

    generator.velocity = data_direction
    samples = generator.sample(None, num_samples=4, steps=8, method="euler", seed=0, progress=False)
    for name, values in samples.items():
        scale = max(SCALED_STD[name])
        assert torch.allclose(values, real[name], rtol=1e-4, atol=1e-4 * scale), name


# ---------------------------------------------------------------------------- files and sizes
def test_save_pretrained_round_trips_strictly(tmp_path):
    generator = with_random_weights(tiny_generator(class_names=["a", "b", "c"]))
    normalization = LatentNormalization.identity(generator.packing.latent_shapes)
    normalization.mean["structure"][0] = 4.0
    generator.set_normalization(normalization)
    generator.save_pretrained(tmp_path / "gen")
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = LatentGenerator.from_pretrained(tmp_path / "gen")
    assert loaded.config == generator.config and loaded.normalization.mean["structure"][0] == 4.0
    first = generator.sample([0, 2], steps=2, seed=3, progress=False)
    second = loaded.sample([0, 2], steps=2, seed=3, progress=False)
    assert all(torch.equal(first[name], second[name]) for name in first)

    # The statistics travel in the state dict too (a Lightning checkpoint holds no config.json).
    fresh = LatentGenerator(GeneratorConfig.from_dict({**generator.config.to_dict(), "normalization": None}))
    assert fresh.normalization.mean["structure"][0] == 0.0
    fresh.load_state_dict(generator.state_dict())
    assert fresh.normalization == generator.normalization

    weights = load_file(str(tmp_path / "gen" / "model.safetensors"))
    weights.pop("tokens.type_embedding")
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, str(tmp_path / "gen" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys: tokens\.type_embedding.*unexpected keys: extra\.weight"):
        LatentGenerator.from_pretrained(tmp_path / "gen")


def test_from_pretrained_refuses_an_autoencoder_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format": "vidtwin", "format_version": 1, "autoencoder": {}}))
    with pytest.raises(CheckpointError, match="not a VidTwin generator config"):
        LatentGenerator.from_pretrained(tmp_path)


def test_size_presets_include_the_papers_generator_and_the_flops_stand_in():
    paper = GeneratorConfig.from_preset("paper")
    assert (paper.depth, paper.hidden_size) == (18, 1152)
    stand_in = GeneratorConfig.from_preset("dit-flops")
    assert (stand_in.depth, stand_in.num_heads, stand_in.hidden_size, stand_in.hidden_size * stand_in.mlp_ratio) == (6, 8, 512, 2048)
    assert stand_in.structure_patch_size == [2, 2, 2] and stand_in.dynamics_patch_size == [2, 2]
    with pytest.raises(GeneratorConfigError, match="unknown generator size"):
        GeneratorConfig.from_preset("huge")
    with pytest.raises(GeneratorConfigError, match="unknown generator setting"):
        GeneratorConfig.from_dict({"layers": 3})
    assert set(GENERATOR_SIZES) >= {"tiny", "paper", "dit-flops"}


def test_flops_formula_matches_the_counted_forward_pass(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    def explicit_attention(q, k, v, attn_mask=None):  # the counter does not see inside the CPU SDPA kernel
        return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ v

    monkeypatch.setattr(transformer_module, "scaled_dot_product_attention", explicit_attention)
    generator = tiny_generator(latent_shapes=ODD_SHAPES, structure_patch_size=[2, 2, 2], depth=3, mlp_ratio=2.0)
    tokens = generator.packing.pack(random_latents(ODD_SHAPES, batch=1))
    with FlopCounterMode(display=False) as counter:
        generator.velocity(tokens, torch.rand(1), torch.tensor([1]))
    groups = [(group.num_tokens, group.token_dim) for group in generator.packing.groups]
    expected = transformer_flops(generator.packing.num_tokens, groups, 64, 3, 128)
    assert counter.get_total_flops() == expected


def test_compression_report_prints_the_generators_tokens_and_flops_beside_other_tokenizers(capsys):
    from vidtwin.cli import main

    main(["compression-report", str(PUBLISHED_CONFIG), "--compare-tokenizers"])
    out = capsys.readouterr().out
    # Published latents with patch 2: structure 8 x 4 x 4 = 128 tokens, dynamics image 16 x 14 -> 8 x 7 = 56.
    assert "generator dit-flops (6 layers, 8 heads, hidden 512, FFN 2048): 184 tokens per clip" in out
    assert "VidTok 4x8x8 (16 ch)                392" in out
    assert "SD-VAE 8x8 per frame (4 ch)       1,568" in out
    assert "the paper's \"4-8x fewer FLOPs\": does not hold for every tokenizer here" in out
    with pytest.raises(SystemExit) as exit_info:
        main([str(PUBLISHED_CONFIG), "--generator", "huge"])
    assert exit_info.value.code == 2


def test_an_attention_mask_keeps_tokens_from_seeing_the_masked_ones():
    """For models that need one (a causal world model): tokens 0-3 may not see tokens 4-7."""
    from vidtwin.generation.transformer import GeneratorBlock

    torch.manual_seed(0)
    block = GeneratorBlock(32, 4, 2.0)
    torch.nn.init.normal_(block.modulation[1].weight, std=0.1)  # open the zero-initialized gates
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[:4, 4:] = False
    x, condition = torch.randn(2, 8, 32), torch.randn(2, 32)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 4, 32)  # not a constant shift, which the LayerNorm would remove
    out, out_changed = block(x, condition, mask), block(changed, condition, mask)
    assert torch.allclose(out[:, :4], out_changed[:, :4], atol=1e-6)
    assert not torch.allclose(out[:, 4:], out_changed[:, 4:])
    assert not torch.allclose(block(x, condition)[:, :4], block(changed, condition)[:, :4])


def test_the_generator_saves_and_uploads_through_the_shared_stack_not_the_hub_mixin(tmp_path, monkeypatch):
    import huggingface_hub

    from vidtwin import pretrained

    assert not isinstance(tiny_generator(), huggingface_hub.ModelHubMixin)
    generator = with_random_weights(tiny_generator())
    generator.save_pretrained(tmp_path / "gen")
    card = (tmp_path / "gen" / "README.md").read_text()
    assert "library_name: vidtwin" in card and 'LatentGenerator.from_pretrained("OWNER/NAME")' in card
    uploads = []
    monkeypatch.setattr(pretrained, "upload_folder", lambda folder, repo_id, **kw: uploads.append(
        (sorted(p.name for p in Path(folder).iterdir()), repo_id, kw)) or "https://hub/commit")
    assert generator.push_to_hub("lab/gen", private=True) == "https://hub/commit"
    assert uploads == [(["README.md", "config.json", "model.safetensors"], "lab/gen",
                        {"private": True, "commit_message": "Upload VidTwin latent generator"})]
