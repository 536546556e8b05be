"""lightning_gen: modular generative-model components for PyTorch Lightning."""

from lightning_gen.modules import (
    DDPM,
    AdversarialModule,
    BiGAN,
    DRAGAN,
    GAN,
    LSGAN,
    VAE,
    WGAN,
    WGANGP,
    Autoencoder,
    ConditionalGAN,
    CycleGAN,
    DenoisingAutoencoder,
    GenerativeModule,
    GuidedDDPM,
    HingeGAN,
    InfoGAN,
    NonFiniteLossError,
    Pix2Pix,
    RBM,
    RealNVP,
    SRGAN,
    SRResNet,
    ScoreModel,
    StarGAN,
    load_model,
)

__version__ = "0.1.0.dev0"
__all__ = [
    "Autoencoder", "DenoisingAutoencoder", "VAE", "GAN", "ConditionalGAN", "WGAN", "WGANGP", "DRAGAN", "LSGAN",
    "HingeGAN", "AdversarialModule", "NonFiniteLossError", "Pix2Pix", "CycleGAN", "BiGAN", "DDPM", "RealNVP", "GenerativeModule", "load_model", "__version__",
    "InfoGAN",
    "SRGAN", "SRResNet",
    "StarGAN",
    "RBM",
    "ScoreModel",
    "GuidedDDPM",
]
