"""The Kinetics-400 Inflated 3D ConvNet (I3D) whose logits every FVD implementation uses.

Carreira and Zisserman, "Quo Vadis, Action Recognition?" (CVPR 2017): an Inception-v1 network
with its 2D kernels inflated to 3D. FVD (Unterthiner et al., 2018) takes the 400-d pre-softmax
output of DeepMind's TF-Hub model; the PyTorch ports (VideoGPT, TATS, ``cd-fvd``) load that model's
converted weights, ``i3d_pretrained_400.pt``, into one module layout. This module has the same
parameter names, so that file loads here with strict key checking, and computes the same function:

- every convolution and pooling pads TensorFlow-style ("SAME"): the padding depends on the input
  size and puts the odd pixel at the end;
- BatchNorm eps is 1e-5, as in those ports;
- the logits are averaged over the remaining time steps (two for 16 input frames at 224x224).

Input: float ``(B, 3, T, 224, 224)`` in [-1, 1], ``T >= 9`` (three temporal stride-2 stages and
the final 2-step average pool); output: ``(B, 400)`` logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 400
INPUT_SIZE = 224  # the side the network was trained on; the final 7x7 average pool needs it
MIN_FRAMES = 9  # fewer frames leave one time step before the final 2-step average pool
FEATURE_CHANNELS = 1024  # Mixed_5c output channels, the logits layer's input

# Inception block widths: (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool projection).
INCEPTION_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one axis: ``(before, after)``, so that out = ceil(size / stride)."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad ``(B, C, T, H, W)`` for a "SAME" convolution or pooling."""
    pads = [same_padding(size, k, s) for size, k, s in zip(x.shape[2:], kernel, stride)]  # (t, h, w) pairs
    (t0, t1), (h0, h1), (w0, w1) = pads
    return F.pad(x, (w0, w1, h0, h1, t0, t1))  # F.pad lists the last axis first


class Unit3D(nn.Module):
    """"SAME"-padded Conv3d, then BatchNorm and ReLU (the logits layer: conv with bias only)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=not batch_norm)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pooling after zero "SAME" padding (inputs are ReLU outputs, so zeros never win over them)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1), concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        one, reduce_a, three_a, reduce_b, three_b, pool_projection = widths
        self.b0 = Unit3D(in_channels, one)
        self.b1a = Unit3D(in_channels, reduce_a)
        self.b1b = Unit3D(reduce_a, three_a, kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, reduce_b)
        self.b2b = Unit3D(reduce_b, three_b, kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, pool_projection)
        self.out_channels = one + three_a + three_b + pool_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """I3D up to its Kinetics-400 logits; parameter names as in ``i3d_pretrained_400.pt``.

    ``forward``: float ``(B, 3, T, H, W)`` in [-1, 1] with ``H = W = 224`` and ``T >= 9`` ->
    ``(B, 400)`` logits, averaged over time. Dropout is left out: it is the identity in eval mode.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        # The layers are registered under the names of the weights file, in the order they run.
        self.layer_names: list[str] = []

        def add(name: str, layer: nn.Module) -> None:
            self.add_module(name, layer)
            self.layer_names.append(name)

        add("Conv3d_1a_7x7", Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2)))
        add("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2)))
        add("Conv3d_2b_1x1", Unit3D(64, 64))
        add("Conv3d_2c_3x3", Unit3D(64, 192, kernel=(3, 3, 3)))
        add("MaxPool3d_3a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2)))
        channels = 192
        for name, widths in INCEPTION_WIDTHS.items():
            if name == "Mixed_4b":
                add("MaxPool3d_4a_3x3", MaxPool3dSame((3, 3, 3), (2, 2, 2)))
            elif name == "Mixed_5b":
                add("MaxPool3d_5a_2x2", MaxPool3dSame((2, 2, 2), (2, 2, 2)))
            block = InceptionBlock(channels, widths)
            add(name, block)
            channels = block.out_channels
        self.logits = Unit3D(channels, num_classes, batch_norm=False, relu=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, 224, 224)`` -> Mixed_5c activations ``(B, 1024, ceil(T / 8), 7, 7)``."""
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # (B, 1024, t - 1, h - 6, w - 6); (B, 1024, 1, 1, 1) at 16x224
        x = self.logits(x)  # (B, 400, t', 1, 1)
        return x.flatten(2).mean(dim=2)  # (B, 400): the mean over the remaining time steps


def temporal_steps(num_frames: int) -> int:
    """Time steps left after the three stride-2 stages; the final average pool needs at least 2."""
    steps = num_frames
    for _ in range(3):
        steps = math.ceil(steps / 2)
    return steps
