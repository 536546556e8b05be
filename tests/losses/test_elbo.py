"""Tests for lightning_gen/losses/elbo.py against closed forms, Monte Carlo estimates and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from lightning_gen.losses.elbo import (
    bernoulli_log_likelihood,
    elbo,
    gaussian_kl,
    gaussian_log_likelihood,
    gaussian_log_prob,
    importance_weighted_bound,
    reparameterize,
    standard_normal_log_prob,
)


def test_kl_equals_the_closed_form_torch_distributions_and_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g,
                                                                                   dtype=torch.float64)
    kl = gaussian_kl(mu, logvar, reduction="none")
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl, reference, rtol=1e-12, atol=1e-12)
    # Monte Carlo: E_q[log q(z) - log p(z)] with 400k reparameterized samples per input
    z = reparameterize(mu.expand(400_000, 4, 3), logvar.expand(400_000, 4, 3), generator=g)
    log_q = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp())
    log_p = -0.5 * (math.log(2 * math.pi) + z.pow(2))
    monte_carlo = (log_q - log_p).sum(-1).mean(0)
    standard_error = (log_q - log_p).sum(-1).std(0) / math.sqrt(400_000)
    assert torch.all((monte_carlo - kl).abs() < 4 * standard_error + 1e-9), (monte_carlo, kl)
    # zero exactly at the prior; reductions
    assert float(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5))) == 0.0
    assert float(gaussian_kl(mu, logvar, "sum")) == pytest.approx(float(kl.sum()), rel=1e-12)
    assert float(gaussian_kl(mu, logvar)) == pytest.approx(float(kl.mean()), rel=1e-12)


def test_reparameterized_samples_have_the_right_moments_and_gradients():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(0.25)], requires_grad=True)
    z = reparameterize(mu.expand(200_000, 2), logvar.expand(200_000, 2), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 0.5]), atol=0.01, rtol=0)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((2,), 200_000.0))  # dz/dmu = 1 per sample
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        reparameterize(torch.zeros(2, 3), torch.zeros(2, 4))


def test_log_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(2)
    x, mu, logvar = (torch.randn(5, 2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(x).sum((1, 2))
    torch.testing.assert_close(gaussian_log_prob(x, mu, logvar), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gaussian_log_likelihood(x, mu, 0.3), Normal(mu, math.exp(0.15)).log_prob(x).sum((1, 2)),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(standard_normal_log_prob(x), Normal(0.0, 1.0).log_prob(x).sum((1, 2)))
    logits = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    binary = (torch.rand(5, 1, 4, 4, generator=g, dtype=torch.float64) > 0.5).double()
    torch.testing.assert_close(bernoulli_log_likelihood(logits, binary), Bernoulli(logits=logits).log_prob(binary)
                               .sum((1, 2, 3)), rtol=1e-12, atol=1e-12)
    # a confident correct decoder has log-likelihood near 0; the ELBO is log-likelihood - beta KL
    assert float(bernoulli_log_likelihood(40 * (2 * binary - 1), binary).abs().max()) < 1e-12
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        bernoulli_log_likelihood(logits, binary * 2 - 1)
    ll, kl = torch.tensor([-3.0, -5.0]), torch.tensor([1.0, 2.0])
    torch.testing.assert_close(elbo(ll, kl), torch.tensor([-4.0, -7.0]))
    torch.testing.assert_close(elbo(ll, kl, beta=4.0), torch.tensor([-7.0, -13.0]))
    with pytest.raises(ValueError, match="beta"):
        elbo(ll, kl, beta=-1.0)


def linear_gaussian(x: torch.Tensor, sigma2: float):
    """z ~ N(0, 1), x | z ~ N(z, sigma2): log p(x) and the exact posterior N(x / (1 + sigma2), sigma2 / (1 + sigma2))."""
    log_px = Normal(torch.zeros_like(x), torch.full_like(x, math.sqrt(1 + sigma2))).log_prob(x)
    return log_px, x / (1 + sigma2), torch.full_like(x, math.log(sigma2 / (1 + sigma2)))


def bound(x: torch.Tensor, sigma2: float, mu_q: torch.Tensor, logvar_q: torch.Tensor, k: int, seed: int):
    z = reparameterize(mu_q.expand(k, -1), logvar_q.expand(k, -1), generator=torch.Generator().manual_seed(seed))
    log_px_z = Normal(z, torch.full_like(z, math.sqrt(sigma2))).log_prob(x.expand(k, -1))
    log_pz = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z)
    log_qz = Normal(mu_q, (0.5 * logvar_q).exp()).log_prob(z)
    return importance_weighted_bound(log_px_z, log_pz, log_qz)


def test_importance_weighted_bound_is_exact_with_the_true_posterior_and_tightens_with_k():
    x = torch.tensor([-1.0, 0.3, 2.5], dtype=torch.float64)
    sigma2 = 0.2
    log_px, post_mu, post_logvar = linear_gaussian(x, sigma2)
    # q = the exact posterior: every importance weight equals p(x), so the bound is log p(x) for any K
    for k in (1, 7):
        torch.testing.assert_close(bound(x, sigma2, post_mu, post_logvar, k, seed=k), log_px, rtol=1e-10, atol=1e-10)
    # q = the prior (a poor proposal): the bound rises with K towards log p(x) and never passes it on average
    prior_mu, prior_logvar = torch.zeros_like(x), torch.zeros_like(x)
    averaged = {k: torch.stack([bound(x, sigma2, prior_mu, prior_logvar, k, seed=100 * k + r)
                                for r in range(40)]).mean(0) for k in (1, 10, 1000)}
    assert torch.all(averaged[1] < averaged[10]) and torch.all(averaged[10] < averaged[1000])
    assert torch.all(averaged[1000] < log_px + 0.02)
    assert torch.all((log_px - averaged[1000]) < 0.25)  # close at K = 1000 (x = 2.5 is the hardest)
    # K = 1 is the ELBO; with q = prior, KL = 0 and E_q[log p(x|z)] = -log(2 pi sigma2) / 2 - (x^2 + 1) / (2 sigma2)
    n = 200_000
    z = torch.randn(1, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    one_sample = importance_weighted_bound(Normal(z, math.sqrt(sigma2)).log_prob(torch.full_like(z, 2.5)),
                                           torch.zeros_like(z), torch.zeros_like(z))  # log p(z) - log q(z) = 0
    analytic = -0.5 * math.log(2 * math.pi * sigma2) - (2.5 ** 2 + 1) / (2 * sigma2)
    assert abs(float(one_sample.mean()) - analytic) < 4 * float(one_sample.std()) / math.sqrt(n)
    with pytest.raises(ValueError, match=r"\(K, B\)"):
        importance_weighted_bound(torch.zeros(3), torch.zeros(3), torch.zeros(3))


def test_importance_weighted_bound_does_not_underflow():
    log_w = torch.full((5, 2), -5000.0, dtype=torch.float64)
    torch.testing.assert_close(importance_weighted_bound(log_w, torch.zeros_like(log_w), torch.zeros_like(log_w)),
                               torch.full((2,), -5000.0, dtype=torch.float64))
