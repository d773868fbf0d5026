"""AutoencoderVidTwin (the [diffusers] extra): it computes what VidTwin computes, through diffusers'
interfaces; its folders round-trip, convert both ways and load with diffusers' AutoModel alone."""

import dataclasses
import json

import pytest
import torch

pytest.importorskip("diffusers", reason="the [diffusers] extra is not installed (diffusers needs Python >= 3.11)")

from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution  # noqa: E402

from vidtwin import VidTwin, load_model  # noqa: E402
from vidtwin.cli import main  # noqa: E402
from vidtwin.diffusers import AutoencoderVidTwin  # noqa: E402
from vidtwin.diffusers.layout import PackedLatentLayout  # noqa: E402
from vidtwin.models.config import LATENT_NAMES, VidTwinConfig, config_fields  # noqa: E402

from conftest import DATA, OFFICIAL_CKPT, OFFICIAL_CONFIG  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

# A micro FSQ model whose latents differ in width (structure 3 channels, dynamics 2): the packed
# latent pads dynamics to 3 channels.
FSQ_MICRO = dict(input_size=(4, 32, 32), patch_size=(1, 8, 8), hidden_size=32, depth=1, num_heads=2, num_queries=2,
                 query_hidden_size=16, qformer_num_layers=2, qformer_intermediate_size=32, qformer_num_heads=2,
                 init_ch=8, cont_num_blocks=1, regularizer="fsq", structure_levels=(5, 3, 3), dynamics_levels=(5, 3))


@pytest.fixture(scope="module")
def reference() -> VidTwin:
    """The official-format tiny model with its recorded weights (d_S = d_D = 4)."""
    return load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT)


def wrapped(model: VidTwin, **extra) -> AutoencoderVidTwin:
    vae = AutoencoderVidTwin(**model.config.to_dict(), **extra)
    vae.autoencoder.load_state_dict(model.state_dict())
    return vae.eval()


@pytest.fixture(scope="module")
def vae(reference) -> AutoencoderVidTwin:
    return wrapped(reference)


@pytest.fixture(scope="module")
def fsq_reference() -> VidTwin:
    torch.manual_seed(3)
    return VidTwin(VidTwinConfig(**FSQ_MICRO)).eval()


def video(batch: int, size=(8, 64, 64), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=generator) * 2 - 1


# ---------------------------------------------------------------------------- the packed layout
def test_packing_is_exact_and_documented_for_the_published_model():
    layout = PackedLatentLayout(VidTwinConfig())
    assert layout.shape == (8, 16 * 7 * 7 + 16 * (7 + 7)) == (8, 1008)
    micro = PackedLatentLayout(VidTwinConfig(**FSQ_MICRO))
    latents = {name: torch.randn(2, *shape) for name, shape in micro.latent_shapes.items()}
    packed = micro.pack(latents)
    assert packed.shape == (2, 3, micro.num_tokens)
    assert all(torch.equal(micro.unpack(packed)[name], latents[name]) for name in LATENT_NAMES)
    # Structure first, in (query, row, column) order; then per frame dynamics_x's columns, dynamics_y's rows.
    assert torch.equal(packed[:, :, 0], latents["structure"][:, :, 0, 0, 0])
    first_dynamics = micro.group_tokens[0]
    width = micro.latent_shapes["dynamics_x"][2]
    assert torch.equal(packed[:, :2, first_dynamics + width], latents["dynamics_y"][:, :, 0, 0])
    assert not packed[:, 2, first_dynamics:].any()  # dynamics has 2 channels: the third is padding
    tokens = {name: torch.randint(0, 9, (2, *shape[1:])) for name, shape in micro.latent_shapes.items()}
    assert all(torch.equal(micro.unpack_tokens(micro.pack_tokens(tokens))[name], tokens[name]) for name in LATENT_NAMES)


