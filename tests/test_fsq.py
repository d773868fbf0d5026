"""FSQ tokens: the quantizer, the model's tokenize/detokenize, token files and the CLI round trip."""

import math

import pytest
import torch

from conftest import REPO, TINY_CONFIG, TINY_FRAMES
from vidtwin import VidTwin, VidTwinLatents, VidTwinTokens, load_model
from vidtwin.config import autoencoder_config_from
from vidtwin.data.video_io import read_video, write_video
from vidtwin.inference import decode_latents, encode_video, reconstruct_video
from vidtwin.cli import main
from vidtwin.latents.latent_file import (
    LatentFileError,
    config_identity,
    config_to_dict,
    load_latents,
    save_latents,
    token_dtype,
)
from vidtwin.models.config import LATENT_NAMES, VidTwinConfig, replace
from vidtwin.models.regularizers import FSQRegularizer, entropy_loss_weight_at

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

# configs/tiny_fsq.yaml is an overlay on configs/tiny.yaml.
TINY_FSQ_CONFIG = [TINY_CONFIG, REPO / "configs" / "tiny_fsq.yaml"]


def _merged_fsq_config(path):
    """The tiny FSQ config merged into one file, for the one-file ``--config`` of inference.py."""
    from omegaconf import OmegaConf
    from vidtwin.config import load_config

    OmegaConf.save(load_config([str(p) for p in TINY_FSQ_CONFIG]), path)
    return path
LEVELS = (8, 5, 3, 4)


