"""Super-resolution nets of SRGAN (Ledig et al. 2017, fig. 4): the SRResNet generator and the SRGAN discriminator,
plus the bicubic resizing that makes low-resolution inputs and the bicubic baseline.

Images are ``(B, C, H, W)`` in [-1, 1] on both sides (the paper scales its inputs to [0, 1]; one range everywhere
keeps this library's convention). Sizes and channels come from arguments.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SRResidualBlock",
    "PixelShuffleUpsample",
    "SRResNetGenerator",
    "SRGANDiscriminator",
    "bicubic_downsample",
    "bicubic_upsample",
]


def _check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_scale(scale: int) -> int:
    """The number of x2 PixelShuffle stages for ``scale`` (a power of two >= 2)."""
    stages = round(math.log2(scale)) if scale >= 2 else 0
    if scale < 2 or 2**stages != scale:
        raise ValueError(f"scale must be a power of two >= 2 (2 or 4 as in the paper), got {scale}")
    return stages


def bicubic_downsample(images: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic downsampling by ``scale`` (H and W divisible by it), clamped to [-1, 1]: how the paper
    makes its low-resolution inputs (sec. 4.1, a bicubic kernel with downsampling factor r)."""
    h, w = images.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(
            f"images of {h}x{w} px cannot be downsampled by {scale}: H and W must be divisible by the scale; resize or "
            f"crop the high-resolution images (e.g. to {h // scale * scale}x{w // scale * scale})"
        )
    low = F.interpolate(images.float(), size=(h // scale, w // scale), mode="bicubic", align_corners=False,
                        antialias=True)
    return low.clamp(-1.0, 1.0)


def bicubic_upsample(images: Tensor, scale: int) -> Tensor:
    """Bicubic upsampling by ``scale``, clamped to [-1, 1]: the bicubic baseline of the paper's tables."""
    h, w = images.shape[-2:]
    up = F.interpolate(images.float(), size=(h * scale, w * scale), mode="bicubic", align_corners=False)
    return up.clamp(-1.0, 1.0)


class SRResidualBlock(nn.Module):
    """SRResNet residual block ``x + BN(conv(PReLU(BN(conv(x)))))`` with 3x3 convs (fig. 4, ``k3n64s1``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check_positive(channels=channels)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Add the block's residual to ``x``."""
        return x + self.body(x)


class PixelShuffleUpsample(nn.Module):
    """x2 upsampling: conv ``channels -> 4 channels`` (3x3), PixelShuffle(2), PReLU (fig. 4; Shi et al. 2016)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check_positive(channels=channels)
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, 2H, 2W)``."""
        return self.act(self.shuffle(self.conv(x)))


class SRResNetGenerator(nn.Module):
    """SRResNet (fig. 4, top): conv 9x9 + PReLU, ``num_blocks`` residual blocks, conv 3x3 + BN with a long skip,
    ``log2(scale)`` PixelShuffle x2 stages, conv 9x9 and tanh. ``(B, C, H, W) -> (B, C_out, scale H, scale W)``.

    The paper uses ``channels=64``, ``num_blocks=16``, ``scale=4``.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int | None = None, channels: int = 64, num_blocks: int = 16,
        scale: int = 4,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        _check_positive(in_channels=in_channels, out_channels=out_channels, channels=channels)
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        stages = _check_scale(scale)
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        self.head = nn.Sequential(nn.Conv2d(in_channels, channels, 9, padding=4), nn.PReLU(channels))
        self.blocks = nn.Sequential(*(SRResidualBlock(channels) for _ in range(num_blocks)))
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(*(PixelShuffleUpsample(channels) for _ in range(stages)))
        self.tail = nn.Conv2d(channels, out_channels, 9, padding=4)

    def forward(self, x: Tensor) -> Tensor:
        """Upscale low-resolution images in [-1, 1] by ``scale``; the output is in [-1, 1] (tanh)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SRResNetGenerator expects low-resolution images (B, {self.in_channels}, H, W) "
                f"(in_channels={self.in_channels}), got {tuple(x.shape)}"
            )
        h = self.head(x)
        h = h + self.fuse(self.blocks(h))  # the long skip over all residual blocks
        return self.tail(self.upsample(h)).tanh()


class SRGANDiscriminator(nn.Module):
    """SRGAN discriminator (fig. 4, bottom): conv 3x3 + LeakyReLU(0.2), then conv-BN-LeakyReLU blocks alternating
    stride 1 and 2 with channels doubling per stride-2 pair (64, 64, 128, 128, 256, 256, 512, 512 in the paper),
    then adaptive average pooling to ``pool_size``, dense ``hidden_dim`` + LeakyReLU and dense 1.

    Returns raw scores ``(B,)`` (logits: the sigmoid is in the loss). The adaptive pooling lets any image of at least
    ``2**num_stages`` px work (28 px digits included); the paper's 96 px crops reach 6x6 before its dense layer.
    """

    def __init__(
        self, in_channels: int = 3, base_channels: int = 64, num_stages: int = 4, hidden_dim: int = 1024,
        pool_size: int = 1,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, base_channels=base_channels, num_stages=num_stages,
                        hidden_dim=hidden_dim, pool_size=pool_size)
        self.in_channels, self.num_stages = in_channels, num_stages
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 3, padding=1), nn.LeakyReLU(0.2)]
        channels = base_channels
        for stage in range(num_stages):
            out = base_channels * 2**stage
            for stride in ((2,) if stage == 0 else (1, 2)):  # the first stage's stride-1 conv is the head above
                layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out),
                           nn.LeakyReLU(0.2)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * pool_size * pool_size, hidden_dim), nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Score a batch of (high-resolution) images; returns raw scores of shape ``(B,)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SRGANDiscriminator expects images (B, {self.in_channels}, H, W) (in_channels={self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        return self.head(self.pool(self.features(x))).squeeze(1)
