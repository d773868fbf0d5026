"""LPIPS (VGG16) perceptual distance, with state_dict keys that match the official checkpoint.

The official VidTwin checkpoint stores the perceptual network under ``loss.perceptual_loss.*``
with the layout of the ``lpips`` package (and of the taming-transformers LPIPS):

- ``scaling_layer.shift`` / ``scaling_layer.scale``  (1, 3, 1, 1) constant input normalisation,
- ``net.slice1 .. net.slice5.<i>.weight/bias``       VGG16 ``features[i]`` convolutions,
- ``lin0 .. lin4.model.1.weight``                    (1, C, 1, 1) learned channel weights
  (``model.0`` is a parameter-free Dropout).

This module reproduces that layout so the official weights load one-to-one.

Weights come from, in order of preference:

1. a state_dict handed in by the caller (e.g. the official checkpoint's ``loss.perceptual_loss.*``),
2. the linear-layer weights shipped inside the ``lpips`` pip package (``weights/v0.1/vgg.pth``),
3. torchvision's ImageNet VGG16 file (``vgg16-397923af.pth``) if it already sits in the torch hub
   cache; it is only downloaded when the caller explicitly allows it.

When the VGG16 backbone is needed and none of these has it, :class:`LPIPSWeightsUnavailable` is
raised with instructions, instead of starting a download that would hang on an offline machine.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import UserError
from ..state_dict_io import check_state_dict, read_checkpoint_state_dict

logger = logging.getLogger(__name__)

# torchvision's ImageNet VGG16 weights (VGG16_Weights.IMAGENET1K_V1).
VGG16_FILENAME = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/" + VGG16_FILENAME

# VGG16 `features`: conv widths with "M" for 2x2 max-pooling. Each conv is followed by a ReLU.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# LPIPS taps the ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: `features[a:b]` per slice.
_SLICE_BOUNDS = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_CHANNELS = (64, 128, 256, 512, 512)
# Input normalisation of LPIPS v0.1 (ImageNet statistics expressed for inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPSWeightsUnavailable(RuntimeError, UserError):
    """The VGG16 backbone (or the LPIPS linear weights) could not be found without downloading."""


def _missing_backbone_message(hub_checkpoints: Path, cause: str = "") -> str:
    detail = f" ({cause})" if cause else ""
    return (
        f"LPIPS needs the ImageNet VGG16 weights, which are not available offline{detail}. "
        f"Either put {VGG16_FILENAME} into {hub_checkpoints}/ (or point TORCH_HOME at a cache that "
        f"has it), or fine-tune from a checkpoint that holds loss.perceptual_loss.net.*, or set "
        f"perceptual_weight: 0 in the loss config to train without the perceptual term."
    )


def _build_vgg16_features() -> list[nn.Module]:
    """VGG16 `features` as a flat list, indexed exactly like torchvision's (0..29)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_ch, item, kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=False))
            in_ch = item
    return layers


