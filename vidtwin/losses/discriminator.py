"""PatchGAN discriminator (pix2pix / taming-transformers layout) used by the VidTwin GAN loss.

VidTwin applies this 2D discriminator to every frame independently (frames folded into the batch).
Layer indices inside ``main`` follow the official checkpoint (``loss.discriminator.main.{0,2,3,...}``):
for ``n_layers=3`` they are

    0 conv 3->64 (stride 2, bias)   1 LeakyReLU(0.2)
    2 conv 64->128 (stride 2)       3 norm    4 LeakyReLU(0.2)
    5 conv 128->256 (stride 2)      6 norm    7 LeakyReLU(0.2)
    8 conv 256->512 (stride 1)      9 norm   10 LeakyReLU(0.2)
   11 conv 512->1 (stride 1, bias)

The convolutions followed by BatchNorm carry no bias (the norm's shift replaces it).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def weights_init(module: nn.Module) -> None:
    """DCGAN initialisation, as in the official code: conv weights ~ N(0, 0.02); BatchNorm weight ~
    N(1, 0.02) and bias 0. Conv biases keep PyTorch's default initialisation."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: maps images ``(N, input_nc, H, W)`` in [-1, 1] to patch logits ``(N, 1, H', W')``.

    Each output logit sees a 70x70 receptive field for ``n_layers=3``; for 64x64 inputs
    ``H' = W' = 6``.

    Args:
        input_nc: input channels (3 for RGB frames).
        ndf: width of the first convolution; later widths are ``ndf * min(2**n, 8)``.
        n_layers: number of stride-2 convolutions after the first one, minus one (see module docstring).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        kernel, pad = 4, 1

        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=kernel, stride=2, padding=pad),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev_mult, mult = mult, min(2**n, 8)
            # The last of these keeps the resolution (stride 1); the others halve it.
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev_mult, ndf * mult, kernel_size=kernel, stride=stride, padding=pad, bias=False),
                nn.BatchNorm2d(ndf * mult),  # its shift makes a conv bias redundant
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=kernel, stride=1, padding=pad))
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


__all__ = ["NLayerDiscriminator", "weights_init"]
