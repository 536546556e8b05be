"""Multilayer-perceptron generator and discriminator for vector data (toy mixtures, flattened images)."""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

__all__ = ["make_activation", "mlp", "MLPGenerator", "MLPDiscriminator"]

_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": lambda: nn.ELU(),
    "gelu": lambda: nn.GELU(),
    "silu": lambda: nn.SiLU(),
    "tanh": lambda: nn.Tanh(),
    "softplus": lambda: nn.Softplus(),
}


def make_activation(name: str) -> nn.Module:
    """Build an activation module from its name (``relu``, ``leaky_relu`` (slope 0.2), ``elu``, ``gelu``, ...)."""
    key = name.lower().replace("-", "_")
    if key not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}. Choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[key]()


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """A plain MLP: Linear layers with ``activation`` between them and none after the last."""
    dims = [in_dim, *hidden_dims]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), make_activation(activation)]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


class MLPGenerator(nn.Module):
    """Maps ``(B, latent_dim)`` noise to samples of shape ``(B, *output_shape)`` through an MLP."""

    def __init__(
        self,
        latent_dim: int = 2,
        output_shape: int | Sequence[int] = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        activation: str = "relu",
        output_activation: str | None = None,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.output_shape = _as_shape(output_shape)
        self.net = mlp(self.latent_dim, hidden_dims, math.prod(self.output_shape), activation)
        self.output_activation = make_activation(output_activation) if output_activation else nn.Identity()
        # Data far from unit scale (the toy grid spans [-4, 4]) is learned much faster when the net works in unit
        # scale and a fixed factor maps back, as normalizing the data would, while samples stay in data space.
        self.output_scale = float(output_scale)

    def forward(self, z: Tensor) -> Tensor:
        """Generate samples from noise ``z`` of shape ``(B, latent_dim)``."""
        out = self.output_activation(self.net(z)).view(z.shape[0], *self.output_shape)
        return out * self.output_scale if self.output_scale != 1.0 else out


class MLPDiscriminator(nn.Module):
    """Maps inputs of shape ``(B, *input_shape)`` to one raw score (logit or critic value) per sample, ``(B,)``."""

    def __init__(
        self,
        input_shape: int | Sequence[int] = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        activation: str = "relu",
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if input_scale <= 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        self.input_shape = _as_shape(input_shape)
        self.net = mlp(math.prod(self.input_shape), hidden_dims, 1, activation)
        self.input_scale = float(input_scale)  # inputs are divided by it: the twin of MLPGenerator.output_scale

    def forward(self, x: Tensor) -> Tensor:
        """Score a batch; returns shape ``(B,)``."""
        x = x.flatten(1)
        return self.net(x / self.input_scale if self.input_scale != 1.0 else x).squeeze(-1)
