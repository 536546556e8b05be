"""lightning_gen: modular generative-model components for PyTorch Lightning."""

from lightning_gen.modules import GAN, GenerativeModule, load_model

__version__ = "0.1.0.dev0"
__all__ = ["GAN", "GenerativeModule", "load_model", "__version__"]
