"""Training losses of VidTwin: the reconstruction / KL / GAN objective and its building blocks."""

from .discriminator import NLayerDiscriminator
from .lpips import LPIPS, LPIPSWeightsUnavailable
from .vidtwin_loss import VidTwinLoss

__all__ = ["VidTwinLoss", "LPIPS", "NLayerDiscriminator", "LPIPSWeightsUnavailable"]