def _grid(levels):
    """Per channel, the FSQ code values (k - L // 2) / (L // 2), k = 0..L-1, computed independently."""
    return [torch.tensor([(k - n // 2) / (n // 2) for k in range(n)]) for n in levels]


# ---------------------------------------------------------------------------------------- quantizer
def test_codes_are_grid_values_and_indices_follow_vidtok_layout():
    quantizer = FSQRegularizer(LEVELS)
    latent = 3 * torch.randn(2, len(LEVELS), 5, 6)  # (B, C, ...), well beyond the tanh range
    codes, log = quantizer(latent)
    assert codes.shape == latent.shape
    grid = _grid(LEVELS)
    digits = []
    for channel, values in enumerate(grid):
        channel_codes = codes[:, channel]
        distance = (channel_codes[..., None] - values).abs()  # (B, 5, 6, L)
        assert distance.min(dim=-1).values.max() == 0, f"channel {channel} has off-grid values"
        digits.append(distance.argmin(dim=-1))  # 0..L-1
    # VidTok's layout: index = sum_i digit_i * prod(levels[:i]).
    expected = sum(d * math.prod(LEVELS[:i]) for i, d in enumerate(digits))
    indices = quantizer.codes_to_indices(codes)
    assert indices.dtype == torch.int64 and torch.equal(indices, expected)
    assert 0 <= int(indices.min()) and int(indices.max()) < math.prod(LEVELS)
    assert 0 < float(log["codebook_usage"]) <= 1 and float(log["perplexity"]) >= 1


def test_index_code_round_trip_over_the_whole_codebook():
    quantizer = FSQRegularizer(LEVELS)
    size = math.prod(LEVELS)
    every_index = torch.arange(size).reshape(1, size)  # (B, N)
    codes = quantizer.indices_to_codes(every_index)  # (1, C, N)
    assert codes.shape == (1, len(LEVELS), size)
    assert torch.equal(quantizer.codes_to_indices(codes), every_index)
    with pytest.raises(ValueError, match=r"\[0, 480\)"):
        quantizer.indices_to_codes(torch.tensor([[size]]))


def test_gradients_pass_straight_through_the_rounding():
    quantizer = FSQRegularizer(LEVELS)
    latent = torch.randn(3, len(LEVELS), 7, requires_grad=True)
    weights = torch.randn(3, len(LEVELS), 7)
    (quantizer(latent)[0] * weights).sum().backward()
    # Straight-through: the gradient of the bounded value before rounding,
    # d/dz [tanh(z + shift) * half_l - offset] / half_width.
    levels = torch.tensor(LEVELS, dtype=torch.float32)[None, :, None]
    half_l = (levels - 1) * (1 + 1e-3) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_l)
    slope = (1 - torch.tanh(latent.detach() + shift) ** 2) * half_l / torch.div(levels, 2, rounding_mode="floor")
    assert torch.allclose(latent.grad, weights * slope, atol=1e-6)


def test_entropy_and_commitment_losses():
    quantizer = FSQRegularizer(LEVELS, entropy_loss=True, commitment_loss=True).train()
    latent = torch.randn(4, len(LEVELS), 6, requires_grad=True)
    codes, log = quantizer(latent)
    flat = latent.detach().movedim(1, -1).reshape(-1, len(LEVELS))
    flat_codes = codes.detach().movedim(1, -1).reshape(-1, len(LEVELS))
    assert torch.allclose(log["commitment_loss"], torch.nn.functional.mse_loss(flat, flat_codes))
    log["entropy_loss"].backward()
    assert latent.grad.abs().sum() > 0
    # Tokens spread over many codes score lower (better) than tokens all near one code.
    spread = quantizer(torch.linspace(-2, 2, 64)[None, None].expand(1, len(LEVELS), 64).contiguous()
                       + torch.randn(1, len(LEVELS), 64))[1]["entropy_loss"]
    collapsed = quantizer(torch.full((1, len(LEVELS), 64), 0.3))[1]["entropy_loss"]
    assert spread < collapsed
    assert "entropy_loss" not in quantizer.eval()(latent)[1]  # training only


def test_entropy_weight_anneals_like_vidtok():
    config = VidTwinConfig(regularizer="fsq", structure_levels=(5, 5), dynamics_levels=(5, 5),
                           entropy_loss_weight=0.1, entropy_loss_annealing_steps=100, entropy_loss_annealing_factor=3.0)
    assert entropy_loss_weight_at(config, 0) == pytest.approx(0.3)
    assert entropy_loss_weight_at(config, 50) == pytest.approx(0.2)
    assert entropy_loss_weight_at(config, 100) == entropy_loss_weight_at(config, 10**6) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------- config
def test_config_levels_set_the_latent_channels():
    config = autoencoder_config_from(TINY_FSQ_CONFIG)
    assert (config.expect_ch, config.d_dim) == (4, 4)
    assert config.codebook_sizes == {"structure": 1000, "dynamics": 1000}
    other = replace(config, structure_levels=(8, 8, 8, 5, 5, 5), dynamics_levels=(7, 5, 5))
    assert (other.expect_ch, other.d_dim) == (6, 3) and other.codebook_sizes == {"structure": 64000, "dynamics": 175}
    assert autoencoder_config_from(TINY_CONFIG).codebook_sizes is None
    with pytest.raises(ValueError, match="only apply with regularizer: fsq"):
        VidTwinConfig(structure_levels=(5, 5))
    with pytest.raises(ValueError, match="needs dynamics_levels"):
        VidTwinConfig(regularizer="fsq", structure_levels=(5, 5))
    with pytest.raises(ValueError, match=">= 3"):
        VidTwinConfig(regularizer="fsq", structure_levels=(2, 5), dynamics_levels=(5, 5))
    with pytest.raises(ValueError, match="regularizer must be one of"):
        VidTwinConfig(regularizer="vq")


def test_kl_latent_file_identity_is_unchanged():
    # The fields added for FSQ stay out of a KL config's identity, so files written before them still decode.
    kl = config_to_dict(autoencoder_config_from(TINY_CONFIG))
    assert not {"regularizer", "structure_levels", "dynamics_levels", "entropy_loss_weight"} & set(kl)


# ---------------------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def fsq_model():
    torch.manual_seed(0)
    return load_model(TINY_FSQ_CONFIG).eval()


def test_tokens_detokenize_and_decode_equal_encode_decode(fsq_model):
    video = torch.rand(2, 3, TINY_FRAMES, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = fsq_model.encode(video)
        tokens = fsq_model.tokenize(video)
        assert isinstance(tokens, VidTwinTokens)
        queries = fsq_model.config.num_queries
        assert tokens.structure.shape == (2, queries, 16, 16)  # (B, Q, h_S, w_S)
        assert tokens.dynamics_x.shape == tokens.dynamics_y.shape == (2, TINY_FRAMES, 8)  # (B, T, w_D), (B, T, h_D)
        for name in ("structure", "dynamics_x", "dynamics_y"):
            values = getattr(tokens, name)
            assert values.dtype == torch.int64 and 0 <= int(values.min()) and int(values.max()) < 1000
        codes = fsq_model.detokenize(tokens)
        for name in ("structure", "dynamics_x", "dynamics_y"):
            assert torch.equal(getattr(codes, name), getattr(latents, name)), name
        assert torch.equal(fsq_model.decode(codes), fsq_model.decode(latents))
        assert torch.equal(fsq_model.encode(video, sample=True).structure, latents.structure)  # no sampling in FSQ
    assert latents.kl is None and "structure/codebook_usage" in latents.quantization


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_encode_hands_decode_exactly_what_a_token_file_gives_it(fsq_model, bf16):
    # `decode` of a token file must equal `reconstruct` bit for bit. A token file gives the decoder
    # contiguous float32 codes; encode must give it the same values in the same memory layout, since
    # a kernel may sum in another order for other strides (on an AMX CPU in bf16, a trained model's
    # reconstruction and decoded token file were 39.5 dB apart). torch.autocast runs on any CPU,
    # natively or not.
    video = torch.rand(2, 3, TINY_FRAMES, 64, 64) * 2 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        latents = fsq_model.encode(video)
        from_tokens = fsq_model.detokenize(fsq_model.tokenize(video))
        as_read_from_a_file = VidTwinLatents(*(getattr(from_tokens, name).float().clone() for name in LATENT_NAMES))
        for name in LATENT_NAMES:
            encoded, read = getattr(latents, name), getattr(as_read_from_a_file, name)
            assert torch.equal(encoded.float(), read), name
            assert encoded.is_contiguous() and getattr(from_tokens, name).is_contiguous(), name
            assert encoded.stride() == read.stride(), name
        reconstruction = fsq_model.decode(latents)
        assert torch.equal(fsq_model.decode(from_tokens), reconstruction)
        assert torch.equal(fsq_model.decode(as_read_from_a_file), reconstruction)


def test_fsq_codes_are_the_exact_codes_of_their_indices():
    # Eval and training both hand the decoder the grid values `detokenize` rebuilds from the indices,
    # not a straight-through sum z + (q - z) (its gradient is test_gradients_pass_straight_through_the_rounding's).
    quantizer = FSQRegularizer(LEVELS)
    for mode in (quantizer.eval(), quantizer.train()):
        latent = (2 * torch.randn(4, len(LEVELS), 1000)).requires_grad_()
        codes, _ = mode(latent)
        exact = quantizer.indices_to_codes(quantizer.codes_to_indices(codes.detach()))
        assert torch.equal(codes.detach(), exact)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cli_pipeline_decode_of_a_token_file_equals_reconstruct(fsq_model, tmp_path, dtype):
    # The library functions under `vidtwin reconstruct` and `vidtwin encode` + `vidtwin decode`, compared
    # before the output's rounding to 8 bits (which would hide small differences).
    video = _small_video(tmp_path / "small.mp4")
    reconstructed = reconstruct_video(fsq_model, video, dtype=dtype).video
    path = save_latents(encode_video(fsq_model, video, dtype=dtype), tmp_path / "tokens.safetensors")
    decoded = decode_latents(fsq_model, load_latents(path, expected_config=fsq_model.config), dtype=dtype).video
    assert torch.equal(decoded, reconstructed)


def test_tokenize_on_a_kl_model_fails_clearly(tiny_model):
    with pytest.raises(ValueError, match="needs an FSQ model"):
        tiny_model.tokenize(torch.zeros(1, 3, TINY_FRAMES, 64, 64))


def test_fsq_model_has_the_kl_model_parameter_names(fsq_model, tiny_model):
    # Same names, so a KL checkpoint fine-tunes into an FSQ model; only the bottleneck shapes differ:
    # the heads (two outputs per KL channel, one per FSQ channel) and, since the tiny KL structure
    # latent has 8 channels and the FSQ one 4, the first layer after it.
    fsq_state, kl_state = fsq_model.state_dict(), tiny_model.state_dict()
    assert fsq_state.keys() == kl_state.keys()
    differing = sorted(k for k in kl_state if kl_state[k].shape != fsq_state[k].shape)
    assert differing == ["bottle_down.bias", "bottle_down.weight", "bottle_up.0.weight", "motion_head.bias",
                         "motion_head.weight"]


def test_training_mode_gives_differentiable_aux_losses():
    torch.manual_seed(0)
    model = load_model(TINY_FSQ_CONFIG).train()
    reconstruction, latents = model(torch.rand(2, 3, TINY_FRAMES, 64, 64) * 2 - 1)
    terms = model.regularization_log(latents, step=0)
    assert set(terms) == {"aux_loss", "entropy_loss", "commitment_loss"}
    config = model.config
    expected = 0.3 * terms["entropy_loss"] + config.commitment_loss_weight * terms["commitment_loss"]
    assert torch.allclose(terms["aux_loss"], expected)
    (reconstruction.abs().mean() + terms["aux_loss"]).backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not without_grad, without_grad


# ---------------------------------------------------------------------------------------- files
def test_token_dtype_is_the_smallest_that_holds_the_codebook():
    assert token_dtype(256) == torch.uint8
    assert token_dtype(257) == token_dtype(65536) == torch.uint16
    assert token_dtype(65537) == token_dtype(2**31) == torch.int32
    assert token_dtype(2**31 + 1) == torch.int64


def _small_video(path):
    t = torch.arange(10, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, 48)[None, :, None, None]
    x = torch.linspace(0, 4, 64)[None, None, :, None]
    frames = (127.5 + 120 * torch.sin(x + y + 0.2 * t + torch.tensor([0.0, 2.0, 4.0]))).round().to(torch.uint8)
    write_video(path, frames, fps=10.0)
    return path


def test_token_file_round_trip_and_codebook_check(fsq_model, tmp_path):
    video = _small_video(tmp_path / "small.mp4")
    encoded = encode_video(fsq_model, video)
    path = save_latents(encoded, tmp_path / "tokens.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        assert reader.metadata()["latent_kind"] == "fsq_tokens"
        assert reader.get_tensor("structure").dtype == torch.uint16  # 1,000 codes
        clips = math.ceil(10 / TINY_FRAMES)  # the 10-frame video, its last clip padded
        queries = fsq_model.config.num_queries
        assert reader.get_tensor("structure").shape == (clips, 1, queries, 16, 16)  # (clips, tiles, Q, h_S, w_S)
    loaded = load_latents(path, expected_config=fsq_model.config)
    for name in ("structure", "dynamics_x", "dynamics_y"):
        assert torch.equal(getattr(loaded, name), getattr(encoded, name)), name
    assert torch.equal(decode_latents(fsq_model, loaded).video, decode_latents(fsq_model, encoded).video)

    other_levels = replace(fsq_model.config, dynamics_levels=(5, 5, 5, 5))
    with pytest.raises(LatentFileError, match=r"dynamics \[8, 5, 5, 5\] but this model has .*dynamics \[5, 5, 5, 5\]"):
        load_latents(path, expected_config=other_levels)
    with pytest.raises(LatentFileError, match=r"but this model has Gaussian \(kl\) latents"):
        load_latents(path, expected_config=autoencoder_config_from(TINY_CONFIG))
    # The loss weights are training-only: they do not change which tokens a file holds.
    assert config_identity(replace(fsq_model.config, entropy_loss_weight=0.0)) == config_identity(fsq_model.config)


def test_cli_encode_tokens_then_decode(fsq_model, tmp_path, capsys):
    torch.save(fsq_model.state_dict(), tmp_path / "fsq.pt")
    other = tmp_path / "other_levels.yaml"
    merged = _merged_fsq_config(tmp_path / "tiny_fsq_merged.yaml")
    other.write_text(merged.read_text().replace("dynamics_levels:\n      - 8\n", "dynamics_levels:\n      - 5\n"))
    torch.save(VidTwin(autoencoder_config_from(other)).state_dict(), tmp_path / "other.pt")
    video = _small_video(tmp_path / "small.mp4")
    args = ["--config", merged, "--ckpt", tmp_path / "fsq.pt", "--device", "cpu", "--quiet"]

    def run(*argv):
        code = main([str(a) for a in argv])
        return code, capsys.readouterr()

    assert run("reconstruct", "--input", video, "--output", tmp_path / "rec.mp4", *args)[0] == 0
    assert run("encode", "--input", video, "--output", tmp_path / "tok.safetensors", *args)[0] == 0
    assert run("decode", "--latents", tmp_path / "tok.safetensors", "--output", tmp_path / "dec.mp4", *args)[0] == 0
    assert torch.equal(read_video(tmp_path / "dec.mp4")[0], read_video(tmp_path / "rec.mp4")[0])
    code, _ = run("cross", "--structure", tmp_path / "tok.safetensors", "--dynamics", video,
                  "--output", tmp_path / "cross.mp4", *args)
    assert code == 0 and torch.equal(read_video(tmp_path / "cross.mp4")[0], read_video(tmp_path / "rec.mp4")[0])

    code, captured = run("decode", "--latents", tmp_path / "tok.safetensors", "--output", tmp_path / "bad.mp4",
                         "--config", other, "--ckpt", tmp_path / "other.pt", "--device", "cpu", "--quiet")
    errors = [line for line in captured.err.splitlines() if line.startswith("vidtwin decode: error:")]
    assert code == 2 and len(errors) == 1 and "FSQ levels" in errors[0] and "Traceback" not in captured.err
    assert not (tmp_path / "bad.mp4").exists()
