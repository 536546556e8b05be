"""Encoders and decoders for autoencoders and VAEs: MLPs for vectors or flattened images, small CNNs for images.

An encoder maps ``(B, *data_shape)`` to ``(B, out_dim)`` features (a VAE's encoder has ``out_dim = 2 *
latent_dim``: the mean, then the log-variance). A decoder maps ``(B, latent_dim)`` to ``(B, *data_shape)`` raw
outputs: logits of a Bernoulli decoder or means of a Gaussian one; the module decides which.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from lightning_gen.nets.mlp import _as_shape, make_activation, mlp

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder"]


class MLPEncoder(nn.Module):
    """Flattens ``(B, *input_shape)`` and maps it to ``(B, out_dim)`` through an MLP."""

    def __init__(
        self,
        input_shape: int | Sequence[int] = 784,
        out_dim: int = 100,
        hidden_dims: Sequence[int] = (200, 200),
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        self.input_shape = _as_shape(input_shape)
        self.out_dim = int(out_dim)
        self.net = mlp(math.prod(self.input_shape), hidden_dims, self.out_dim, activation)

    def forward(self, x: Tensor) -> Tensor:
        """Encode a batch; returns ``(B, out_dim)``."""
        if tuple(x.shape[1:]) != self.input_shape and x[0].numel() != math.prod(self.input_shape):
            raise ValueError(f"{type(self).__name__} expects inputs of shape (B, {self.input_shape}), got {tuple(x.shape)}")
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """Maps ``(B, latent_dim)`` codes to raw outputs ``(B, *output_shape)`` through an MLP (no output activation)."""

    def __init__(
        self,
        latent_dim: int = 50,
        output_shape: int | Sequence[int] = (1, 28, 28),
        hidden_dims: Sequence[int] = (200, 200),
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.output_shape = _as_shape(output_shape)
        self.net = mlp(self.latent_dim, hidden_dims, math.prod(self.output_shape), activation)

    def forward(self, z: Tensor) -> Tensor:
        """Decode codes ``(B, latent_dim)`` to ``(B, *output_shape)``."""
        return self.net(z).view(z.shape[0], *self.output_shape)


def _check_image_size(image_size: int) -> None:
    if image_size not in (28, 32):
        raise ValueError(f"ConvEncoder/ConvDecoder support 28 and 32 px images, got image_size={image_size}")


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (``image_size`` 28 or 32 px, any channel count) and a linear map to ``out_dim``."""

    def __init__(
        self, image_size: int = 28, channels: int = 1, out_dim: int = 64, base_channels: int = 32,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        self.input_shape = (int(channels), int(image_size), int(image_size))
        self.out_dim = int(out_dim)
        c = int(base_channels)
        self.features = nn.Sequential(
            nn.Conv2d(channels, c, 4, 2, 1), make_activation(activation),       # -> size / 2
            nn.Conv2d(c, 2 * c, 4, 2, 1), make_activation(activation),          # -> size / 4
        )
        side = image_size // 4
        self.head = nn.Linear(2 * c * side * side, self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Encode images ``(B, C, H, W)``; returns ``(B, out_dim)``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{type(self).__name__} expects images of shape (B, {self.input_shape}), got {tuple(x.shape)}")
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: a linear map and two stride-2 transposed convolutions to raw outputs."""

    def __init__(
        self, latent_dim: int = 32, image_size: int = 28, channels: int = 1, base_channels: int = 32,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        self.latent_dim = int(latent_dim)
        self.output_shape = (int(channels), int(image_size), int(image_size))
        c = int(base_channels)
        self._side = image_size // 4
        self.head = nn.Sequential(nn.Linear(self.latent_dim, 2 * c * self._side * self._side), make_activation(activation))
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), make_activation(activation),
            nn.ConvTranspose2d(c, channels, 4, 2, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Decode codes ``(B, latent_dim)`` to ``(B, C, H, W)`` raw outputs."""
        h = self.head(z).view(z.shape[0], -1, self._side, self._side)
        return self.body(h)