# ---------------------------------------------------------------------------- equal to VidTwin
@torch.no_grad()
def test_encode_and_decode_equal_vidtwin(reference, vae):
    x = video(2)
    expected = reference.encode(x, sample=False)
    output = vae.encode(x)
    assert isinstance(output.latent_dist, DiagonalGaussianDistribution)
    z = output.latent_dist.mode()
    assert z.shape == (2, *vae.layout.shape)
    assert torch.equal(z, vae.layout.pack(expected))
    for name in LATENT_NAMES:
        assert torch.equal(getattr(output, name).mode(), getattr(expected, name))
    # The KL of the packed posterior is VidTwin's (official) KL term.
    torch.testing.assert_close(output.latent_dist.kl().sum() / 2, expected.kl, rtol=1e-5, atol=1e-5)
    decoded = vae.decode(z)
    assert isinstance(decoded, DecoderOutput)
    torch.testing.assert_close(decoded.sample, reference.decode(expected), rtol=0, atol=1e-6)
    assert torch.equal(vae.decode(expected).sample, decoded.sample)  # VidTwinLatents are accepted
    assert torch.equal(vae.decode(z, return_dict=False)[0], decoded.sample)
    assert torch.equal(vae.encode(x, return_dict=False)[0].mode(), z)
    assert torch.equal(vae.decode(z, only="structure").sample, reference.decode(expected, only="structure"))
    sample = output.latent_dist.sample(generator=torch.Generator().manual_seed(0))
    assert sample.shape == z.shape and not torch.equal(sample, z)


@torch.no_grad()
def test_slicing_runs_one_clip_at_a_time_with_the_same_result(vae):
    x = video(3, seed=1)
    whole = vae(x).sample
    vae.enable_slicing()
    try:
        torch.testing.assert_close(vae(x).sample, whole, rtol=0, atol=1e-5)
    finally:
        vae.disable_slicing()


@torch.no_grad()
def test_tiling_gives_the_cli_tile_path(reference, vae):
    from vidtwin.inference import SourceVideo, iter_reconstruction

    frames = (torch.rand(8, 80, 100, 3) * 255).to(torch.uint8)  # one clip of frames larger than 64x64
    [clip] = list(iter_reconstruction(reference, SourceVideo(frames, fps=8.0), spatial="tile", dtype="fp32", batch_clips=4))
    x = frames.permute(3, 0, 1, 2).float()[None] / 127.5 - 1.0  # (1, 3, T, H, W)
    vae.enable_tiling()
    try:
        z = vae.encode(x).latent_dist.mode()
        assert z.shape[:2] == (1, vae.layout.channels) and z.shape[2] > 1  # (B, C, tiles, N)
        torch.testing.assert_close(vae.decode(z, frame_size=(80, 100)).sample[0], clip.output, rtol=0, atol=1e-5)
        torch.testing.assert_close(vae(x).sample[0], clip.output, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="frame_size"):
            vae.decode(z)
    finally:
        vae.disable_tiling()
    with pytest.raises(ValueError, match="expected a video batch"):
        vae.encode(x)


# ---------------------------------------------------------------------------- FSQ tokens
@torch.no_grad()
def test_fsq_models_give_integer_tokens_as_vidtok_does(fsq_reference):
    vae = wrapped(fsq_reference)
    x = video(2, size=(4, 32, 32))
    output = vae.encode(x)
    expected_tokens = vae.layout.pack_tokens(fsq_reference.tokenize(x))
    assert output.indices.dtype == torch.int64 and torch.equal(output.indices, expected_tokens)
    codes, indices = vae.encode(x, return_dict=False)  # AutoencoderVidTok's (quant_z, indices)
    assert torch.equal(codes, output.latent_dist.sample()) and torch.equal(indices, expected_tokens)
    assert torch.equal(vae.indices_to_latent(indices), codes)
    expected = fsq_reference.decode(fsq_reference.encode(x))
    assert torch.equal(vae.decode(indices, decode_from_indices=True).sample, expected)
    assert torch.equal(vae.decode(codes).sample, expected)


# ---------------------------------------------------------------------------- files and moves
def test_save_pretrained_round_trip_restores_every_field(tmp_path, fsq_reference):
    # Every field away from its default, so that a field the loader drops shows.
    config = dataclasses.replace(VidTwinConfig(**FSQ_MICRO), decoder_depth=2, decoder_num_heads=4, mlp_ratio=2.0,
                                 temporal_causal=False, decoder_temporal_causal=True, qformer_dropout=0.0,
                                 in_channels=3, downsample_motion=True, motion_num_blocks=1, entropy_loss_weight=0.1,
                                 entropy_loss_annealing_steps=7, entropy_loss_annealing_factor=3.0,
                                 commitment_loss_weight=0.25)
    vae = AutoencoderVidTwin(**config.to_dict(), latents_mean=[0.1, 0.2, 0.3], latents_std=[1.0, 2.0, 3.0])
    vae.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    stored = json.loads((tmp_path / "config.json").read_text())
    assert set(config_fields()) <= set(stored) and stored["_class_name"] == "AutoencoderVidTwin"
    loaded = AutoencoderVidTwin.from_pretrained(tmp_path)
    assert loaded.model_config == config
    assert loaded.config.latents_std == [1.0, 2.0, 3.0]
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@torch.no_grad()
def test_dtype_and_device_moves(tmp_path, reference, vae):
    x = video(1, seed=2)
    double = wrapped(reference).to(torch.float64)
    assert double.dtype == torch.float64
    expected = reference.decode(reference.encode(x, sample=False))
    torch.testing.assert_close(double(x.double()).sample.float(), expected, rtol=0, atol=1e-5)
    vae.save_pretrained(tmp_path)
    half = AutoencoderVidTwin.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).to("cpu")
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    output = half(x.to(torch.bfloat16)).sample
    assert output.dtype == torch.bfloat16 and torch.isfinite(output).all()
    assert (output.float() - expected).abs().mean() < 0.05  # bf16 keeps about 3 significant digits


