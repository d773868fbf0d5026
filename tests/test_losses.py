"""Tests of the VidTwin loss, its LPIPS and its PatchGAN discriminator (CPU, random LPIPS backbone)."""

import json
import math
from pathlib import Path

import pytest
import torch

from vidtwin.losses import LPIPS, LPIPSWeightsUnavailable, NLayerDiscriminator, VidTwinLoss
from vidtwin.losses.vidtwin_loss import hinge_d_loss, vanilla_d_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def official_loss_sd():
    """The tiny official checkpoint's `loss.*` tensors, prefix stripped."""
    sd = torch.load(DATA / "tiny_official.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("loss."):]: v for k, v in sd.items() if k.startswith("loss.")}


@pytest.fixture(scope="module")
def official_shapes():
    shapes = json.loads((DATA / "official_state_dict_shapes.json").read_text())["state_dict_shapes"]
    return {k[len("loss."):]: tuple(v) for k, v in shapes.items() if k.startswith("loss.")}


def random_lpips(seed=0):
    torch.manual_seed(seed)
    return LPIPS(pretrained=False)


def fold(video):
    """(B, C, T, H, W) -> (B*T, C, H, W), written independently of the module under test."""
    b, c, t, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


# --------------------------------------------------------------------------------------- LPIPS
def test_lpips_state_dict_matches_official_layout(official_shapes):
    own = {k: tuple(v.shape) for k, v in random_lpips().state_dict().items()}
    official = {k[len("perceptual_loss."):]: v for k, v in official_shapes.items() if k.startswith("perceptual_loss.")}
    assert own == official


@pytest.mark.filterwarnings("ignore::UserWarning")  # the lpips package uses torchvision's deprecated `pretrained=`
def test_lpips_matches_the_lpips_package_with_the_same_weights():
    lpips_package = pytest.importorskip("lpips")
    torch.manual_seed(0)
    reference = lpips_package.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
    weights = {k: v for k, v in reference.state_dict().items() if not k.startswith("lins.")}
    ours = LPIPS(pretrained=False, state_dict=weights)
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    with torch.no_grad():
        expected = reference(x, y)
        got = ours(x, y)
    assert got.shape == (2, 1, 1, 1)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(ours(x, x), torch.zeros(2, 1, 1, 1))


def test_lpips_is_frozen_and_stays_in_eval_mode():
    model = random_lpips()
    torch.nn.Sequential(model).train()  # a parent switching to training mode must not reach LPIPS
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    x, y = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    assert torch.equal(model(x, y), model(x, y))  # no active dropout


def test_lpips_gradients_are_finite_even_for_identical_inputs():
    model = random_lpips()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = x.clone().requires_grad_(True)
    model(x, y).sum().backward()
    assert torch.isfinite(y.grad).all()


def test_lpips_raises_with_instructions_when_backbone_missing(empty_torch_home):
    with pytest.raises(LPIPSWeightsUnavailable) as err:
        LPIPS()
    message = str(err.value)
    assert "vgg16-397923af.pth" in message
    assert str(empty_torch_home / "hub" / "checkpoints") in message
    assert "loss.perceptual_loss.net" in message
    assert "perceptual_weight: 0" in message
    with pytest.raises(LPIPSWeightsUnavailable):
        VidTwinLoss(disc_start=0, perceptual_weight=1.0)


def test_lpips_weight_sources_in_order(empty_torch_home):
    """The hub-cache VGG file feeds `net.*`, the lpips package feeds `lin*`, given tensors win."""
    lpips_package = pytest.importorskip("lpips")
    donor = random_lpips(seed=3)
    features = {}
    for key, value in donor.state_dict().items():
        if key.startswith("net."):
            _, _, index, kind = key.split(".")  # net.slice2.5.weight -> torchvision features.5.weight
            features[f"features.{index}.{kind}"] = value
    checkpoints = empty_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(features, checkpoints / "vgg16-397923af.pth")

    given_lin0 = torch.full((1, 64, 1, 1), 0.5)
    model = LPIPS.from_sources(state_dict={"loss.perceptual_loss.lin0.model.1.weight": given_lin0})
    package = torch.load(
        Path(lpips_package.__file__).parent / "weights" / "v0.1" / "vgg.pth", map_location="cpu", weights_only=True
    )
    sd = model.state_dict()
    assert torch.equal(sd["net.slice3.12.weight"], donor.state_dict()["net.slice3.12.weight"])
    assert torch.equal(sd["lin0.model.1.weight"], given_lin0)
    assert torch.equal(sd["lin4.model.1.weight"], package["lin4.model.1.weight"])


def test_lpips_from_a_checkpoint_needs_no_download(empty_torch_home, tmp_path):
    """A checkpoint holding loss.perceptual_loss.* (VGG included) is enough, offline."""
    donor = random_lpips(seed=5)
    ckpt = tmp_path / "with_lpips.ckpt"
    torch.save({"state_dict": {f"loss.perceptual_loss.{k}": v for k, v in donor.state_dict().items()}}, ckpt)
    loss = VidTwinLoss(disc_start=0, perceptual_weight=0.05, perceptual_state_dict=str(ckpt))
    for key, value in donor.state_dict().items():
        assert torch.equal(loss.perceptual_loss.state_dict()[key], value), key


def test_lpips_rejects_incomplete_backbone():
    partial = {"net.slice1.0.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(ValueError, match="incomplete LPIPS backbone"):
        LPIPS(pretrained=False, state_dict=partial)


# ------------------------------------------------------------------------------- discriminator
def test_discriminator_layout_init_and_output(official_shapes):
    torch.manual_seed(0)
    disc = NLayerDiscriminator()
    own = {k: tuple(v.shape) for k, v in disc.state_dict().items()}
    official = {k[len("discriminator."):]: v for k, v in official_shapes.items() if k.startswith("discriminator.")}
    assert own == official
    conv = disc.main[8].weight
    assert abs(conv.mean().item()) < 1e-3 and abs(conv.std().item() - 0.02) < 1e-3
    bn = disc.main[9]
    assert abs(bn.weight.mean().item() - 1.0) < 5e-3 and abs(bn.weight.std().item() - 0.02) < 5e-3
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert disc(torch.rand(2, 3, 64, 64) * 2 - 1).shape == (2, 1, 6, 6)


# ------------------------------------------------------------------------- official checkpoint
def test_official_loss_weights_load(official_loss_sd):
    loss = VidTwinLoss(disc_start=20001, perceptual_weight=0.05, disc_weight=0.05, learn_logvar=True,
                       regularization_weights={"kl_loss": 1e-3}, lpips_pretrained=False)
    groups = loss.load_official_state_dict(official_loss_sd)
    assert groups == ["discriminator", "logvar", "perceptual_lin"]
    own = loss.state_dict()
    for key, value in official_loss_sd.items():
        assert torch.equal(own[key], value), key
    assert loss.logvar.shape == () and loss.logvar.requires_grad


def test_official_loss_weights_missing_or_misshaped_key_is_named(official_loss_sd):
    loss = VidTwinLoss(disc_start=0, perceptual_weight=0.0)
    missing = {k: v for k, v in official_loss_sd.items() if k != "discriminator.main.6.running_var"}
    with pytest.raises(ValueError, match=r"discriminator\.main\.6\.running_var"):
        loss.load_official_state_dict(missing)
    misshaped = dict(official_loss_sd)
    misshaped["discriminator.main.5.weight"] = torch.zeros(256, 128, 3, 3)
    with pytest.raises(ValueError, match=r"discriminator\.main\.5\.weight"):
        loss.load_official_state_dict(misshaped)


def test_perceptual_weight_zero_builds_no_vgg(empty_torch_home, official_loss_sd):
    loss = VidTwinLoss(disc_start=0, perceptual_weight=0.0)
    assert loss.perceptual_loss is None
    assert not any(k.startswith("perceptual_loss.") for k in loss.state_dict())
    assert loss.load_official_state_dict(official_loss_sd) == ["discriminator", "logvar"]


# ------------------------------------------------------------------------------ generator step
def toy_reconstruction(seed=0, size=32):
    """A video and a reconstruction produced by a toy 'last layer' W mixing the colour channels."""
    torch.manual_seed(seed)
    x = torch.rand(1, 3, 2, size, size) * 2 - 1
    last_layer = torch.nn.Parameter(torch.eye(3) + 0.1 * torch.randn(3, 3))
    rec = torch.einsum("ij,bjthw->bithw", last_layer, x)  # (B, 3, T, H, W)
    return x, rec, last_layer


@pytest.mark.parametrize("perceptual_weight", [0.0, 0.5])
def test_generator_loss_matches_hand_computation(perceptual_weight):
    torch.manual_seed(1)
    loss_fn = VidTwinLoss(disc_start=100, perceptual_weight=perceptual_weight, disc_weight=0.3, logvar_init=0.2,
                          regularization_weights={"kl_loss": 1e-3}, lpips_pretrained=False)
    x, rec, last_layer = toy_reconstruction()
    reg = {"kl_loss": torch.tensor(7.0), "unweighted": torch.tensor(100.0)}
    frames_x, frames_rec = fold(x), fold(rec)

    per_pixel = (frames_x - frames_rec).abs()
    if perceptual_weight:
        per_pixel = per_pixel + perceptual_weight * loss_fn.perceptual_loss(frames_x, frames_rec)
    nll = (per_pixel / math.exp(0.2) + 0.2).sum() / frames_x.shape[0]

    before, log_before = loss_fn(reg, x, rec, 0, global_step=99, last_layer=last_layer)
    assert torch.allclose(before, nll + 1e-3 * 7.0, rtol=1e-6)
    assert log_before["train/disc_factor"] == 0 and log_before["train/d_weight"] == 0
    assert "train/unweighted" not in log_before and log_before["train/kl_loss"] == 7.0

    after, log_after = loss_fn(reg, x, rec, 0, global_step=100, last_layer=last_layer)
    g_loss = -loss_fn.discriminator(frames_rec).mean()
    grad_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    grad_g = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    d_weight = 0.3 * grad_nll.norm() / (grad_g.norm() + 1e-4)
    assert torch.allclose(log_after["train/d_weight"], d_weight, rtol=1e-4)
    assert torch.allclose(after, nll + 1e-3 * 7.0 + d_weight * g_loss, rtol=1e-5)
    assert abs((after - before).item()) > 1e-6
    assert torch.allclose(log_after["train/g_loss"], g_loss.detach())

    after.backward()
    assert last_layer.grad is not None and torch.isfinite(last_layer.grad).all()


def test_squared_pixel_loss_option_and_its_check():
    loss_fn = VidTwinLoss(disc_start=100, perceptual_weight=0.0, logvar_init=0.2, pixel_loss="l2")
    x, rec, last_layer = toy_reconstruction()
    frames_x, frames_rec = fold(x), fold(rec)
    nll = ((frames_x - frames_rec).square() / math.exp(0.2) + 0.2).sum() / frames_x.shape[0]
    loss, log = loss_fn({}, x, rec, 0, global_step=0, last_layer=last_layer)
    assert torch.allclose(loss, nll, rtol=1e-6)
    assert torch.allclose(log["train/rec_loss"], (frames_x - frames_rec).square().mean())
    with pytest.raises(ValueError, match="pixel_loss must be 'l1'"):
        VidTwinLoss(disc_start=0, perceptual_weight=0.0, pixel_loss="huber")


def test_adaptive_weight_hand_computation_and_clamp():
    loss_fn = VidTwinLoss(disc_start=0, perceptual_weight=0.0, disc_weight=0.5)
    last = torch.nn.Parameter(torch.randn(4, 5))
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    weight = loss_fn.calculate_adaptive_weight((a * last).sum(), (b * last).sum(), last)
    assert torch.allclose(weight, 0.5 * a.norm() / (b.norm() + 1e-4))
    assert not weight.requires_grad
    # A GAN loss with no gradient at the last layer would give ||a|| / 1e-4: clamped to 1e4.
    clamped = loss_fn.calculate_adaptive_weight((100 * a * last).sum(), (0 * last).sum(), last)
    assert torch.allclose(clamped, torch.tensor(0.5 * 1e4))


def test_adaptive_weight_without_gradients_is_zero_and_needs_last_layer_otherwise():
    loss_fn = VidTwinLoss(disc_start=0, perceptual_weight=0.0).eval()
    x, rec, _ = toy_reconstruction()
    with torch.no_grad():
        loss, log = loss_fn({}, x, rec, 0, global_step=5, last_layer=None, split="val")
    assert log["val/d_weight"] == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="last_layer"):
        loss_fn({}, x, rec, 0, global_step=5, last_layer=None)


def test_trainable_parameter_groups():
    fixed = VidTwinLoss(disc_start=1000, perceptual_weight=0.0)
    learned = VidTwinLoss(disc_start=1000, perceptual_weight=0.0, learn_logvar=True)
    assert list(fixed.get_trainable_autoencoder_parameters()) == [] and not fixed.logvar.requires_grad
    assert list(learned.get_trainable_autoencoder_parameters()) == [learned.logvar]
    assert list(learned.get_trainable_parameters()) == list(learned.discriminator.parameters())
    x, rec, _ = toy_reconstruction()
    loss, _ = learned({}, x, rec, 0, global_step=0)
    loss.backward()
    assert learned.logvar.grad is not None


def test_video_layout_is_checked():
    loss_fn = VidTwinLoss(disc_start=0, perceptual_weight=0.0)
    frames = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        loss_fn({}, frames, frames, 0, global_step=0)


# -------------------------------------------------------------------------- discriminator step
def test_hinge_and_vanilla_on_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1, 2.5]: 0.5 * (2.5/3 + 3.5/3) = 1.0
    assert torch.allclose(hinge_d_loss(real, fake), torch.tensor(1.0))
    softplus = lambda v: math.log1p(math.exp(v))
    expected = 0.5 * (sum(softplus(-r) for r in real.tolist()) / 3 + sum(softplus(f) for f in fake.tolist()) / 3)
    assert torch.allclose(vanilla_d_loss(real, fake), torch.tensor(expected))


