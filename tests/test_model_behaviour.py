"""Structural properties of the model: causality, gradients, shapes, input checks."""

import pytest
import torch

from vidtwin import VidTwin, VidTwinConfig, VidTwinLatents

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

SMALL = dict(
    input_size=(6, 32, 32), patch_size=(1, 8, 8), hidden_size=32, depth=2, num_heads=2, num_queries=3,
    query_hidden_size=16, qformer_num_layers=2, qformer_intermediate_size=32, qformer_num_heads=2,
    init_ch=8, expect_ch=2, d_dim=2,
)


def encoder_tokens_after_change(causal: bool, frame: int):
    torch.manual_seed(0)
    model = VidTwin(VidTwinConfig(**SMALL, temporal_causal=causal)).eval()
    video = torch.rand(1, 3, 6, 32, 32) * 2 - 1
    changed = video.clone()
    changed[:, :, frame] = torch.rand_like(changed[:, :, frame]) * 2 - 1
    with torch.no_grad():
        return model.encoder(video), model.encoder(changed)


def test_causal_temporal_attention_hides_future_frames():
    before, after = encoder_tokens_after_change(causal=True, frame=3)
    per_frame_change = (before - after).abs().amax(dim=(0, 1, 3, 4))  # (T,)
    assert torch.all(per_frame_change[:3] == 0), per_frame_change
    assert torch.all(per_frame_change[3:] > 1e-4), per_frame_change


def test_non_causal_temporal_attention_sees_future_frames():
    before, after = encoder_tokens_after_change(causal=False, frame=3)
    per_frame_change = (before - after).abs().amax(dim=(0, 1, 3, 4))
    assert torch.all(per_frame_change > 1e-4), per_frame_change


def test_spatial_attention_is_not_causal():
    # Changing the last patch of a frame must change the first token of that same frame.
    torch.manual_seed(0)
    model = VidTwin(VidTwinConfig(**SMALL)).eval()
    video = torch.rand(1, 3, 6, 32, 32) * 2 - 1
    changed = video.clone()
    changed[:, :, 0, -8:, -8:] = 0.5
    with torch.no_grad():
        difference = (model.encoder(video) - model.encoder(changed)).abs()
    assert difference[:, :, 0, 0, 0].max() > 1e-4


def test_every_trainable_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = VidTwin(VidTwinConfig(**SMALL)).train()
    video = torch.rand(2, 3, 6, 32, 32) * 2 - 1
    reconstruction, latents = model(video)
    ((reconstruction - video).abs().mean() + 1e-3 * latents.kl).backward()
    without = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert without == []


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VidTwin(VidTwinConfig(**SMALL)).eval()  # eval: no dropout, so both runs are exact
    video = torch.rand(1, 3, 6, 32, 32) * 2 - 1
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_gradient_checkpointing(enabled)
        reconstruction, _ = model(video, sample=False)
        reconstruction.square().mean().backward()
        grads.append(model.encoder.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_latent_shapes_follow_the_config():
    config = VidTwinConfig(**SMALL)
    model = VidTwin(config).eval()
    with torch.no_grad():
        latents = model.encode(torch.zeros(2, 3, 6, 32, 32))
    for name, shape in config.latent_shapes().items():
        assert tuple(getattr(latents, name).shape) == (2, *shape)
    assert config.latent_shapes()["structure"] == (2, 3, 2, 2)
    assert config.latent_shapes()["dynamics_x"] == (2, 6, 2)


def test_partial_decodes_differ_from_the_full_decode():
    torch.manual_seed(0)
    model = VidTwin(VidTwinConfig(**SMALL)).eval()
    with torch.no_grad():
        latents = model.encode(torch.rand(1, 3, 6, 32, 32) * 2 - 1)
        full = model.decode(latents)
        structure = model.decode(latents, only="structure")
        dynamics = model.decode(latents, only="dynamics")
    assert full.shape == structure.shape == dynamics.shape == (1, 3, 6, 32, 32)
    assert not torch.allclose(full, structure) and not torch.allclose(full, dynamics)


def test_inputs_that_do_not_fit_are_refused_with_a_clear_message():
    model = VidTwin(VidTwinConfig(**SMALL)).eval()
    with pytest.raises(ValueError, match=r"expected a video batch of shape \(B, 3, 6, 32, 32\)"):
        model.encode(torch.zeros(1, 3, 6, 64, 64))
    latents = model.encode(torch.zeros(1, 3, 6, 32, 32))
    with pytest.raises(ValueError, match="latent structure"):
        model.decode(VidTwinLatents(latents.structure[:, :1], latents.dynamics_x, latents.dynamics_y))
    with pytest.raises(ValueError, match="only must be one of"):
        model.decode(latents, only="motion")


def test_sizes_that_are_not_whole_patches_are_padded_and_cropped_back():
    config = VidTwinConfig(**{**SMALL, "input_size": (6, 36, 36)})
    assert config.token_grid == (6, 5, 5)
    model = VidTwin(config).eval()
    with torch.no_grad():
        output = model.decode(model.encode(torch.zeros(1, 3, 6, 36, 36)))
    assert output.shape == (1, 3, 6, 36, 36)


def test_invalid_configs_name_the_setting():
    with pytest.raises(ValueError, match="num_heads"):
        VidTwinConfig(**{**SMALL, "num_heads": 5})
    with pytest.raises(ValueError, match="square token grid"):
        VidTwinConfig(**{**SMALL, "input_size": (6, 32, 48)})
    with pytest.raises(ValueError, match="unknown VidTwin model setting"):
        VidTwinConfig.from_dict({"hidden": 3})
    VidTwinConfig(**{**SMALL, "input_size": (6, 32, 48), "downsample_motion": False})


def test_flash_backend_falls_back_to_sdpa_off_cuda_with_the_same_output(caplog):
    torch.manual_seed(0)
    sdpa = VidTwin(VidTwinConfig(**SMALL)).eval()
    flash = VidTwin(VidTwinConfig(**SMALL, attention_backend="flash")).eval()
    flash.load_state_dict(sdpa.state_dict())
    video = torch.rand(1, 3, 6, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(sdpa(video)[0], flash(video)[0])


def test_attention_runs_in_fp32_on_a_cpu_under_bf16_autocast(monkeypatch):
    # The CPU attention kernel is slower in bf16 than in fp32 at these sequence lengths, so under CPU
    # autocast it gets fp32 inputs and gives its result back in the inputs' dtype.
    from vidtwin.models import attention

    seen = []
    kernel = torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, **options):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return kernel(q, k, v, **options)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", recording)
    layer = attention.Attention(dim=32, num_heads=4)
    tokens = torch.randn(2, 5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(tokens, causal=True)
    assert seen == [(torch.float32, False)] and out.dtype == torch.bfloat16
    exact = layer(tokens, causal=True)  # no autocast: the plain call, in fp32
    assert seen[1:] == [(torch.float32, False)] and exact.dtype == torch.float32
    torch.testing.assert_close(out.float(), exact, atol=0.05, rtol=0.05)  # bf16 projections around it
