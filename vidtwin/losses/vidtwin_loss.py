"""The VidTwin training objective: L1 + LPIPS reconstruction under a learned log-variance, KL
regularisation, and a per-frame PatchGAN with an adaptive weight.

This is the loss the official VidTwin configs select (``GeneralLPIPSWithDiscriminator`` with
``dims: 3`` and ``disc_type: 2d``). Constructor arguments keep the official YAML names so an
official ``loss_config.params`` block maps one-to-one onto :class:`VidTwinLoss`.

Generator step (``optimizer_idx == 0``), with the T frames of each clip folded into the batch
(N = B*T images):

    rec   = pixelloss_weight * |x - x_rec| + perceptual_weight * LPIPS(x, x_rec)   # per pixel
    nll   = sum(rec / exp(logvar) + logvar) / N                                    # per-frame sum
    g     = -mean(D(x_rec))
    w_adv = clamp(||d nll / d W_last|| / (||d g / d W_last|| + 1e-4), 0, 1e4) * disc_weight
    loss  = nll + w_adv * disc_factor(step) * g + sum_k regularization_weights[k] * reg[k]

where ``disc_factor(step)`` is 0 before ``disc_start``. Discriminator step (``optimizer_idx == 1``):
``disc_factor(step) * (hinge or vanilla loss [+ lecam_loss_weight * LeCAM])`` on detached inputs.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..state_dict_io import check_state_dict
from .discriminator import NLayerDiscriminator
from .lpips import LPIPS, lpips_state_dict_from, read_lpips_state_dict

logger = logging.getLogger(__name__)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean(softplus(-D(real))) + mean(softplus(D(fake)))): the logistic GAN loss."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def adopt_weight(weight: float, global_step: int, threshold: int = 0, value: float = 0.0) -> float:
    """``value`` before ``threshold`` steps, ``weight`` from then on (switches the GAN on at disc_start)."""
    return value if global_step < threshold else weight


def lecam_reg(
    logits_real: torch.Tensor, logits_fake: torch.Tensor, ema_real: torch.Tensor, ema_fake: torch.Tensor
) -> torch.Tensor:
    """LeCAM regulariser (Tseng et al., CVPR 2021): pulls D(real) towards the EMA of D(fake) and
    D(fake) towards the EMA of D(real), only where they overshoot."""
    return F.relu(logits_real - ema_fake).pow(2).mean() + F.relu(ema_real - logits_fake).pow(2).mean()


class VidTwinLoss(nn.Module):
    """Autoencoder + discriminator loss for videos ``(B, 3, T, H, W)`` (``dims=3``) or images
    ``(N, 3, H, W)`` (``dims=2``), all in [-1, 1].

    Args (official YAML names):
        disc_start: generator step from which the GAN terms are switched on.
        logvar_init: initial value of the scalar log-variance.
        pixelloss_weight: weight of the pixel term. The official code stores but never applies it, so
            only the default 1.0 reproduces the official objective.
        pixel_loss: "l1" (the official objective) or "l2" (squared error). L1 pulls each pixel
            towards its median, so on clips that are mostly one flat colour (a digit on a dark
            background) predicting the background is where it settles first; the squared error's
            gradient grows with the error and reaches the few bright pixels sooner.
        disc_num_layers, disc_in_channels: PatchGAN depth and input channels.
        disc_factor: GAN weight once active (0 disables the GAN entirely).
        disc_weight: multiplier of the adaptive GAN weight.
        perceptual_weight: LPIPS weight; 0 builds no LPIPS at all (no VGG weights needed).
        disc_loss: "hinge" or "vanilla".
        learn_logvar: train ``logvar`` with the autoencoder.
        regularization_weights: weight per regulariser name, e.g. ``{"kl_loss": 1e-3}``; entries of
            ``regularization_log`` without a weight are ignored.
        lecam_loss_weight: weight of the LeCAM regulariser on the discriminator (0 = off).
        lecam_decay: EMA decay of the mean real / fake logits used by LeCAM.
        dims: 3 for videos (frames folded into the batch for LPIPS and the discriminator), 2 for images.
        disc_type: "2d" (per-frame PatchGAN), the only type VidTwin uses.
        perceptual_state_dict: LPIPS weights to use: a state_dict (bare LPIPS keys, a loss state_dict
            or a whole checkpoint state_dict) or the path of a checkpoint holding
            ``loss.perceptual_loss.*``. Missing pieces come from the ``lpips`` package and the
            torch hub cache.
        lpips_pretrained: False builds LPIPS with a random backbone (tests / offline smoke runs).
    """

    def __init__(
        self,
        disc_start: int,
        logvar_init: float = 0.0,
        pixelloss_weight: float = 1.0,
        pixel_loss: str = "l1",
        disc_num_layers: int = 3,
        disc_in_channels: int = 3,
        disc_factor: float = 1.0,
        disc_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        disc_loss: str = "hinge",
        learn_logvar: bool = False,
        regularization_weights: Mapping[str, float] | None = None,
        lecam_loss_weight: float = 0.0,
        lecam_decay: float = 0.999,
        dims: int = 3,
        disc_type: str = "2d",
        perceptual_state_dict: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
        lpips_pretrained: bool = True,
    ) -> None:
        super().__init__()
        if disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {disc_loss!r}")
        if pixel_loss not in ("l1", "l2"):
            raise ValueError(f"pixel_loss must be 'l1' (the official objective) or 'l2', got {pixel_loss!r}")
        if disc_type != "2d":
            raise ValueError(f"disc_type must be '2d' (the per-frame PatchGAN VidTwin uses), got {disc_type!r}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 (images) or 3 (videos), got {dims}")

        self.dims = dims
        self.disc_start = int(disc_start)
        self.pixel_weight = float(pixelloss_weight)
        self.pixel_loss = pixel_loss
        self.perceptual_weight = float(perceptual_weight)
        self.disc_factor = float(disc_factor)
        self.discriminator_weight = float(disc_weight)
        self.learn_logvar = bool(learn_logvar)
        self.regularization_weights = {str(k): float(v) for k, v in (regularization_weights or {}).items()}
        self.lecam_loss_weight = float(lecam_loss_weight)
        self.lecam_decay = float(lecam_decay)
        self.disc_loss_fn = hinge_d_loss if disc_loss == "hinge" else vanilla_d_loss

        self.logvar = nn.Parameter(torch.full((), float(logvar_init)), requires_grad=self.learn_logvar)
        self.discriminator = NLayerDiscriminator(input_nc=disc_in_channels, n_layers=disc_num_layers)

        self.perceptual_loss: LPIPS | None = None
        if self.perceptual_weight > 0:
            if isinstance(perceptual_state_dict, (str, os.PathLike)):
                perceptual_state_dict = read_lpips_state_dict(perceptual_state_dict)
            self.perceptual_loss = LPIPS(pretrained=lpips_pretrained, state_dict=perceptual_state_dict)

        if self.lecam_loss_weight > 0:
            # Buffers (not Python floats) so the EMAs are saved with checkpoints and resume exactly.
            self.register_buffer("lecam_ema_real", torch.zeros(()))
            self.register_buffer("lecam_ema_fake", torch.zeros(()))

    # ----------------------------------------------------------------------------------- parameters
    def get_trainable_autoencoder_parameters(self) -> Iterator[nn.Parameter]:
        """Loss parameters that belong to the autoencoder optimizer (``logvar`` when learnable)."""
        if self.learn_logvar:
            yield self.logvar

    def get_trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the discriminator optimizer."""
        return self.discriminator.parameters()

    # ------------------------------------------------------------------------------- loss pieces
    def calculate_adaptive_weight(
        self, nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor
    ) -> torch.Tensor:
        """Balance the GAN gradient against the reconstruction gradient at the decoder's last layer:
        ``clamp(||grad nll|| / (||grad g|| + 1e-4), 0, 1e4) * disc_weight``, detached."""
        nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
        return torch.clamp(d_weight, 0.0, 1e4).detach() * self.discriminator_weight

    def _fold_frames(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Videos (B, C, T, H, W) -> frames (B*T, C, H, W); images pass through."""
        expected = self.dims + 2
        if x.ndim != expected:
            layout = "(B, C, T, H, W)" if self.dims == 3 else "(N, C, H, W)"
            raise ValueError(f"{name} must be {layout} for dims={self.dims}, got shape {tuple(x.shape)}")
        if self.dims == 3:
            x = rearrange(x, "b c t h w -> (b t) c h w")  # (B*T, C, H, W)
        return x.contiguous()

    def forward(
        self,
        regularization_log: Mapping[str, torch.Tensor],
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        optimizer_idx: int,
        global_step: int,
        last_layer: torch.Tensor | None = None,
        split: str = "train",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss and a dict of detached logs (keys ``"{split}/..."``).

        ``optimizer_idx`` 0 = autoencoder (generator) step, 1 = discriminator step.
        ``last_layer`` is the decoder's final weight (``model.get_last_layer()``); it is needed for
        the adaptive GAN weight once ``global_step >= disc_start`` and gradients are enabled.
        Without gradients (validation) the adaptive weight is 0, as in the official code.
        """
        if inputs.shape != reconstructions.shape:
            raise ValueError(f"inputs {tuple(inputs.shape)} and reconstructions {tuple(reconstructions.shape)} differ")
        if optimizer_idx == 0:
            return self._generator_step(regularization_log, inputs, reconstructions, global_step, last_layer, split)
        if optimizer_idx == 1:
            return self._discriminator_step(inputs, reconstructions, global_step, split)
        raise ValueError(f"optimizer_idx must be 0 (autoencoder) or 1 (discriminator), got {optimizer_idx}")

    def _generator_step(self, regularization_log, inputs, reconstructions, global_step, last_layer, split):
        inputs = self._fold_frames(inputs, "inputs")  # (N, C, H, W), N = B*T
        reconstructions = self._fold_frames(reconstructions, "reconstructions")  # (N, C, H, W)

        difference = inputs - reconstructions  # (N, C, H, W)
        rec_loss = difference.abs() if self.pixel_loss == "l1" else difference.square()
        if self.pixel_weight != 1.0:
            rec_loss = self.pixel_weight * rec_loss
        if self.perceptual_loss is not None:
            p_loss = self.perceptual_loss(inputs, reconstructions)  # (N, 1, 1, 1), broadcast per pixel
            rec_loss = rec_loss + self.perceptual_weight * p_loss
        else:
            p_loss = torch.zeros((), device=inputs.device)

        # Official reduction: sum over every element, divided by the number of frames.
        nll_map = rec_loss / torch.exp(self.logvar) + self.logvar  # (N, C, H, W)
        nll_loss = nll_map.sum() / nll_map.shape[0]

        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.disc_start)
        if disc_factor > 0:
            logits_fake = self.discriminator(reconstructions)  # (N, 1, H', W')
            g_loss = -logits_fake.mean()
            d_weight = self._adaptive_weight_or_zero(nll_loss, g_loss, last_layer)
            loss = nll_loss + d_weight * disc_factor * g_loss
        else:
            # The GAN term is multiplied by 0 before disc_start: compute g_loss for the log only and
            # skip both the adaptive-weight gradients and the backward pass through D. Without any
            # GAN (disc_factor 0) skip D altogether: its forward pass would cost more than a tiny
            # autoencoder's whole update, for a logged number that means nothing.
            if self.disc_factor > 0:
                with torch.no_grad():
                    g_loss = -self.discriminator(reconstructions).mean()
            else:
                g_loss = torch.zeros((), device=inputs.device)
            d_weight = torch.zeros((), device=inputs.device)
            loss = nll_loss

        log: dict[str, torch.Tensor] = {}
        for name, value in regularization_log.items():
            if name in self.regularization_weights:
                loss = loss + self.regularization_weights[name] * value
                log[f"{split}/{name}"] = value.detach().mean()

        log.update(
            {
                f"{split}/total_loss": loss.detach().clone(),
                f"{split}/logvar": self.logvar.detach().clone(),
                f"{split}/nll_loss": nll_loss.detach(),
                f"{split}/rec_loss": rec_loss.detach().mean(),
                f"{split}/p_loss": p_loss.detach().mean(),
                f"{split}/d_weight": d_weight.detach(),
                f"{split}/disc_factor": torch.tensor(disc_factor, device=inputs.device),
                f"{split}/g_loss": g_loss.detach(),
            }
        )
        return loss, log

    def _adaptive_weight_or_zero(self, nll_loss, g_loss, last_layer) -> torch.Tensor:
        if not (nll_loss.requires_grad and g_loss.requires_grad):
            # No graph (validation under no_grad): the official code falls back to 0 here.
            return torch.zeros((), device=nll_loss.device)
        if last_layer is None:
            raise ValueError("last_layer is required for the adaptive GAN weight: pass model.get_last_layer()")
        return self.calculate_adaptive_weight(nll_loss, g_loss, last_layer)

    def _discriminator_step(self, inputs, reconstructions, global_step, split):
        inputs = self._fold_frames(inputs, "inputs").detach()  # (N, C, H, W)
        reconstructions = self._fold_frames(reconstructions, "reconstructions").detach()  # (N, C, H, W)
        logits_real = self.discriminator(inputs)  # (N, 1, H', W')
        logits_fake = self.discriminator(reconstructions)  # (N, 1, H', W')

        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.disc_start)
        gan_d_loss = self.disc_loss_fn(logits_real, logits_fake)
        log: dict[str, torch.Tensor] = {}
        if self.lecam_loss_weight > 0:
            if self.training:
                # Update first, then regularise against the updated EMAs (the official order).
                with torch.no_grad():
                    d = self.lecam_decay
                    self.lecam_ema_real.mul_(d).add_((1 - d) * logits_real.mean())
                    self.lecam_ema_fake.mul_(d).add_((1 - d) * logits_fake.mean())
            lecam = lecam_reg(logits_real, logits_fake, self.lecam_ema_real, self.lecam_ema_fake)
            d_loss = disc_factor * (self.lecam_loss_weight * lecam + gan_d_loss)
            log[f"{split}/lecam_loss"] = lecam.detach()
        else:
            d_loss = disc_factor * gan_d_loss

        log.update(
            {
                f"{split}/disc_loss": d_loss.detach().clone(),
                f"{split}/logits_real": logits_real.detach().mean(),
                f"{split}/logits_fake": logits_fake.detach().mean(),
                f"{split}/disc_factor": torch.tensor(disc_factor, device=inputs.device),
                f"{split}/non_saturated_d_loss": gan_d_loss.detach(),
            }
        )
        return d_loss, log

    # ------------------------------------------------------------------------- official weights
    def load_official_state_dict(
        self, loss_sd: Mapping[str, torch.Tensor], strict_discriminator: bool = True
    ) -> list[str]:
        """Load the official checkpoint's ``loss.*`` tensors (prefix already stripped).

        Loads the discriminator, ``logvar``, the LPIPS linear layers + scaling constants and, when
        present, the LPIPS VGG backbone. Returns the names of the groups that were loaded, among
        ``"discriminator"``, ``"logvar"``, ``"perceptual_lin"``, ``"perceptual_net"``, ``"lecam_ema"``.

        Raises ValueError naming the key when a discriminator key is missing, unexpected or
        mis-shaped (with ``strict_discriminator``), or when any other tensor has the wrong shape.
        """
        loaded: list[str] = []
        consumed: set[str] = set()

        disc_sd = {k[len("discriminator."):]: v for k, v in loss_sd.items() if k.startswith("discriminator.")}
        own_disc = self.discriminator.state_dict()
        if disc_sd or strict_discriminator:
            check_state_dict(disc_sd, own_disc, "loss checkpoint", "the discriminator",
                             require_all=strict_discriminator, key_prefix="loss.discriminator.")
            usable = {k: v for k, v in disc_sd.items() if k in own_disc}
            self.discriminator.load_state_dict(usable, strict=strict_discriminator)
            consumed.update(f"discriminator.{k}" for k in disc_sd)
            if usable:
                loaded.append("discriminator")

        if "logvar" in loss_sd:
            check_state_dict({"logvar": loss_sd["logvar"]}, {"logvar": self.logvar}, "loss checkpoint", "the loss",
                             key_prefix="loss.")
            with torch.no_grad():
                self.logvar.copy_(loss_sd["logvar"])
            consumed.add("logvar")
            loaded.append("logvar")

        lpips_sd = lpips_state_dict_from({k: v for k, v in loss_sd.items() if k.startswith("perceptual_loss.")})
        consumed.update(f"perceptual_loss.{k}" for k in lpips_sd)
        if lpips_sd and self.perceptual_loss is None:
            logger.info("perceptual_weight is 0: ignoring %d LPIPS tensors in the checkpoint", len(lpips_sd))
        elif lpips_sd:
            self.perceptual_loss.load_weights(lpips_sd)
            if any(k.startswith("lin") for k in lpips_sd):
                loaded.append("perceptual_lin")
            if any(k.startswith("net.") for k in lpips_sd):
                loaded.append("perceptual_net")

        if self.lecam_loss_weight > 0 and {"lecam_ema_real", "lecam_ema_fake"} <= set(loss_sd):
            self.lecam_ema_real.copy_(loss_sd["lecam_ema_real"])
            self.lecam_ema_fake.copy_(loss_sd["lecam_ema_fake"])
            consumed.update({"lecam_ema_real", "lecam_ema_fake"})
            loaded.append("lecam_ema")

        ignored = sorted(set(loss_sd) - consumed)
        if ignored:
            logger.warning("ignored %d loss tensors not used by VidTwinLoss: %s", len(ignored), ignored[:5])
        return loaded


__all__ = ["VidTwinLoss", "hinge_d_loss", "vanilla_d_loss", "adopt_weight", "lecam_reg"]
