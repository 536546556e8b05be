"""Adversarial losses as pure functions of discriminator outputs.

Every game is a ``<kind>_loss_dis(real_out, fake_out)`` / ``<kind>_loss_gen(fake_out)`` pair; relativistic
generator losses also see the real scores, ``<kind>_loss_gen(fake_out, real_out)``. Outputs are raw discriminator
scores (logits for the probabilistic games, critic values for the Wasserstein game); each function returns a scalar
tensor that is *minimised* by the player that owns it. :class:`AdversarialLoss` bundles a pair with the attributes a
module needs (whether the generator needs real scores, whether label smoothing applies, ...), so no module branches
on a loss's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor

from lightning_gen.precision import full_precision

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
    "relativistic_loss_dis",
    "relativistic_loss_gen",
    "relativistic_average_loss_dis",
    "relativistic_average_loss_gen",
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


def _bce_with_target(logits: Tensor, target: float) -> Tensor:
    """Elementwise binary cross-entropy of ``sigmoid(logits)`` against a constant target, stable for any logit."""
    if target == 1.0:
        return F.softplus(-logits)
    return target * F.softplus(-logits) + (1.0 - target) * F.softplus(logits)


def relativistic_loss_dis(real_out: Tensor, fake_out: Tensor, real_target: float = 1.0) -> Tensor:
    """RSGAN discriminator loss ``-E[log sigmoid(C(x_r) - C(x_f))]`` over paired samples (Jolicoeur-Martineau 2018,
    eq. 7); ``real_target < 1`` smooths the target of the "real is more realistic" event."""
    _paired(real_out, fake_out)
    return _bce_with_target(real_out - fake_out, real_target).mean()


def relativistic_loss_gen(fake_out: Tensor, real_out: Tensor) -> Tensor:
    """RSGAN generator loss ``-E[log sigmoid(C(x_f) - C(x_r))]`` (Jolicoeur-Martineau 2018, eq. 8)."""
    _paired(real_out, fake_out)
    return F.softplus(-(fake_out - real_out)).mean()


def relativistic_average_loss_dis(real_out: Tensor, fake_out: Tensor, real_target: float = 1.0) -> Tensor:
    """RaGAN discriminator loss ``-E[log sigmoid(C(x_r) - E C(x_f))] - E[log(1 - sigmoid(C(x_f) - E C(x_r)))]``
    (Jolicoeur-Martineau 2018, sec. 4.3); ``real_target`` smooths the first term's target."""
    real_term = _bce_with_target(real_out - fake_out.mean(), real_target).mean()
    return real_term + F.softplus(fake_out - real_out.mean()).mean()


def relativistic_average_loss_gen(fake_out: Tensor, real_out: Tensor) -> Tensor:
    """RaGAN generator loss: the discriminator's with the roles of real and fake swapped (sec. 4.3)."""
    return F.softplus(-(fake_out - real_out.mean())).mean() + F.softplus(real_out - fake_out.mean()).mean()


def _paired(real_out: Tensor, fake_out: Tensor) -> None:
    if real_out.shape != fake_out.shape:
        raise ValueError(
            f"the relativistic (RSGAN) loss pairs real and fake samples, so their scores need the same shape; got "
            f"{tuple(real_out.shape)} and {tuple(fake_out.shape)} (use 'relativistic_average' for unpaired batches)"
        )


@dataclass(frozen=True)
class AdversarialLoss:
    """A named pair of generator and discriminator losses and the attributes a module needs to use them.

    Attributes:
        name: the registry name.
        gen: ``gen(fake_out)``, or ``gen(fake_out, real_out)`` when ``needs_real_scores``.
        dis: ``dis(real_out, fake_out)``, plus a ``real_target`` keyword when ``smoothable``.
        smoothable: ``dis`` takes ``real_target`` (one-sided label smoothing).
        needs_real_scores: the generator's loss also scores the running step's real batch (relativistic losses).
        estimates_wasserstein: ``-dis`` estimates the Wasserstein-1 distance for a 1-Lipschitz critic (logged as
            ``wasserstein_estimate``).
        half_weighted: both losses already carry a factor 1/2 (Mao's LSGAN coding), so an objective defined as
            ``0.5 * (real + fake)`` uses ``dis`` as is and ``2 * gen`` (pix2pix, CycleGAN).
        label_midpoint: the score halfway between the real and the fake label, so ``2 * label_midpoint - s`` swaps
            the labels (0 for logits and critic values; 1/2 for least squares' 0/1 coding). BiGAN's encoder term.
    """

    name: str
    gen: Callable[..., Tensor]
    dis: Callable[..., Tensor]
    smoothable: bool = False
    needs_real_scores: bool = False
    estimates_wasserstein: bool = False
    half_weighted: bool = False
    label_midpoint: float = 0.0

    def generator_loss(self, fake_out: Tensor, real_out: Optional[Tensor] = None) -> Tensor:
        """The generator's loss, at least float32 (autocast scores are upcast); ``real_out`` when it needs them."""
        if self.needs_real_scores:
            if real_out is None:
                raise ValueError(f"the {self.name!r} generator loss needs the real batch's scores (real_out)")
            return self.gen(full_precision(fake_out), full_precision(real_out))
        return self.gen(full_precision(fake_out))

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor, real_target: float = 1.0) -> Tensor:
        """The discriminator's loss, at least float32; ``real_target < 1`` applies one-sided label smoothing."""
        if real_target != 1.0:
            if not self.smoothable:
                raise ValueError(f"label smoothing does not apply to the {self.name!r} loss")
            return self.dis(full_precision(real_out), full_precision(fake_out), real_target=real_target)
        return self.dis(full_precision(real_out), full_precision(fake_out))


ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {
    loss.name: loss
    for loss in (
        AdversarialLoss("minimax", minimax_loss_gen, minimax_loss_dis, smoothable=True),
        AdversarialLoss("nonsaturating", nonsaturating_loss_gen, nonsaturating_loss_dis, smoothable=True),
        AdversarialLoss("wasserstein", wasserstein_loss_gen, wasserstein_loss_dis, estimates_wasserstein=True),
        AdversarialLoss("hinge", hinge_loss_gen, hinge_loss_dis),
        AdversarialLoss("least_squares", least_squares_loss_gen, least_squares_loss_dis, smoothable=True,
                        half_weighted=True, label_midpoint=0.5),
        AdversarialLoss("relativistic", relativistic_loss_gen, relativistic_loss_dis, smoothable=True,
                        needs_real_scores=True),
        AdversarialLoss("relativistic_average", relativistic_average_loss_gen, relativistic_average_loss_dis,
                        smoothable=True, needs_real_scores=True),
    )
}


def get_adversarial_loss(name: str) -> AdversarialLoss:
    """Look up an adversarial loss pair by name, raising a ``ValueError`` that lists the known names."""
    key = name.lower().replace("-", "_").replace(" ", "_")
    aliases = {"non_saturating": "nonsaturating", "saturating": "minimax", "wgan": "wasserstein", "lsgan": "least_squares",
               "rsgan": "relativistic", "ragan": "relativistic_average"}
    key = aliases.get(key, key)
    if key not in ADVERSARIAL_LOSSES:
        raise ValueError(
            f"Unknown adversarial loss {name!r}. Choose one of {sorted(ADVERSARIAL_LOSSES)} "
            "(aliases: 'non_saturating', 'saturating', 'wgan', 'lsgan', 'rsgan', 'ragan')."
        )
    return ADVERSARIAL_LOSSES[key]