# ---------------------------------------------------------------------------- latent statistics
def test_denormalize_inverts_normalize_with_per_latent_statistics(reference):
    shapes = reference.config.latent_shapes()
    statistics = {"mean": {name: [float(i) for i in range(shape[0])] for name, shape in shapes.items()},
                  "std": {name: [2.0] * shape[0] for name, shape in shapes.items()}}
    vae = wrapped(reference, latent_statistics=statistics)
    z = torch.randn(2, *vae.layout.shape)
    torch.testing.assert_close(vae.normalize_latents(vae.denormalize_latents(z)), z)
    means = vae.layout.unpack(vae.denormalize_latents(torch.zeros(1, *vae.layout.shape)))
    assert means["dynamics_y"][0, :, 0, 0].tolist() == statistics["mean"]["dynamics_y"]
    with pytest.raises(ValueError, match="channels"):
        AutoencoderVidTwin(**reference.config.to_dict(), latents_mean=[0.0])


# ---------------------------------------------------------------------------- conversion
LEGACY = DATA / "legacy" / "640498a"
STATS_DATASET = DATA / "latent_dataset_f10a1ce"  # encoded with tiny_official.ckpt


def assert_same_model(first: VidTwin, second: VidTwin) -> None:
    assert first.config == second.config
    assert first.state_dict().keys() == second.state_dict().keys()
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


@pytest.mark.parametrize("source", ["official", "run", "pretrained"])
def test_conversion_to_diffusers_and_back_is_lossless(tmp_path, source):
    config = ["--config", str(OFFICIAL_CONFIG)] if source == "official" else []
    ckpt = {"official": OFFICIAL_CKPT, "run": LEGACY / "autoencoder_run", "pretrained": LEGACY / "autoencoder_pretrained"}[source]
    original = load_model(OFFICIAL_CONFIG if source == "official" else None, ckpt)
    diffusers_folder, back = tmp_path / "diffusers", tmp_path / "back"
    assert main(["convert", *config, "--ckpt", str(ckpt), "--output", str(diffusers_folder), "--format", "diffusers"]) == 0
    assert (diffusers_folder / "diffusion_pytorch_model.safetensors").is_file()
    vae = AutoencoderVidTwin.from_pretrained(diffusers_folder)
    assert_same_model(vae.autoencoder, original)
    assert main(["convert", "--ckpt", str(diffusers_folder), "--output", str(back), "--format", "vidtwin"]) == 0
    assert_same_model(VidTwin.from_pretrained(back), original)
    x = video(1, size=original.config.input_size)
    with torch.no_grad():
        torch.testing.assert_close(vae(x).sample, original.decode(original.encode(x, sample=False)), rtol=0, atol=1e-6)


