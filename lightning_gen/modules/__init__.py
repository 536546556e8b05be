"""One LightningModule per model family, sharing :class:`GenerativeModule`."""

from lightning_gen.modules.base import GenerativeModule, load_model
from lightning_gen.modules.gan import GAN, NonFiniteLossError

__all__ = ["GenerativeModule", "GAN", "NonFiniteLossError", "load_model"]