def test_discriminator_step_is_hinge_of_the_discriminator_logits():
    torch.manual_seed(0)
    loss_fn = VidTwinLoss(disc_start=10, perceptual_weight=0.0).eval()
    x, rec, _ = toy_reconstruction()
    rec = rec.detach()
    logits_real = loss_fn.discriminator(fold(x))
    logits_fake = loss_fn.discriminator(fold(rec))
    expected = 0.5 * ((1 - logits_real).clamp(min=0).mean() + (1 + logits_fake).clamp(min=0).mean())
    d_loss, log = loss_fn({}, x, rec, 1, global_step=10)
    assert torch.allclose(d_loss, expected)
    assert torch.allclose(log["train/logits_real"], logits_real.mean())
    off, _ = loss_fn({}, x, rec, 1, global_step=9)
    assert off.item() == 0.0


def test_lecam_regularisation_uses_updated_ema():
    torch.manual_seed(0)
    loss_fn = VidTwinLoss(disc_start=0, perceptual_weight=0.0, lecam_loss_weight=0.1, lecam_decay=0.9)
    loss_fn.discriminator.eval()  # fixed BatchNorm statistics so the logits can be recomputed
    x, rec, _ = toy_reconstruction()
    rec = rec.detach()
    d_loss, log = loss_fn({}, x, rec, 1, global_step=0)
    logits_real = loss_fn.discriminator(fold(x))
    logits_fake = loss_fn.discriminator(fold(rec))
    ema_real, ema_fake = 0.1 * logits_real.mean(), 0.1 * logits_fake.mean()
    lecam = (logits_real - ema_fake).clamp(min=0).pow(2).mean() + (ema_real - logits_fake).clamp(min=0).pow(2).mean()
    assert torch.allclose(loss_fn.lecam_ema_real, ema_real) and torch.allclose(loss_fn.lecam_ema_fake, ema_fake)
    assert torch.allclose(log["train/lecam_loss"], lecam)
    assert torch.allclose(d_loss, hinge_d_loss(logits_real, logits_fake) + 0.1 * lecam)
    assert "lecam_ema_real" in loss_fn.state_dict()
