"""Training stabilizers of Salimans et al. 2016 and Sønderby et al. 2017 as pure functions of tensors.

Feature matching and historical averaging are extra loss terms; instance noise is a perturbation of the
discriminator's inputs with an annealed standard deviation. One-sided label smoothing is the ``real_target``
argument of the probabilistic and least-squares discriminator losses in :mod:`lightning_gen.losses.adversarial`.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from lightning_gen.noise import randn

__all__ = ["feature_matching_loss", "historical_averaging_penalty", "instance_noise_std", "add_instance_noise"]


def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """``|| E f(x) - E f(G(z)) ||_2^2`` over a batch of discriminator features (Salimans 2016, sec. 3.1).

    The real statistics are a target: they are detached, so only the generator receives gradients.
    """
    if real_features.shape[1:] != fake_features.shape[1:]:
        raise ValueError(
            f"feature_matching_loss needs features of the same size, got {tuple(real_features.shape)} and "
            f"{tuple(fake_features.shape)}"
        )
    diff = real_features.detach().flatten(1).mean(0) - fake_features.flatten(1).mean(0)
    return diff.pow(2).sum()


def historical_averaging_penalty(parameters: Iterable[Tensor], averages: Iterable[Tensor]) -> Tensor:
    """``sum_i || theta_i - mean_{past} theta_i ||_2^2`` (Salimans 2016, sec. 3.3); the averages are constants."""
    terms = [(p - a.detach()).pow(2).sum() for p, a in zip(parameters, averages, strict=True)]
    if not terms:
        raise ValueError("historical_averaging_penalty got no parameters")
    return torch.stack(terms).sum()


def instance_noise_std(initial_std: float, step: int, anneal_steps: Optional[int]) -> float:
    """Standard deviation of instance noise at ``step``: linear decay from ``initial_std`` to 0 over ``anneal_steps``.

    ``anneal_steps=None`` keeps the noise constant. Annealing follows Sønderby et al. 2017 (sec. 3.2): noise makes
    the real and fake distributions overlap early on, and is removed as the generator improves.
    """
    if initial_std < 0:
        raise ValueError(f"instance noise std must be >= 0, got {initial_std}")
    if anneal_steps is None:
        return float(initial_std)
    if anneal_steps <= 0:
        raise ValueError(f"instance noise anneal_steps must be positive or null, got {anneal_steps}")
    return float(initial_std) * max(0.0, 1.0 - step / anneal_steps)


def add_instance_noise(x: Tensor, std: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """``x + std * N(0, I)``; returns ``x`` itself when ``std == 0``."""
    if std == 0:
        return x
    return x + std * randn(x.shape, generator, x.device, x.dtype)
