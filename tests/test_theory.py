"""Theory checks on 1-D Gaussians: the optimal discriminator, the value -log 4 at equilibrium, and WGAN-GP's W1.

Each test trains a tiny MLP for a few hundred Adam steps on fresh batches (about a second on one CPU thread) and
compares with a closed form. Tolerances are from runs over seeds 1..12 (see each docstring); the tests use seed 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from lightning_gen.losses import gradient_penalty, minimax_loss_dis, wasserstein_loss_dis
from lightning_gen.nets import MLPDiscriminator


@pytest.fixture(autouse=True)
def _one_thread_seed_1():
    """Seed 1; one intra-op thread, since tiny matmuls on a busy 2-core machine run ~30x slower with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    yield
    torch.set_num_threads(threads)


def _normal_pdf(x: torch.Tensor, mean: float, std: float = 1.0) -> torch.Tensor:
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _train_discriminator(disc: MLPDiscriminator, mu_g: float, steps: int = 400, batch: int = 256) -> MLPDiscriminator:
    """Maximise V(D, G) for p_d = N(0, 1) and a fixed p_g = N(mu_g, 1), fresh batches every step."""
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    # a 10x smaller step size for the last quarter averages out the minibatch noise of the final iterate
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3 * steps // 4], gamma=0.1)
    for _ in range(steps):
        real = torch.randn(batch, 1)
        fake = mu_g + torch.randn(batch, 1)
        loss = minimax_loss_dis(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return disc


@torch.no_grad()
def _value(disc: MLPDiscriminator, mu_g: float, n: int = 100_000) -> float:
    """V(D, G) = E_pd[log D(x)] + E_pg[log(1 - D(x))] = -minimax_loss_dis on a large fresh sample."""
    return -minimax_loss_dis(disc(torch.randn(n, 1)), disc(mu_g + torch.randn(n, 1))).item()


def test_discriminator_approaches_optimal_d_star():
    """Goodfellow 2014, prop. 1: for fixed G the optimal D is p_d / (p_d + p_g).

    p_d = N(0, 1), p_g = N(1.5, 1): D*(x) = sigmoid(1.125 - 1.5 x), so D* runs from 0.98 to 0.03 over [-2, 3].
    Seeds 1..12 give a mean |D - D*| of 0.0017..0.0059 (seed 1: 0.0059) and a max of 0.006..0.020 (seed 1: 0.013);
    a constant 1/2 is off by 0.323 on average. Tolerances: mean < 0.02, max < 0.05, and 15x better than the constant.
    """
    disc = _train_discriminator(MLPDiscriminator(input_shape=1, hidden_dims=(32, 32)), mu_g=1.5)
    x = torch.linspace(-2.0, 3.0, 101).unsqueeze(1)
    with torch.no_grad():
        d = torch.sigmoid(disc(x))
    p_d, p_g = _normal_pdf(x.squeeze(1), 0.0), _normal_pdf(x.squeeze(1), 1.5)
    d_star = p_d / (p_d + p_g)
    torch.testing.assert_close(d_star, torch.sigmoid(1.125 - 1.5 * x.squeeze(1)))  # the closed form itself
    err = (d - d_star).abs()
    baseline = (0.5 - d_star).abs().mean().item()
    assert 0.30 < baseline < 0.35
    assert err.mean().item() < 0.02
    assert err.max().item() < 0.05
    assert err.mean().item() < baseline / 15


def test_value_at_equilibrium_is_minus_log_4():
    """Goodfellow 2014, thm. 1: with p_g = p_d the optimal D is 1/2 everywhere and V(D*, G) = -log 4.

    D starts at logit ~2 (D ~ 0.88, V ~ -log 4 - 0.9) so the test sees training reach the equilibrium. Seeds
    1..12: |V + log 4| <= 2.3e-4 (seed 1: 1.0e-4) and max |D - 1/2| on [-2, 2] of 0.007..0.026 (seed 1: 0.009).
    Tolerances: 0.005 and 0.05. (V <= -log 4 for every D in expectation, so the small gap is sampling noise
    of ~1e-4 at n = 100,000 plus D's residual wiggle, which costs only second order.)
    """
    log4 = math.log(4.0)
    disc = MLPDiscriminator(input_shape=1, hidden_dims=(32, 32))
    with torch.no_grad():
        disc.net[-1].bias.add_(2.0)
    assert _value(disc, 0.0) < -log4 - 0.5  # far from equilibrium before training
    _train_discriminator(disc, mu_g=0.0)
    v = _value(disc, 0.0)
    assert abs(v - (-log4)) < 0.005
    x = torch.linspace(-2.0, 2.0, 81).unsqueeze(1)
    with torch.no_grad():
        d = torch.sigmoid(disc(x))
    assert (d - 0.5).abs().max().item() < 0.05


def _wgan_gp_optimum(mu_r: float, mu_g: float, std: float, lam: float) -> float:
    """E_r f - E_g f at the optimum over all critics f of E_r f - E_g f - lam E_xhat[(|f'(x_hat)| - 1)^2].

    In 1-D, E_r f - E_g f = int f'(x) D(x) dx with D = F_g - F_r, so the objective is maximised pointwise by
    f' = 1 + D / (2 lam rho) (D >= 0 here), rho being the density of x_hat = a x_r + (1 - a) x_g, a ~ U(0, 1):
    the estimate is W1 + int D^2 / (2 lam rho) dx, above W1 = int |D| dx (= |mu_r - mu_g| for equal stds).
    """
    x = np.linspace(min(mu_r, mu_g) - 8 * std, max(mu_r, mu_g) + 8 * std, 801)
    a = np.linspace(0.0, 1.0, 201)[:, None]
    rho = integrate.trapezoid(stats.norm.pdf(x, a * mu_r + (1 - a) * mu_g, std * np.sqrt(a**2 + (1 - a) ** 2)), a[:, 0], axis=0)
    delta = stats.norm.cdf(x, mu_g, std) - stats.norm.cdf(x, mu_r, std)
    return float(integrate.trapezoid(np.abs(delta) + delta**2 / (2 * lam * rho), x))


def test_wgan_gp_critic_estimates_w1():
    """WGAN-GP (Gulrajani 2017) on N(2, 1) vs N(0, 1): -wasserstein_loss_dis estimates W1 = |mu_r - mu_g| = 2.

    The penalty is two-sided, so the regularised optimum overshoots: with lam = 10 it is 2.2103 (closed form
    above), 10.5 % over W1. Seeds 1..12 gave 2.189..2.216 (mean 2.206, sd 0.009). Tolerances: within 0.05 of
    2.2103 (> 5 sd; seed 1: 2.2005) and within 15 % of W1.

    The first 10 steps skip the penalty: in 1-D a critic initialised with slope of the wrong sign cannot flip it
    without crossing f' = 0, where the penalty costs lam, so it gets stuck at the mirror optimum f' = -(1 - 1/lam),
    estimate -1.8 (5 of 8 seeds without the warm-up) -- an artefact of 1-D (in 2-D or more the gradient can
    rotate around 0) and not of the code.
    """
    mu_r, mu_g, std, lam, steps, batch = 2.0, 0.0, 1.0, 10.0, 300, 256
    w1 = abs(mu_r - mu_g)
    theory = _wgan_gp_optimum(mu_r, mu_g, std, lam)
    assert 2.19 < theory < 2.23 and abs(_wgan_gp_optimum(mu_r, mu_g, std, 1e6) - w1) < 1e-4

    critic = MLPDiscriminator(input_shape=1, hidden_dims=(32, 32), activation="tanh")
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2 * steps // 3], gamma=0.1)
    for step in range(steps):
        real = mu_r + std * torch.randn(batch, 1)
        fake = mu_g + std * torch.randn(batch, 1)
        loss = wasserstein_loss_dis(critic(real), critic(fake))
        if step >= 10:
            loss = loss + lam * gradient_penalty(critic, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    n = 100_000
    with torch.no_grad():
        real_out, fake_out = critic(mu_r + std * torch.randn(n, 1)), critic(mu_g + std * torch.randn(n, 1))
    estimate = -wasserstein_loss_dis(real_out, fake_out).item()
    # the critic must score real data higher (W1 is symmetric, so this is what pins the loss's sign here)
    assert estimate == pytest.approx(real_out.mean().item() - fake_out.mean().item(), rel=1e-5)
    assert abs(estimate - theory) < 0.05
    assert abs(estimate - w1) / w1 < 0.15
