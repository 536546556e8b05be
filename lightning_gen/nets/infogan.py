"""InfoGAN discriminators (Chen et al. 2016): one trunk, a real/fake score head and a Q head for the latent codes.

``forward(x)`` returns the raw score ``(B,)`` like every discriminator here, so the adversarial losses, penalties and
plotting callbacks take these nets unchanged; ``q(x)`` returns the score and Q's outputs from one trunk pass. The Q
head is the submodule ``q_head``: :class:`~lightning_gen.modules.infogan.InfoGAN` trains it with the generator, the
rest with the discriminator. Generators need nothing special: any generator whose ``latent_dim`` is
``noise_dim + num_categories + num_continuous`` (e.g. ``MLPGenerator``, ``DCGANGenerator``) takes the input
``concat(z, one_hot(c), c_cont)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

from torch import Tensor, nn

from lightning_gen.nets.dcgan import _plan
from lightning_gen.nets.layers import check_images, init_dcgan_weights_
from lightning_gen.nets.mlp import _as_shape, make_activation, mlp

__all__ = ["InfoGANOutput", "MLPInfoGANDiscriminator", "DCGANInfoGANDiscriminator"]


class InfoGANOutput(NamedTuple):
    """What ``q(x)`` returns: the raw score ``(B,)``, categorical logits ``(B, k)``, the continuous codes' means
    ``(B, m)`` and their log-std ``(B, m)`` (``None`` when the std is fixed at 1)."""

    score: Tensor
    logits: Tensor
    means: Tensor
    log_std: Optional[Tensor]


def _check_codes(num_categories: int, num_continuous: int) -> None:
    if num_categories < 0 or num_continuous < 0:
        raise ValueError(f"num_categories and num_continuous must be >= 0, got {num_categories} and {num_continuous}")
    if num_categories == 1:
        raise ValueError("num_categories must be 0 (no categorical code) or >= 2: a 1-way code carries no information")
    if num_categories + num_continuous == 0:
        raise ValueError("an InfoGAN discriminator needs a latent code: set num_categories >= 2 and/or num_continuous >= 1")


class _InfoGANDiscriminator(nn.Module):
    """What both InfoGAN discriminators share: the split of the Q head's output and the score/Q interface."""

    trunk: nn.Module
    score: nn.Module
    q_head: nn.Module

    def _init_codes(self, num_categories: int, num_continuous: int, learn_std: bool) -> int:
        _check_codes(num_categories, num_continuous)
        self.num_categories = int(num_categories)
        self.num_continuous = int(num_continuous)
        self.learn_std = bool(learn_std) and num_continuous > 0
        return self.num_categories + self.num_continuous * (2 if self.learn_std else 1)

    def _trunk(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """The trunk's output ``(B, feature_dim)``, shared by the score and the Q head (also for feature matching)."""
        return self._trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        """Score a batch; returns raw scores of shape ``(B,)``."""
        return self.score(self._trunk(x)).squeeze(-1)

    def q(self, x: Tensor) -> InfoGANOutput:
        """Score and Q's outputs (logits, means, log-std or ``None``) from one pass of the trunk."""
        h = self._trunk(x)
        out = self.q_head(h)
        k, m = self.num_categories, self.num_continuous
        log_std = out[:, k + m:k + 2 * m] if self.learn_std else None
        return InfoGANOutput(self.score(h).squeeze(-1), out[:, :k], out[:, k:k + m], log_std)


class MLPInfoGANDiscriminator(_InfoGANDiscriminator):
    """MLP InfoGAN discriminator for vector data: an MLP trunk, a linear score and an MLP Q head."""

    def __init__(
        self,
        input_shape: int | Sequence[int] = 2,
        num_categories: int = 8,
        num_continuous: int = 0,
        hidden_dims: Sequence[int] = (128, 128, 128),
        q_hidden_dims: Sequence[int] = (128,),
        activation: str = "relu",
        input_scale: float = 1.0,
        learn_std: bool = False,
    ) -> None:
        super().__init__()
        if not hidden_dims:
            raise ValueError("hidden_dims needs at least one layer (the trunk the score and the Q head share)")
        if input_scale <= 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        q_out = self._init_codes(num_categories, num_continuous, learn_std)
        self.input_shape = _as_shape(input_shape)
        self.input_scale = float(input_scale)
        self.trunk = nn.Sequential(
            mlp(math.prod(self.input_shape), list(hidden_dims)[:-1], hidden_dims[-1], activation), make_activation(activation)
        )
        self.feature_dim = int(hidden_dims[-1])
        self.score = nn.Linear(self.feature_dim, 1)
        self.q_head = mlp(self.feature_dim, q_hidden_dims, q_out, activation)

    def _trunk(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return self.trunk(x / self.input_scale if self.input_scale != 1.0 else x)


class DCGANInfoGANDiscriminator(_InfoGANDiscriminator):
    """The paper's MNIST discriminator/Q network (Chen et al. 2016, table 1), for 28, 32 or 64 px images.

    Trunk: stride-2 4x4 convs doubling the channels from ``base_channels`` (LeakyReLU(0.2), BatchNorm after every conv
    but the first), then FC ``hidden_dim`` + BatchNorm + LeakyReLU; score: FC 1; Q head: FC ``q_hidden_dim`` +
    BatchNorm + LeakyReLU, FC to the codes. Weights N(0, 0.02) as in DCGAN.
    """

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        base_channels: int = 64,
        num_categories: int = 10,
        num_continuous: int = 2,
        hidden_dim: int = 1024,
        q_hidden_dim: int = 128,
        learn_std: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("base_channels", base_channels), ("hidden_dim", hidden_dim),
                            ("q_hidden_dim", q_hidden_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        q_out = self._init_codes(num_categories, num_continuous, learn_std)
        end, n_down = _plan(image_size, type(self).__name__)
        self.image_shape: tuple[int, int, int] = (int(channels), int(image_size), int(image_size))
        layers: list[nn.Module] = [nn.Conv2d(channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = base_channels
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        layers += [nn.Flatten(), nn.Linear(ch * end * end, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                   nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = int(hidden_dim)
        self.score = nn.Linear(hidden_dim, 1)
        self.q_head = nn.Sequential(nn.Linear(hidden_dim, q_hidden_dim, bias=False), nn.BatchNorm1d(q_hidden_dim),
                                    nn.LeakyReLU(0.2), nn.Linear(q_hidden_dim, q_out))
        init_dcgan_weights_(self)

    def _trunk(self, x: Tensor) -> Tensor:
        check_images(x, self.image_shape, type(self).__name__)
        return self.trunk(x)
