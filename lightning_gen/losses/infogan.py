"""InfoGAN's variational mutual-information term (Chen et al. 2016, eq. 4-5) as pure functions.

The generator's input carries a latent code ``c`` (a categorical part, uniform over ``k`` classes, and continuous
parts, uniform in [-1, 1]); an auxiliary distribution ``Q(c | x)`` read off the discriminator's trunk makes the
lower bound ``L_I = H(c) + E[log Q(c | G(z, c))] <= I(c; G(z, c))``. What is minimized is the negative
log-likelihood part ``-E[log Q(c | G(z, c))]``: the categorical cross-entropy plus the continuous codes' factored
Gaussian negative log-likelihood (fixed std 1 by default, as in the paper; with a learned ``log_std`` otherwise).
``H(c)`` is a constant, ``log k`` for the categorical code and ``log 2`` per continuous code.

Every term is computed in float32 when its inputs are float16/bfloat16 (a net's output under autocast).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gen.losses.elbo import gaussian_log_prob
from lightning_gen.precision import full_precision

__all__ = [
    "categorical_code_loss",
    "continuous_code_loss",
    "infogan_information_loss",
    "information_lower_bound",
]


def categorical_code_loss(logits: Tensor, codes: Tensor) -> Tensor:
    """``-E[log Q(c | x)]`` for a categorical code: the cross-entropy of ``logits`` ``(B, k)`` against ``codes`` ``(B,)``."""
    if logits.dim() != 2 or codes.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (B, k) and codes (B,), got {tuple(logits.shape)} and {tuple(codes.shape)}")
    return F.cross_entropy(full_precision(logits), codes.long())


def continuous_code_loss(means: Tensor, codes: Tensor, log_std: Optional[Tensor] = None) -> Tensor:
    """``-E[log Q(c | x)]`` for continuous codes under a factored Gaussian ``N(means, exp(log_std)^2)``.

    Summed over the code dimensions, averaged over the batch; ``log_std=None`` fixes the std at 1 (the paper's choice),
    which makes the loss ``E[sum_j (c_j - mu_j)^2 / 2] + m/2 log(2 pi)``.
    """
    if means.shape != codes.shape or means.dim() != 2:
        raise ValueError(f"expected means and codes of the same shape (B, m), got {tuple(means.shape)} and "
                         f"{tuple(codes.shape)}")
    logvar = torch.zeros_like(full_precision(means)) if log_std is None else 2.0 * full_precision(log_std)
    return -gaussian_log_prob(full_precision(codes), full_precision(means), logvar, reduction="mean")


def infogan_information_loss(
    logits: Optional[Tensor],
    categorical: Optional[Tensor],
    means: Optional[Tensor],
    continuous: Optional[Tensor],
    log_std: Optional[Tensor] = None,
    categorical_weight: float = 1.0,
    continuous_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted InfoGAN loss ``lambda_cat * CE + lambda_cont * Gaussian NLL`` (minimizing it maximizes ``L_I``).

    Either part may be absent (``None`` logits or means, or a code of zero width). Returns the total and its
    unweighted parts, ``categorical`` and ``continuous`` (nats; detached).
    """
    parts: dict[str, Tensor] = {}
    total: Optional[Tensor] = None
    if logits is not None and logits.shape[-1] > 0:
        if categorical is None:
            raise ValueError("categorical codes are needed with categorical logits")
        ce = categorical_code_loss(logits, categorical)
        parts["categorical"] = ce.detach()
        total = categorical_weight * ce
    if means is not None and means.shape[-1] > 0:
        if continuous is None:
            raise ValueError("continuous codes are needed with continuous means")
        nll = continuous_code_loss(means, continuous, log_std)
        parts["continuous"] = nll.detach()
        total = continuous_weight * nll if total is None else total + continuous_weight * nll
    if total is None:
        raise ValueError("InfoGAN needs at least one latent code (categorical logits or continuous means)")
    return total, parts


def information_lower_bound(num_categories: int, categorical_loss: Tensor) -> Tensor:
    """``L_I = log k - CE`` for a uniform ``k``-way code: the lower bound on ``I(c; G(z, c))`` in nats (at most ``log k``)."""
    if num_categories < 1:
        raise ValueError(f"num_categories must be >= 1, got {num_categories}")
    return math.log(num_categories) - categorical_loss