class VGG16Slices(nn.Module):
    """VGG16 convolutional trunk split into the five LPIPS taps (``slice1`` .. ``slice5``)."""

    def __init__(self) -> None:
        super().__init__()
        features = _build_vgg16_features()
        for slice_idx, (start, stop) in enumerate(_SLICE_BOUNDS, start=1):
            block = nn.Sequential()
            for i in range(start, stop):
                # Keep torchvision's layer index as the child name: keys become `slice2.5.weight`.
                block.add_module(str(i), features[i])
            self.add_module(f"slice{slice_idx}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for slice_idx in range(1, len(_SLICE_BOUNDS) + 1):
            x = getattr(self, f"slice{slice_idx}")(x)
            taps.append(x)
        return taps


class ScalingLayer(nn.Module):
    """Shift/scale normalisation of LPIPS v0.1; the constants are buffers so they live in the state_dict."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """1x1 convolution to one channel; ``model.0`` is the official Dropout, never active (see LPIPS)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each feature vector (dim 1) by its L2 norm, as LPIPS does.

    The squared norm is floored at eps**2 before the square root: the value is unchanged wherever
    the norm exceeds eps, but a position whose features are all zero no longer produces NaN
    gradients through sqrt(0).
    """
    norm = torch.sqrt(torch.sum(x * x, dim=1, keepdim=True).clamp_min(eps * eps))
    return x / (norm + eps)


def lpips_state_dict_from(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pick the LPIPS tensors out of a full checkpoint state_dict, a loss state_dict or a bare one.

    Accepts keys under ``loss.perceptual_loss.`` (official Lightning checkpoint),
    ``perceptual_loss.`` (the loss module's own state_dict) or bare LPIPS keys.
    """
    for prefix in ("loss.perceptual_loss.", "perceptual_loss."):
        picked = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if picked:
            return picked
    roots = ("scaling_layer.", "net.", "lin0.", "lin1.", "lin2.", "lin3.", "lin4.")
    return {k: v for k, v in state_dict.items() if k.startswith(roots)}


def read_lpips_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read LPIPS tensors from a file: a Lightning ``.ckpt`` / ``.pt`` (weights-only unpickling) or
    a ``.safetensors`` file, with any of the key layouts :func:`lpips_state_dict_from` accepts."""
    picked = lpips_state_dict_from(read_checkpoint_state_dict(path))
    if not picked:
        raise ValueError(f"{path} holds no LPIPS weights (no keys under loss.perceptual_loss.*)")
    return picked


def _package_linear_weights() -> dict[str, torch.Tensor] | None:
    """The calibrated ``lin*`` weights shipped in the ``lpips`` pip package, or None if absent."""
    try:
        import lpips as lpips_package
    except ImportError:
        return None
    path = Path(lpips_package.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    if not path.is_file():
        return None
    # The file was saved from CUDA tensors; map to CPU so it reads on any machine.
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in raw.items() if k.startswith(("lin0.", "lin1.", "lin2.", "lin3.", "lin4."))}


def _torchvision_vgg16_backbone(allow_download: bool) -> dict[str, torch.Tensor]:
    """ImageNet VGG16 `features.*` from the torch hub cache, renamed to ``net.slice*.*`` keys."""
    hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    cached = hub_checkpoints / VGG16_FILENAME
    if cached.is_file():
        raw = torch.load(cached, map_location="cpu", weights_only=True)
    elif allow_download:
        try:
            raw = torch.hub.load_state_dict_from_url(VGG16_URL, map_location="cpu", progress=True)
        except Exception as err:  # network errors come in many types; all mean "not available"
            raise LPIPSWeightsUnavailable(_missing_backbone_message(hub_checkpoints, f"download failed: {err}")) from err
    else:
        raise LPIPSWeightsUnavailable(_missing_backbone_message(hub_checkpoints, f"{cached} does not exist"))
    backbone = {}
    for slice_idx, (start, stop) in enumerate(_SLICE_BOUNDS, start=1):
        for i in range(start, stop):
            for kind in ("weight", "bias"):
                key = f"features.{i}.{kind}"
                if key in raw:
                    backbone[f"net.slice{slice_idx}.{i}.{kind}"] = raw[key]
    return backbone


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity with a VGG16 trunk (LPIPS v0.1).

    Input: two image batches ``(N, 3, H, W)`` in [-1, 1]. Output: ``(N, 1, 1, 1)`` distance, the sum
    over the five VGG taps of the spatially averaged, channel-weighted squared difference of the
    unit-normalised features (0 for identical images).

    Args:
        pretrained: if True, weights missing from ``state_dict`` are taken from the ``lpips`` package
            (linear layers) and the torch hub cache (VGG16 backbone); :class:`LPIPSWeightsUnavailable`
            is raised when one is missing. If False, missing weights stay randomly initialised
            (deterministic under ``torch.manual_seed``): a stand-in for tests and offline smoke runs,
            not a perceptual metric.
        state_dict: LPIPS tensors (bare keys, or any layout :func:`lpips_state_dict_from` accepts)
            that take precedence over every other source, e.g. the official checkpoint's.
        allow_download: let torchvision download the VGG16 file when it is not cached.

    The network is frozen (no parameter requires grad) and always in eval mode, so the Dropout in
    ``lin*`` never fires. The official loss behaves the same: it builds its LPIPS with dropout
    (``vidtok.modules.lpips.LPIPS(use_dropout=True)``, like ``lpips.LPIPS(use_dropout=True)`` of the
    lpips package: a ``Dropout(p=0.5)`` before each ``lin`` convolution) and calls ``.eval()`` on it
    once, at construction. Nothing switches it back: the Lightning the official environment pins
    (pytorch-lightning 2.2.4; every version since 2.2) never calls ``.train()`` on the whole module
    during fit and, after each validation, restores every submodule's own mode. So the Dropout is
    inactive in the official training too, and the perceptual term is deterministic in both.
    """

    def __init__(
        self,
        pretrained: bool = True,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        allow_download: bool = False,
    ) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Slices()
        for idx, channels in enumerate(_CHANNELS):
            self.add_module(f"lin{idx}", NetLinLayer(channels))
        self._init_random()

        given = lpips_state_dict_from(state_dict) if state_dict is not None else {}
        self._check_keys(given)
        sources = {"given": sorted({k.split(".")[0] for k in given})}
        if pretrained:
            missing = set(self.state_dict()) - set(given)
            if any(k.startswith("lin") for k in missing):
                package = _package_linear_weights()
                if package is None:
                    raise LPIPSWeightsUnavailable(
                        "LPIPS linear-layer weights were not given and the `lpips` package (which ships "
                        "them) is not installed: pip install 'vidtwin[lpips]' (included in [train]), "
                        "or set perceptual_weight: 0."
                    )
                given = {**package, **given}
                sources["lpips package"] = ["lin0-4"]
            if any(k.startswith("net.") for k in missing):
                given = {**_torchvision_vgg16_backbone(allow_download), **given}
                sources["torchvision VGG16"] = ["net"]
        if given:
            self.load_weights(given)
        logger.info("LPIPS weights: %s", ", ".join(f"{src}: {v}" for src, v in sources.items() if v) or "random")

        for param in self.parameters():
            param.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_sources(
        cls, state_dict: Mapping[str, torch.Tensor] | None = None, allow_download: bool = False
    ) -> "LPIPS":
        """Real LPIPS: given weights first, then the ``lpips`` package, then the torch hub cache."""
        return cls(pretrained=True, state_dict=state_dict, allow_download=allow_download)

    def _init_random(self) -> None:
        for module in self.net.modules():
            if isinstance(module, nn.Conv2d):
                # torchvision's VGG initialisation keeps random activations at a sane scale.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for idx, channels in enumerate(_CHANNELS):
            # Non-negative weights averaging to 1/C, so the random stand-in is still a distance (>= 0).
            nn.init.uniform_(getattr(self, f"lin{idx}").model[1].weight, 0.0, 2.0 / channels)

    def _check_keys(self, given: Mapping[str, torch.Tensor]) -> None:
        """Raise (a ValueError) on unknown or mis-shaped keys, and on a partial VGG backbone."""
        own = self.state_dict()
        check_state_dict(given, own, "LPIPS weights", "the LPIPS network", require_all=False)
        net_given = {k for k in given if k.startswith("net.")}
        net_all = {k for k in own if k.startswith("net.")}
        if net_given and net_given != net_all:
            raise ValueError(f"incomplete LPIPS backbone: missing {sorted(net_all - net_given)[:5]}")

    def load_weights(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy in a subset of the LPIPS tensors (bare keys); raises ValueError on unknown or
        mis-shaped keys and on a partial VGG backbone."""
        self._check_keys(tensors)
        self.load_state_dict(dict(tensors), strict=False)

    def train(self, mode: bool = True) -> "LPIPS":
        # A parent's .train() must not switch this module out of eval mode (see class docstring).
        return super().train(False)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Distance between ``input`` and ``target`` (both (N, 3, H, W) in [-1, 1]) -> (N, 1, 1, 1)."""
        feats_in = self.net(self.scaling_layer(input))
        feats_tg = self.net(self.scaling_layer(target))
        total = None
        for idx, (fa, fb) in enumerate(zip(feats_in, feats_tg)):
            diff = (_unit_normalize(fa) - _unit_normalize(fb)) ** 2  # (N, C_k, H_k, W_k)
            layer = getattr(self, f"lin{idx}")(diff).mean(dim=(2, 3), keepdim=True)  # (N, 1, 1, 1)
            total = layer if total is None else total + layer
        return total


__all__ = ["LPIPS", "LPIPSWeightsUnavailable", "lpips_state_dict_from", "read_lpips_state_dict"]
