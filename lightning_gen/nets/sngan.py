"""ResNet generator and spectrally normalized projection discriminator of SNGAN (Miyato et al. 2018, CIFAR-10)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from lightning_gen.nets.layers import ConditionalBatchNorm2d, check_images, check_labels

__all__ = ["SNGANGenerator", "SNGANDiscriminator", "SNGAN_IMAGE_SIZES"]

# image_size -> side of the generator's first feature map; three 2x up-sampling blocks follow. 32 px is the paper's
# CIFAR-10 net; 48 px (STL-10 resolution, 6x6 start as in the paper's STL-10 generator) uses the same layers.
_START: dict[int, int] = {32: 4, 48: 6}
SNGAN_IMAGE_SIZES: tuple[int, ...] = tuple(sorted(_START))


def _check_sizes(net: str, image_size: int, channels: int, base_channels: int, num_classes: int) -> None:
    if image_size not in _START:
        raise ValueError(
            f"{net} supports image_size in {list(SNGAN_IMAGE_SIZES)}, got {image_size}; resize your data or use "
            "DCGANGenerator/DCGANDiscriminator (28, 32 and 64 px)"
        )
    for name, value in (("channels", channels), ("base_channels", base_channels)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")


def _xavier(module: nn.Module, gain: float = 1.0) -> nn.Module:
    # Glorot-uniform weights and zero biases, as in the authors' Chainer code (gain sqrt(2) inside residual paths).
    nn.init.xavier_uniform_(module.weight, gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def _sn(module: nn.Module, gain: float = 1.0) -> nn.Module:
    return spectral_norm(_xavier(module, gain))  # init first, so the power-iteration vectors match the weight


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class _GenBlock(nn.Module):
    """Pre-activation up-sampling residual block: (C)BN-ReLU-up-conv3-(C)BN-ReLU-conv3, shortcut up-conv1."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conditional = num_classes > 0
        self.bn1 = ConditionalBatchNorm2d(in_ch, num_classes) if self.conditional else nn.BatchNorm2d(in_ch)
        self.conv1 = _xavier(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), math.sqrt(2))  # BN follows: no bias
        self.bn2 = ConditionalBatchNorm2d(out_ch, num_classes) if self.conditional else nn.BatchNorm2d(out_ch)
        self.conv2 = _xavier(nn.Conv2d(out_ch, out_ch, 3, 1, 1), math.sqrt(2))
        self.shortcut = _xavier(nn.Conv2d(in_ch, out_ch, 1, bias=False))  # conv2's bias already shifts the sum

    def _bn(self, bn: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
        return bn(x, labels) if self.conditional else bn(x)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = self.conv1(_up(F.relu(self._bn(self.bn1, x, labels))))
        h = self.conv2(F.relu(self._bn(self.bn2, h, labels)))
        return h + self.shortcut(_up(x))


class SNGANGenerator(nn.Module):
    """SNGAN ResNet generator (Miyato et al. 2018, appendix B, CIFAR-10): noise to images in [-1, 1].

    Linear to ``base_channels`` maps of 4x4 (6x6 for 48 px), three up-sampling residual blocks (BN + ReLU,
    nearest-neighbour 2x up-sampling), then BN-ReLU-conv3x3-Tanh. Conditional (``num_classes > 0``): the BatchNorms
    inside the residual blocks become categorical conditional BatchNorms (per-class scale and shift, as in the
    projection-discriminator paper, Miyato & Koyama 2018); the final BN stays unconditional, as in their code.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        channels: int = 3,
        base_channels: int = 256,
        num_classes: int = 0,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, image_size, channels, base_channels, num_classes)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.image_shape: tuple[int, int, int] = (int(channels), int(image_size), int(image_size))
        self._start = _START[image_size]
        self._base_channels = int(base_channels)
        self.linear = _xavier(nn.Linear(self.latent_dim, base_channels * self._start**2))
        self.blocks = nn.ModuleList([_GenBlock(base_channels, base_channels, self.num_classes) for _ in range(3)])
        self.bn = nn.BatchNorm2d(base_channels)
        self.conv_out = _xavier(nn.Conv2d(base_channels, channels, 3, 1, 1))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Generate images ``(B, *image_shape)`` in [-1, 1] from noise ``(B, latent_dim)`` and labels if conditional."""
        name = type(self).__name__
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{name} expects noise of shape (B, {self.latent_dim}) (latent_dim), got {tuple(z.shape)}")
        labels = check_labels(labels, self.num_classes, z.shape[0], name)
        h = self.linear(z).view(z.shape[0], self._base_channels, self._start, self._start)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.conv_out(F.relu(self.bn(h))))