def test_conversion_writes_the_latent_statistics_and_refuses_other_models(tmp_path, capsys):
    stats_file = tmp_path / "stats.json"
    assert main(["latent-stats", str(STATS_DATASET), "--output", str(stats_file), "--no-progress"]) == 0
    stats = json.loads(stats_file.read_text())
    output = tmp_path / "diffusers"
    assert main(["convert", "--config", str(OFFICIAL_CONFIG), "--ckpt", str(OFFICIAL_CKPT), "--output", str(output),
                 "--format", "diffusers", "--latent-stats", str(stats_file)]) == 0
    config = AutoencoderVidTwin.from_pretrained(output).config
    assert config.latents_mean == stats["packed"]["mean"] and config.latents_std == stats["packed"]["std"]
    assert config.latent_statistics == {"mean": stats["mean"], "std": stats["std"]}
    # Statistics of the tiny model's latents do not fit the micro FSQ model of the legacy run.
    assert main(["convert", "--ckpt", str(LEGACY / "autoencoder_run"), "--output", str(tmp_path / "other"),
                 "--format", "diffusers", "--latent-stats", str(stats_file)]) == 2
    assert "channels" in capsys.readouterr().err and not (tmp_path / "other").exists()
    # Other weights of the same shapes are refused by the dataset's weights fingerprint.
    stats["weights_fingerprint"] = "0" * 16
    stats_file.write_text(json.dumps(stats))
    assert main(["convert", "--ckpt", str(output), "--output", str(tmp_path / "again"), "--format", "diffusers",
                 "--latent-stats", str(stats_file)]) == 2
    assert "other weights" in capsys.readouterr().err
    # A folder is never converted onto itself.
    assert main(["convert", "--ckpt", str(output), "--output", str(output), "--format", "diffusers", "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err


REMOTE_LOAD = """
import sys
sys.modules["vidtwin"] = None  # any import of the package now fails
import torch
import diffusers
vae = diffusers.AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
assert not [name for name, module in sys.modules.items() if name.startswith("vidtwin") and module is not None]
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save({"module": type(vae).__module__, "reconstruction": vae(x).sample,
                "denormalized": vae.denormalize_latents(torch.zeros(1, *vae.layout.shape))}, sys.argv[3])
"""


def test_a_folder_with_its_code_loads_in_diffusers_without_the_package(tmp_path, reference, vae):
    import subprocess
    import sys

    from vidtwin.diffusers.folder import statistics_settings, write_diffusers_folder

    stats = {"packed": {"mean": [0.5] * 4, "std": [2.0] * 4}, "mean": {n: [0.25] * 4 for n in LATENT_NAMES},
             "std": {n: [3.0] * 4 for n in LATENT_NAMES}}
    folder = write_diffusers_folder(reference, tmp_path / "model", statistics_settings(stats), with_code=True)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {"AutoModel": "autoencoder_vidtwin.AutoencoderVidTwin"}
    assert (folder / "autoencoder_vidtwin.py").is_file()
    x = video(1, seed=4)
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "load.py"
    script.write_text(REMOTE_LOAD)
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # one thread, as this module runs in-process
    result = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["module"].startswith("diffusers_modules.")
    with torch.no_grad():
        torch.testing.assert_close(out["reconstruction"], vae(x).sample, rtol=0, atol=1e-6)
    assert torch.all(out["denormalized"] == 0.25)  # the per-latent statistics, carried in the config
    # Our own class loads the same folder and keeps its auto_map when saving it again.
    assert AutoencoderVidTwin.from_pretrained(folder).config.auto_map == config["auto_map"]


# ---------------------------------------------------------------------------- a pipeline
def test_random_latents_denormalized_decoded_and_written_as_a_video(tmp_path, reference):
    from vidtwin.data.video_io import read_video, write_video
    from vidtwin.diffusers.folder import statistics_settings, write_diffusers_folder

    stats_file = tmp_path / "stats.json"
    assert main(["latent-stats", str(STATS_DATASET), "--output", str(stats_file), "--no-progress"]) == 0
    folder = write_diffusers_folder(reference, tmp_path / "model", statistics_settings(json.loads(stats_file.read_text())))

    # The documented snippet (docs/diffusers.md), with random latents in place of a diffusion model's.
    vae = AutoencoderVidTwin.from_pretrained(folder).eval()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, *vae.layout.shape, generator=generator)   # what a diffusion model samples: std 1
    with torch.no_grad():
        frames = vae.decode(vae.denormalize_latents(latents)).sample      # (2, 3, T, H, W) in about [-1, 1]
    uint8 = ((frames[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)  # (T, H, W, 3)
    write_video(tmp_path / "sample.mp4", uint8, fps=8)

    read, fps = read_video(tmp_path / "sample.mp4")
    assert tuple(read.shape) == (8, 64, 64, 3) and fps == pytest.approx(8)
    # The latents decoded were in the dataset's scale: the statistics were applied, per latent and channel.
    unpacked = vae.layout.unpack(vae.denormalize_latents(latents).double())
    stats = json.loads(stats_file.read_text())
    for name in LATENT_NAMES:
        values = unpacked[name].transpose(0, 1).reshape(len(stats["mean"][name]), -1)
        expected = torch.tensor(stats["mean"][name], dtype=torch.float64)
        assert torch.allclose(values.mean(1), expected, atol=4 * max(stats["std"][name]) / values.shape[1] ** 0.5)
