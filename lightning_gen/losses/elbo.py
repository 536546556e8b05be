"""Terms of the VAE evidence lower bound and the importance-weighted bound, as pure functions.

Conventions: ``x`` and the decoder outputs are batches ``(B, ...)``; log-densities are summed over every dimension
but the batch one and returned per sample, shape ``(B,)``, unless ``reduction`` says otherwise (``"mean"`` or
``"sum"`` over the batch). Latent Gaussians are diagonal and parameterized by ``mu`` and ``logvar`` (log sigma^2).
References: Kingma & Welling 2014 (reparameterization, closed-form KL, appendix B), Higgins et al. 2017 (beta),
Burda et al. 2016 (importance-weighted bound).

Every term is computed in float32 when its inputs are float16/bfloat16 (a net's output under autocast): a
log-density is a sum over every dimension, which low precision would round by whole nats.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gen.checks import value_checks_enabled
from lightning_gen.noise import randn
from lightning_gen.precision import full_precision

__all__ = [
    "bernoulli_log_likelihood",
    "elbo",
    "gaussian_kl",
    "gaussian_log_likelihood",
    "gaussian_log_prob",
    "importance_weighted_bound",
    "reparameterize",
    "standard_normal_log_prob",
]

_LOG_2PI = math.log(2 * math.pi)
_REDUCTIONS = ("none", "mean", "sum")


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _per_sample_sum(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1).sum(dim=1)


def _same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def reparameterize(mu: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``: a sample of q(z|x) that gradients flow through."""
    _same_shape("mu", mu, "logvar", logvar)
    eps = randn(mu.shape, generator, mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: Tensor, logvar: Tensor, reduction: str = "mean") -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form, ``1/2 sum(exp(logvar) + mu^2 - 1 - logvar)``
    (Kingma & Welling 2014, appendix B), per sample then reduced."""
    _same_shape("mu", mu, "logvar", logvar)
    mu, logvar = full_precision(mu), full_precision(logvar)
    return _reduce(_per_sample_sum(0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar)), reduction)


def gaussian_log_prob(x: Tensor, mu: Tensor, logvar: Tensor, reduction: str = "none") -> Tensor:
    """log N(x; mu, diag(exp(logvar))), summed over the non-batch dimensions."""
    _same_shape("x", x, "mu", mu)
    _same_shape("mu", mu, "logvar", logvar)
    x, mu, logvar = full_precision(x), full_precision(mu), full_precision(logvar)
    return _reduce(_per_sample_sum(-0.5 * (_LOG_2PI + logvar + (x - mu).pow(2) / logvar.exp())), reduction)


def standard_normal_log_prob(z: Tensor, reduction: str = "none") -> Tensor:
    """log N(z; 0, I), summed over the non-batch dimensions (the VAE prior)."""
    z = full_precision(z)
    return _reduce(_per_sample_sum(-0.5 * (_LOG_2PI + z.pow(2))), reduction)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor, reduction: str = "none") -> Tensor:
    """log p(x|z) of a Bernoulli decoder with ``logits``: ``sum x log p + (1 - x) log(1 - p)``.

    ``x`` must lie in [0, 1] (binarized pixels; grey levels give the usual continuous relaxation, which is not a
    normalized density). Images in [-1, 1] must be mapped with ``(x + 1) / 2`` first. The range check waits for the
    device, so it runs only where :func:`~lightning_gen.checks.value_checks_enabled`.
    """
    _same_shape("logits", logits, "x", x)
    logits, x = full_precision(logits), full_precision(x)
    if x.numel() and value_checks_enabled() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(
            f"bernoulli_log_likelihood needs targets in [0, 1], got values in [{float(x.min()):.3g}, "
            f"{float(x.max()):.3g}]: map images in [-1, 1] with (x + 1) / 2"
        )
    return _reduce(_per_sample_sum(-F.binary_cross_entropy_with_logits(logits, x, reduction="none")), reduction)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, logvar: Tensor, reduction: str = "none") -> Tensor:
    """log p(x|z) of a Gaussian decoder N(mean, diag(exp(logvar))); ``logvar`` may be a learned tensor or a
    constant broadcast to ``mean``'s shape (a number is filled in on the device, never copied from the host)."""
    mean = full_precision(mean)
    if isinstance(logvar, Tensor):
        logvar = logvar.to(dtype=mean.dtype, device=mean.device).expand_as(mean)
    else:
        logvar = torch.full_like(mean, float(logvar))
    return gaussian_log_prob(x, mean, logvar, reduction)


def elbo(log_likelihood: Tensor, kl: Tensor, beta: float = 1.0) -> Tensor:
    """``E_q[log p(x|z)] - beta KL(q(z|x) || p(z))`` from per-sample terms (beta = 1: the ELBO; Higgins et al. 2017
    for beta != 1, which is then no longer a bound on log p(x) when beta < 1)."""
    _same_shape("log_likelihood", log_likelihood, "kl", kl)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return log_likelihood - beta * kl


def importance_weighted_bound(log_p_x_given_z: Tensor, log_p_z: Tensor, log_q_z_given_x: Tensor) -> Tensor:
    """The importance-weighted bound ``log (1/K) sum_k p(x, z_k) / q(z_k|x)`` per sample (Burda et al. 2016, eq. 8).

    Inputs are ``(K, B)`` log-densities for K samples ``z_k ~ q(z|x)`` of each of B inputs; returns ``(B,)``. It is
    a lower bound on log p(x) that grows with K and tends to it; K = 1 gives a one-sample ELBO estimate. Computed
    with logsumexp, so very negative log-weights do not underflow.
    """
    _same_shape("log_p_x_given_z", log_p_x_given_z, "log_p_z", log_p_z)
    _same_shape("log_p_z", log_p_z, "log_q_z_given_x", log_q_z_given_x)
    log_p_x_given_z, log_p_z, log_q_z_given_x = (full_precision(t) for t in (log_p_x_given_z, log_p_z, log_q_z_given_x))
    if log_p_z.dim() != 2 or log_p_z.shape[0] < 1:
        raise ValueError(f"importance_weighted_bound takes (K, B) log-densities, got shape {tuple(log_p_z.shape)}")
    log_w = log_p_x_given_z + log_p_z - log_q_z_given_x
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