class _DisBlock(nn.Module):
    """Residual block of the discriminator: [ReLU]-conv3-ReLU-conv3-[avgpool]; shortcut conv1-[avgpool] or identity.

    The ``optimized`` first block (Miyato et al. 2018) takes the raw image: no leading ReLU and its shortcut
    pools before the 1x1 conv.
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, optimized: bool = False) -> None:
        super().__init__()
        self.downsample = downsample
        self.optimized = optimized
        self.conv1 = _sn(nn.Conv2d(in_ch, out_ch, 3, 1, 1), math.sqrt(2))
        self.conv2 = _sn(nn.Conv2d(out_ch, out_ch, 3, 1, 1), math.sqrt(2))
        learnable = optimized or downsample or in_ch != out_ch
        self.shortcut = _sn(nn.Conv2d(in_ch, out_ch, 1, bias=False)) if learnable else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x if self.optimized else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        sc = x
        if self.optimized:
            sc = self.shortcut(F.avg_pool2d(x, 2))
        elif self.shortcut is not None:
            sc = self.shortcut(x)
            if self.downsample:
                sc = F.avg_pool2d(sc, 2)
        return h + sc


class SNGANDiscriminator(nn.Module):
    """SNGAN ResNet discriminator (Miyato et al. 2018, appendix B, CIFAR-10): images to raw scores ``(B,)``.

    Optimized down-sampling block, one down-sampling and two plain residual blocks (all ``base_channels`` wide),
    ReLU, global sum pooling, linear score; every conv, the linear layer and the class embedding are spectrally
    normalized, and there is no BatchNorm. Conditional (``num_classes > 0``): projection discriminator (Miyato &
    Koyama 2018), ``score = linear(phi(x)) + <embed(y), phi(x)>`` with ``phi = features``.
    """

    def __init__(
        self,
        channels: int = 3,
        base_channels: int = 128,
        num_classes: int = 0,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, image_size, channels, base_channels, num_classes)
        self.num_classes = int(num_classes)
        self.image_shape: tuple[int, int, int] = (int(channels), int(image_size), int(image_size))
        ch = int(base_channels)
        self.blocks = nn.Sequential(
            _DisBlock(channels, ch, downsample=True, optimized=True),
            _DisBlock(ch, ch, downsample=True),
            _DisBlock(ch, ch, downsample=False),
            _DisBlock(ch, ch, downsample=False),
        )
        self.feature_dim = ch
        self.linear = _sn(nn.Linear(ch, 1))
        self.embed = _sn(nn.Embedding(self.num_classes, ch)) if self.num_classes > 0 else None

    def features(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Sum-pooled ReLU features ``(B, feature_dim)`` fed to the score (for feature matching, Salimans et al. 2016).

        They do not depend on the label, so ``labels`` may be omitted here even for a conditional net (it is
        validated when given).
        """
        name = type(self).__name__
        check_images(x, self.image_shape, name)
        if labels is not None or self.num_classes == 0:
            check_labels(labels, self.num_classes, x.shape[0], name)
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Score a batch of images (with labels if conditional); returns raw scores of shape ``(B,)``."""
        name = type(self).__name__
        check_images(x, self.image_shape, name)
        labels = check_labels(labels, self.num_classes, x.shape[0], name)
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)
        return out
