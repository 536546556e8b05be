"""One LightningModule per model family, sharing :class:`GenerativeModule`."""

from lightning_gen.modules.adversarial import AdversarialModule, Player
from lightning_gen.modules.autoencoder import VAE, Autoencoder, DenoisingAutoencoder
from lightning_gen.modules.base import (
    GenerativeModule,
    NonFiniteLossError,
    SingleObjectiveModule,
    batch_data,
    eval_mode,
    load_model,
)
from lightning_gen.modules.bigan import BiGAN
from lightning_gen.modules.diffusion import DDPM
from lightning_gen.modules.flow import RealNVP
from lightning_gen.modules.guided import GuidedDDPM
from lightning_gen.modules.gan import DRAGAN, GAN, LSGAN, WGAN, WGANGP, ConditionalGAN, HingeGAN
from lightning_gen.modules.image_to_image import CycleGAN, Pix2Pix
from lightning_gen.modules.infogan import InfoGAN
from lightning_gen.modules.rbm import RBM
from lightning_gen.modules.score import ScoreModel
from lightning_gen.modules.stargan import StarGAN
from lightning_gen.modules.super_resolution import SRGAN, SRResNet

__all__ = [
    "AdversarialModule", "Player", "Autoencoder", "DenoisingAutoencoder", "VAE", "SingleObjectiveModule", "batch_data", "eval_mode",
    "GenerativeModule", "GAN", "ConditionalGAN", "WGAN", "WGANGP", "DRAGAN", "LSGAN", "HingeGAN",
    "NonFiniteLossError", "DDPM", "RealNVP", "Pix2Pix", "CycleGAN", "BiGAN", "load_model",
    "InfoGAN",
    "SRGAN", "SRResNet",
    "StarGAN",
    "RBM",
    "ScoreModel",
    "GuidedDDPM",
]
