"""Joint discriminators ``D(x, z)`` for BiGAN / ALI (Donahue et al. 2017; Dumoulin et al. 2017).

A joint discriminator scores a pair of a data point ``x`` and a latent code ``z``: data pairs ``(x, E(x))`` against
sample pairs ``(G(z), z)``. :class:`JointMLPDiscriminator` concatenates the flattened ``x`` and ``z`` (vectors, toy
data); :class:`JointConvDiscriminator` runs a strided-conv trunk on ``x`` and an MLP on ``z`` and joins the two
feature vectors in an MLP (images; ALI's ``D(x)``, ``D(z)``, ``D(x, z)`` split). The encoders are
:class:`~lightning_gen.nets.MLPEncoder` and :class:`~lightning_gen.nets.ConvEncoder` with ``out_dim = latent_dim``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from lightning_gen.nets.layers import check_images
from lightning_gen.nets.mlp import _as_shape, make_activation, mlp

__all__ = ["JointMLPDiscriminator", "JointConvDiscriminator"]


def _check_codes(z: Tensor, batch: int, latent_dim: int, net: str) -> None:
    if z.dim() != 2 or z.shape != (batch, latent_dim):
        raise ValueError(
            f"{net} expects codes of shape ({batch}, {latent_dim}) (latent_dim={latent_dim}) for {batch} inputs, got "
            f"{tuple(z.shape)}; set latent_dim to the generator's latent_dim (and the encoder's out_dim)"
        )


class JointMLPDiscriminator(nn.Module):
    """Scores pairs ``(x, z)``: an MLP on ``cat(flatten(x) / input_scale, z)``; returns raw scores ``(B,)``."""

    def __init__(
        self,
        input_shape: int | Sequence[int] = 2,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        activation: str = "leaky_relu",
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if input_scale <= 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        self.input_shape = _as_shape(input_shape)
        self.latent_dim = int(latent_dim)
        self.input_scale = float(input_scale)  # x is divided by it (the twin of MLPGenerator.output_scale)
        self.net = mlp(math.prod(self.input_shape) + self.latent_dim, hidden_dims, 1, activation)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Score a batch of pairs; returns shape ``(B,)``."""
        x = x.flatten(1)
        if x.shape[1] != math.prod(self.input_shape):
            raise ValueError(f"{type(self).__name__} expects inputs of shape (B, {self.input_shape}) (input_shape), "
                             f"got {x.shape[1]} features per sample")
        _check_codes(z, x.shape[0], self.latent_dim, type(self).__name__)
        x = x / self.input_scale if self.input_scale != 1.0 else x
        return self.net(torch.cat([x, z.to(x.dtype)], dim=1)).squeeze(-1)


class JointConvDiscriminator(nn.Module):
    """Scores pairs ``(image, z)``: conv trunk on the image, MLP on ``z``, joint MLP on both feature vectors.

    Image trunk: stride-2 4x4 convs from ``base_channels`` doubling the channels (``image_size`` 28 or 32: two of
    them to 7x7 or 8x8; 64: three of them to 8x8), LeakyReLU(0.2), then a linear map to ``hidden_dim``. Code trunk:
    two linear layers to ``hidden_dim``. Joint: ``cat`` of both, one hidden layer, a linear score. ``dropout`` (ALI
    uses 0.2) goes after every hidden activation. No BatchNorm: the data and sample pairs are scored in separate
    batches, and batch statistics would tell them apart.
    """

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        latent_dim: int = 100,
        base_channels: int = 64,
        hidden_dim: int = 512,
        dropout: float = 0.0,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if image_size not in (28, 32, 64):
            raise ValueError(f"JointConvDiscriminator supports image_size 28, 32 or 64, got {image_size}")
        for name, value in (("channels", channels), ("latent_dim", latent_dim), ("base_channels", base_channels),
                            ("hidden_dim", hidden_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.image_shape: tuple[int, int, int] = (int(channels), int(image_size), int(image_size))
        self.latent_dim = int(latent_dim)

        def act() -> list[nn.Module]:
            return [make_activation(activation)] + ([nn.Dropout(dropout)] if dropout else [])

        n_down = 3 if image_size == 64 else 2
        layers: list[nn.Module] = []
        ch_in, ch = channels, base_channels
        for _ in range(n_down):
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1), *act()]
            ch_in, ch = ch, ch * 2
        side = image_size // 2 ** n_down
        self.x_trunk = nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch_in * side * side, hidden_dim), *act())
        self.z_trunk = nn.Sequential(nn.Linear(self.latent_dim, hidden_dim), *act(),
                                     nn.Linear(hidden_dim, hidden_dim), *act())
        self.joint = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), *act(), nn.Linear(hidden_dim, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Score a batch of (image, code) pairs; returns raw scores of shape ``(B,)``."""
        name = type(self).__name__
        check_images(x, self.image_shape, name)
        _check_codes(z, x.shape[0], self.latent_dim, name)
        h = torch.cat([self.x_trunk(x), self.z_trunk(z.to(x.dtype))], dim=1)
        return self.joint(h).squeeze(-1)
