"""Adversarial losses as pure functions of discriminator outputs.

Every game is a ``<kind>_loss_dis(real_out, fake_out)`` / ``<kind>_loss_gen(fake_out)`` pair. Outputs are raw
discriminator scores (logits for the probabilistic games, critic values for the Wasserstein game); each function
returns a scalar tensor that is *minimised* by the player that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AdversarialLoss",
    "ADVERSARIAL_LOSSES",
    "get_adversarial_loss",
    "minimax_loss_dis",
    "minimax_loss_gen",
    "nonsaturating_loss_dis",
    "nonsaturating_loss_gen",
    "wasserstein_loss_dis",
    "wasserstein_loss_gen",
    "hinge_loss_dis",
    "hinge_loss_gen",
    "least_squares_loss_dis",
    "least_squares_loss_gen",
]


def minimax_loss_dis(real_out: Tensor, fake_out: Tensor, real_target: float = 1.0) -> Tensor:
    """Discriminator loss of the original game: ``-E[log D(x)] - E[log(1 - D(G(z)))]`` (Goodfellow 2014, eq. 1).

    ``real_target < 1`` gives one-sided label smoothing (Salimans et al. 2016, sec. 3.4): the real term becomes the
    cross-entropy against ``real_target``; the fake target stays 0.
    """
    # -log sigmoid(a) = softplus(-a) and -log(1 - sigmoid(a)) = softplus(a): stable for any logit.
    real_term = F.softplus(-real_out) if real_target == 1.0 else (
        real_target * F.softplus(-real_out) + (1.0 - real_target) * F.softplus(real_out)
    )
    return real_term.mean() + F.softplus(fake_out).mean()


def minimax_loss_gen(fake_out: Tensor) -> Tensor:
    """Saturating generator loss ``E[log(1 - D(G(z)))]`` (Goodfellow 2014, eq. 1)."""
    return -F.softplus(fake_out).mean()


def nonsaturating_loss_dis(real_out: Tensor, fake_out: Tensor, real_target: float = 1.0) -> Tensor:
    """Discriminator loss of the non-saturating game; identical to the minimax discriminator loss."""
    return minimax_loss_dis(real_out, fake_out, real_target)


def nonsaturating_loss_gen(fake_out: Tensor) -> Tensor:
    """Non-saturating generator loss ``-E[log D(G(z))]`` (Goodfellow 2014, section 3)."""
    return F.softplus(-fake_out).mean()


def wasserstein_loss_dis(real_out: Tensor, fake_out: Tensor) -> Tensor:
    """Critic loss ``E[f(G(z))] - E[f(x)]``; its negative estimates W1 for a 1-Lipschitz critic (Arjovsky 2017)."""
    return fake_out.mean() - real_out.mean()


def wasserstein_loss_gen(fake_out: Tensor) -> Tensor:
    """Generator loss ``-E[f(G(z))]`` of the Wasserstein game (Arjovsky 2017, algorithm 1)."""
    return -fake_out.mean()


def hinge_loss_dis(real_out: Tensor, fake_out: Tensor) -> Tensor:
    """Hinge discriminator loss ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]`` (Lim & Ye 2017; Miyato 2018)."""
    return F.relu(1.0 - real_out).mean() + F.relu(1.0 + fake_out).mean()


def hinge_loss_gen(fake_out: Tensor) -> Tensor:
    """Hinge generator loss ``-E[D(G(z))]`` (Miyato 2018, eq. 17)."""
    return -fake_out.mean()


def least_squares_loss_dis(real_out: Tensor, fake_out: Tensor, real_target: float = 1.0) -> Tensor:
    """LSGAN discriminator loss ``1/2 E[(D(x) - b)^2] + 1/2 E[D(G(z))^2]`` (Mao 2017, eq. 2 with a=0, b=real_target)."""
    return 0.5 * (real_out - real_target).pow(2).mean() + 0.5 * fake_out.pow(2).mean()


def least_squares_loss_gen(fake_out: Tensor) -> Tensor:
    """LSGAN generator loss ``1/2 E[(D(G(z)) - 1)^2]`` (Mao 2017, eq. 2 with c=1)."""
    return 0.5 * (fake_out - 1.0).pow(2).mean()


@dataclass(frozen=True)
class AdversarialLoss:
    """A named pair of generator and discriminator losses."""

    name: str
    gen: Callable[[Tensor], Tensor]
    dis: Callable[..., Tensor]
    smoothable: bool = False  # whether ``dis`` takes ``real_target`` (one-sided label smoothing)


ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {
    loss.name: loss
    for loss in (
        AdversarialLoss("minimax", minimax_loss_gen, minimax_loss_dis, smoothable=True),
        AdversarialLoss("nonsaturating", nonsaturating_loss_gen, nonsaturating_loss_dis, smoothable=True),
        AdversarialLoss("wasserstein", wasserstein_loss_gen, wasserstein_loss_dis),
        AdversarialLoss("hinge", hinge_loss_gen, hinge_loss_dis),
        AdversarialLoss("least_squares", least_squares_loss_gen, least_squares_loss_dis, smoothable=True),
    )
}


def get_adversarial_loss(name: str) -> AdversarialLoss:
    """Look up an adversarial loss pair by name, raising a ``ValueError`` that lists the known names."""
    key = name.lower().replace("-", "_").replace(" ", "_")
    aliases = {"non_saturating": "nonsaturating", "saturating": "minimax", "wgan": "wasserstein", "lsgan": "least_squares"}
    key = aliases.get(key, key)
    if key not in ADVERSARIAL_LOSSES:
        raise ValueError(
            f"Unknown adversarial loss {name!r}. Choose one of {sorted(ADVERSARIAL_LOSSES)} "
            "(aliases: 'non_saturating', 'saturating', 'wgan', 'lsgan')."
        )
    return ADVERSARIAL_LOSSES[key]
