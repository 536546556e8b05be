"""StarGAN nets (Choi et al. 2018, appendix / table 4 and 5): a generator ``G(x, c)`` conditioned on a target-domain
vector, and a PatchGAN critic with an auxiliary domain-classification head.

Generator: the target-domain vector ``c`` (one-hot for single-label domains, 0/1 attributes for multi-label ones) is
tiled over the image and concatenated to its channels; then a 7x7 conv, two 4x4 stride-2 downsamplings, residual
blocks (6 in the paper), two 4x4 stride-2 transposed-conv upsamplings and a 7x7 conv with Tanh. Instance norm with
affine parameters after every hidden conv. The reference code's instance norm also tracks running statistics and uses
them in eval mode; here it normalizes with each image's own statistics in training and evaluation alike, so a
translation never depends on the other images of a batch and no rank-local buffers exist under DDP.

Discriminator: ``num_layers`` 4x4 stride-2 convs with LeakyReLU(0.01) and no normalization (the WGAN-GP penalty is
per sample); then a 3x3 conv giving a patch map of critic scores ``(B, 1, h, w)`` and a conv whose kernel covers the
whole remaining map, giving domain logits ``(B, num_domains)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_gen.checks import value_checks_enabled

__all__ = ["StarGANGenerator", "StarGANDiscriminator", "StarGANOutput", "StarGANResidualBlock", "tile_domains"]


def _check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


def tile_domains(x: Tensor, domains: Tensor) -> Tensor:
    """``cat(x, c)`` along channels, the domain vectors ``c`` ``(B, K)`` tiled over ``x``'s ``H x W`` (StarGAN's input)."""
    c = domains.to(dtype=x.dtype).view(domains.shape[0], domains.shape[1], 1, 1)
    return torch.cat([x, c.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)


class StarGANResidualBlock(nn.Module):
    """Residual block ``x + IN(conv3x3(ReLU(IN(conv3x3(x)))))`` with zero padding (StarGAN's bottleneck)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check_positive(channels=channels)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), _instance_norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), _instance_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` plus the residual branch."""
        return x + self.body(x)


class StarGANGenerator(nn.Module):
    """StarGAN generator ``G(x, c)``: images ``(B, channels, H, W)`` in [-1, 1] to images of the domains ``c``.

    Args:
        num_domains: length ``K`` of the domain vector (number of domains, or of attributes for multi-label data).
        channels: image channels (3 RGB, 1 grayscale); the output has the same.
        base_channels: width of the first conv (64 in the paper); the bottleneck has 4x as many.
        num_residual_blocks: residual blocks at the bottleneck (6 in the paper).

    H and W must be multiples of 4 (two stride-2 downsamplings). ``forward(x, domains)`` takes the float domain
    vectors ``(B, K)`` (one-hot or 0/1 attributes; :meth:`~lightning_gen.modules.StarGAN.domain_vectors` builds them
    from domain indices).
    """

    def __init__(self, num_domains: int, channels: int = 3, base_channels: int = 64, num_residual_blocks: int = 6) -> None:
        super().__init__()
        _check_positive(num_domains=num_domains, channels=channels, base_channels=base_channels)
        if num_residual_blocks < 0:
            raise ValueError(f"num_residual_blocks must be >= 0, got {num_residual_blocks}")
        self.num_domains = int(num_domains)
        self.in_channels = self.out_channels = self.channels = int(channels)
        k = int(base_channels)
        layers: list[nn.Module] = [nn.Conv2d(channels + num_domains, k, 7, 1, 3, bias=False), _instance_norm(k), nn.ReLU()]
        for mult in (1, 2):
            layers += [nn.Conv2d(k * mult, k * mult * 2, 4, 2, 1, bias=False), _instance_norm(k * mult * 2), nn.ReLU()]
        layers += [StarGANResidualBlock(4 * k) for _ in range(num_residual_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(k * mult, k * mult // 2, 4, 2, 1, bias=False), _instance_norm(k * mult // 2),
                       nn.ReLU()]
        layers += [nn.Conv2d(k, channels, 7, 1, 3, bias=False), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, domains: Tensor) -> Tensor:
        """Translate images ``x`` ``(B, channels, H, W)`` to the domains ``domains`` ``(B, num_domains)``."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{name} expects images of shape (B, {self.channels}, H, W) (channels={self.channels}), "
                             f"got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"{name} needs H and W divisible by 4 (two stride-2 downsamplings), got {h}x{w}; resize or "
                             f"crop the images (e.g. to {max(4, h // 4 * 4)}x{max(4, w // 4 * 4)})")
        if domains.dim() != 2 or domains.shape != (x.shape[0], self.num_domains):
            raise ValueError(
                f"{name} expects domain vectors of shape (B, num_domains) = ({x.shape[0]}, {self.num_domains}), got "
                f"{tuple(domains.shape)}; pass one-hot vectors (single-label domains) or 0/1 attributes"
            )
        if value_checks_enabled() and x.shape[0] > 0 and bool(((domains < 0) | (domains > 1)).any()):
            raise ValueError(f"{name} expects domain vectors with values in [0, 1] (one-hot or 0/1 attributes)")
        return self.model(tile_domains(x, domains))


class StarGANOutput(NamedTuple):
    """What :class:`StarGANDiscriminator` returns: the critic's patch scores ``(B, 1, h, w)`` and the domain logits
    ``(B, num_domains)``."""

    scores: Tensor
    domain_logits: Tensor


class StarGANDiscriminator(nn.Module):
    """StarGAN discriminator: a PatchGAN critic ``D_src`` and a domain classifier ``D_cls`` sharing one trunk.

    Args:
        num_domains: number of domain logits (domains, or attributes for multi-label data).
        image_size: side of the square input images.
        channels: image channels.
        base_channels: width of the first conv (64 in the paper); each further layer doubles it.
        num_layers: 4x4 stride-2 convs (6 for 128 px in the paper, so a 2x2 score map); each halves the side
            (rounding down), and the side after them must be at least 1.
    """

    def __init__(
        self, num_domains: int, image_size: int, channels: int = 3, base_channels: int = 64, num_layers: int = 6
    ) -> None:
        super().__init__()
        _check_positive(num_domains=num_domains, image_size=image_size, channels=channels, base_channels=base_channels,
                        num_layers=num_layers)
        side = int(image_size)
        for _ in range(num_layers):
            side //= 2
        if side < 1:
            raise ValueError(f"StarGANDiscriminator with num_layers={num_layers} needs images of at least "
                             f"{2**num_layers} px, got image_size={image_size}; use fewer layers")
        self.num_domains = int(num_domains)
        self.image_size = int(image_size)
        self.channels = self.in_channels = int(channels)
        self.output_side = side
        layers: list[nn.Module] = []
        ch_in, ch = channels, int(base_channels)
        for _ in range(num_layers):
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1), nn.LeakyReLU(0.01)]
            ch_in, ch = ch, ch * 2
        self.trunk = nn.Sequential(*layers)
        self.scores = nn.Conv2d(ch_in, 1, 3, 1, 1, bias=False)
        self.domain_logits = nn.Conv2d(ch_in, num_domains, side, bias=False)

    @property
    def features(self) -> nn.Module:
        """The shared trunk (both heads read its output)."""
        return self.trunk

    def forward(self, x: Tensor) -> StarGANOutput:
        """Score images ``(B, channels, image_size, image_size)``: patch scores and domain logits."""
        if x.dim() != 4 or x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"StarGANDiscriminator expects images of shape (B, {self.channels}, {self.image_size}, "
                f"{self.image_size}) (channels, image_size), got {tuple(x.shape)}; set channels and image_size to the "
                "data's"
            )
        h = self.trunk(x)
        return StarGANOutput(self.scores(h), self.domain_logits(h).flatten(1))
