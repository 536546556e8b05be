"""Reconstruction losses of image-to-image translation as pure functions: CycleGAN's cycle-consistency and
identity terms (Zhu et al. 2017) and pix2pix's L1 term (Isola et al. 2017).

Each returns ``weight * mean |a - b|`` (L1, averaged over all elements) as a scalar tensor; the papers' weights
are the defaults: lambda_cycle = 10 (CycleGAN sec. 4 / 7.1), lambda_identity = 0.5 * lambda_cycle = 5 (CycleGAN
sec. 5.2, the reference code's ``lambda_identity=0.5`` times ``lambda_A``), lambda_L1 = 100 (pix2pix sec. 4).
"""

from __future__ import annotations

from torch import Tensor

__all__ = [
    "CYCLE_WEIGHT",
    "IDENTITY_WEIGHT",
    "PIX2PIX_L1_WEIGHT",
    "cycle_consistency_loss",
    "identity_loss",
    "l1_reconstruction_loss",
]

CYCLE_WEIGHT: float = 10.0
IDENTITY_WEIGHT: float = 0.5 * CYCLE_WEIGHT
PIX2PIX_L1_WEIGHT: float = 100.0


def _weighted_l1(a: Tensor, b: Tensor, weight: float, name: str, a_name: str, b_name: str) -> Tensor:
    if a.shape != b.shape:  # broadcasting would silently average the wrong differences
        raise ValueError(
            f"{name} needs {a_name} and {b_name} of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return weight * (a - b).abs().mean()


def cycle_consistency_loss(real: Tensor, reconstructed: Tensor, weight: float = CYCLE_WEIGHT) -> Tensor:
    """Cycle loss ``weight * E|F(G(x)) - x|`` for ``reconstructed = F(G(real))`` (CycleGAN eq. 2)."""
    return _weighted_l1(reconstructed, real, weight, "cycle_consistency_loss", "reconstructed", "real")


def identity_loss(real: Tensor, mapped: Tensor, weight: float = IDENTITY_WEIGHT) -> Tensor:
    """Identity loss ``weight * E|G(y) - y|`` for ``mapped = G(real)``, ``real`` from G's target domain (sec. 5.2)."""
    return _weighted_l1(mapped, real, weight, "identity_loss", "mapped", "real")


def l1_reconstruction_loss(fake: Tensor, target: Tensor, weight: float = PIX2PIX_L1_WEIGHT) -> Tensor:
    """pix2pix L1 term ``weight * E|y - G(x)|`` between ``fake = G(x)`` and the paired ``target`` y (eq. 3)."""
    return _weighted_l1(fake, target, weight, "l1_reconstruction_loss", "fake", "target")
