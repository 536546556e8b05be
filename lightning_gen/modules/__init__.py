"""One LightningModule per model family, sharing :class:`GenerativeModule`."""

from lightning_gen.modules.base import GenerativeModule, SingleObjectiveModule, batch_data, load_model
from lightning_gen.modules.gan import DRAGAN, GAN, ConditionalGAN, LSGAN, WGAN, WGANGP, HingeGAN, NonFiniteLossError

__all__ = ["GenerativeModule", "GAN", "ConditionalGAN", "WGAN", "WGANGP", "DRAGAN", "LSGAN", "HingeGAN", "NonFiniteLossError", "load_model"]
