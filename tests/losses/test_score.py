"""Tests of lightning_gen/losses/score.py against theory: the DSM optimum is the score of the noised density
(Vincent 2011), SSM estimates Hyvarinen's objective and recovers a Gaussian's score, and the optimal denoising
autoencoder's residual over sigma^2 is that score (Tweedie)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.losses import denoising_score_matching_loss, random_projections, sliced_score_matching_loss


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _minimize(params: list[torch.Tensor], loss_fn) -> None:
    """Minimize a (quadratic) loss with L-BFGS."""
    opt = torch.optim.LBFGS(params, lr=1, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_dsm_optimum_is_the_score_of_the_noised_gaussian(sigma):
    # data N(m, s^2 I): the DSM minimizer over linear scores a x + b is -(x - m) / (s^2 + sigma^2), and the minimum
    # is d/2 s^2 / (s^2 + sigma^2)
    m, s, n = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.8, 30_000
    x = m + s * torch.randn(n, 2, generator=_g(0), dtype=torch.float64)
    z = torch.randn(n, 2, generator=_g(1), dtype=torch.float64)
    noisy = x + sigma * z
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    _minimize([a, b], lambda: denoising_score_matching_loss(a * noisy + b, z, sigma))
    v = s * s + sigma * sigma
    torch.testing.assert_close(a.detach(), torch.full((2,), -1 / v, dtype=torch.float64), rtol=0.06, atol=0)
    torch.testing.assert_close(-b.detach() / a.detach(), m, rtol=0, atol=0.04)  # the score's centre
    best = float(denoising_score_matching_loss(a.detach() * noisy + b.detach(), z, sigma))
    assert best == pytest.approx(s * s / v, rel=0.03)  # d/2 = 1


def test_dsm_loss_weights_by_sigma_squared_and_accepts_per_example_sigma():
    score, z = torch.randn(4, 3, generator=_g(0)), torch.randn(4, 3, generator=_g(1))
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0])[:, None]
    by_hand = 0.5 * (sigma**2 * (score + z / sigma) ** 2).sum(1).mean()
    torch.testing.assert_close(denoising_score_matching_loss(score, z, sigma), by_hand)
    with pytest.raises(ValueError, match="same shape"):
        denoising_score_matching_loss(score, z[:, :2], 1.0)


@pytest.mark.parametrize("kind,variance_reduction", [("rademacher", False), ("gaussian", False), ("gaussian", True)])
def test_ssm_estimates_hyvarinens_objective_for_a_linear_score(kind, variance_reduction):
    # s(x) = A x + b: E_v[v^T grad(v^T s) + 1/2 (v^T s)^2] = tr(A) + 1/2 ||A x + b||^2 (Hyvarinen 2005)
    A = torch.tensor([[-1.0, 0.4], [-0.3, -2.0]], dtype=torch.float64)
    b = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x = torch.randn(20_000, 2, generator=_g(0), dtype=torch.float64).requires_grad_(True)
    v = random_projections(x.shape, kind, 2, generator=_g(1), dtype=torch.float64)
    loss = sliced_score_matching_loss(x @ A.T + b, x, v, variance_reduction=variance_reduction)
    exact = float(torch.trace(A) + 0.5 * (x.detach() @ A.T + b).square().sum(1).mean())
    assert float(loss) == pytest.approx(exact, abs=0.03)


def test_ssm_optimum_is_the_score_of_a_gaussian():
    # data N(m, C): the linear score minimizing SSM is -C^{-1} (x - m)
    m = torch.tensor([1.0, -2.0], dtype=torch.float64)
    C = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
    x = (m + torch.randn(8_000, 2, generator=_g(0), dtype=torch.float64) @ torch.linalg.cholesky(C).T)
    x.requires_grad_(True)
    v = random_projections(x.shape, "rademacher", 1, generator=_g(1), dtype=torch.float64)
    A = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    _minimize([A, b], lambda: sliced_score_matching_loss(x @ A.T + b, x, v))
    P = torch.linalg.inv(C)
    torch.testing.assert_close(A.detach(), -P, rtol=0, atol=0.15)
    torch.testing.assert_close(torch.linalg.solve(A.detach(), -b.detach()), m, rtol=0, atol=0.05)  # the centre


def test_ssm_weight_and_errors():
    x = torch.randn(6, 2, generator=_g(0)).requires_grad_(True)
    v = random_projections(x.shape, "gaussian", 1, generator=_g(1))
    w = torch.linspace(0.5, 3.0, 6)
    plain = sliced_score_matching_loss(-x, x, v)  # per example: -||v||^2 + 1/2 (v^T x)^2
    per = -v[0].square().sum(1) + 0.5 * (v[0] * x.detach()).sum(1).square()
    torch.testing.assert_close(plain, per.mean())
    torch.testing.assert_close(sliced_score_matching_loss(-x, x, v, weight=w), (per * w).mean())
    with pytest.raises(ValueError, match="requires_grad"):
        sliced_score_matching_loss(-x.detach(), x.detach(), v)
    with pytest.raises(ValueError, match="projection"):
        random_projections((2, 2), "uniform")
    signs = random_projections((1000,), "rademacher", generator=_g(2))
    assert set(signs.unique().tolist()) == {-1.0, 1.0}


def test_optimal_denoising_autoencoder_residual_over_sigma_squared_is_the_score():
    # 1-D mixture data; the optimal DAE r*(x~) = E[x | x~] is fitted numerically (least squares on 60 Gaussian bumps)
    # and (r*(x~) - x~) / sigma^2 must be the score of the noised mixture, computed by autograd
    weights, means, stds, sigma = torch.tensor([0.4, 0.6]), torch.tensor([-2.0, 1.5]), torch.tensor([0.5, 0.3]), 0.7
    n = 100_000
    k = torch.multinomial(weights, n, replacement=True, generator=_g(0))
    x = (means[k] + stds[k] * torch.randn(n, generator=_g(1))).double()
    noisy = x + sigma * torch.randn(n, generator=_g(2), dtype=torch.float64)
    centres = torch.linspace(-4.5, 4.0, 60, dtype=torch.float64)

    def features(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.exp(-0.5 * ((t[:, None] - centres) / 0.2) ** 2), t[:, None], torch.ones_like(t)[:, None]], 1)

    coef = torch.linalg.lstsq(features(noisy), x[:, None]).solution
    grid = torch.linspace(-3.0, 2.5, 56, dtype=torch.float64)
    residual_score = ((features(grid) @ coef)[:, 0] - grid) / sigma**2

    t = grid.clone().requires_grad_(True)
    var = stds.double() ** 2 + sigma**2
    log_p = torch.logsumexp(torch.log(weights.double()) - 0.5 * (t[:, None] - means.double()) ** 2 / var
                            - 0.5 * torch.log(2 * math.pi * var), dim=1)
    (score,) = torch.autograd.grad(log_p.sum(), t)
    assert float(score.abs().max()) > 1.5  # a non-trivial score over the grid
    torch.testing.assert_close(residual_score, score, rtol=0, atol=0.2)
