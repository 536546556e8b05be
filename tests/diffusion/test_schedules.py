"""Tests for lightning_gen/diffusion/schedules.py: schedules, q(x_t|x_0), posterior and reverse step vs theory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from lightning_gen.diffusion import (
    SCHEDULES,
    VARIANCES,
    NoiseSchedule,
    cosine_schedule,
    linear_schedule,
    make_schedule,
)

F64 = torch.float64
# buffers are computed in float64 and stored in float32: a relative error of ~6e-8 each, so 1e-6 is a safe bound
RTOL32 = 1e-6


def _f64(x: Tensor) -> Tensor:
    return x.to(F64)


def _cosine_alpha_bar(u: float, s: float = 0.008) -> float:
    """Nichol & Dhariwal 2021, eq. 17, at continuous time u = t / T."""
    f = lambda v: math.cos((v + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(0.0)


# ---------------------------------------------------------------------------------------------- schedules
def test_linear_betas_are_ddpm_linspace_at_1000_steps():
    """T = 1000 gives DDPM's betas exactly: linspace(1e-4, 0.02, 1000)."""
    sch = linear_schedule(1000)
    assert sch.num_steps == 1000
    assert sch.betas.dtype == torch.float32
    assert_close(sch.betas, torch.linspace(1e-4, 0.02, 1000, dtype=F64).float(), rtol=0, atol=0)
    assert sch.betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert sch.betas[-1].item() == pytest.approx(0.02, rel=1e-6)


@pytest.mark.parametrize("num_steps", [50, 100, 250])
def test_linear_betas_scale_endpoints_by_1000_over_T(num_steps):
    """Scaled endpoints are beta_start * 1000/T and beta_end * 1000/T; unscaled ones stay 1e-4 and 0.02."""
    scale = 1000 / num_steps
    sch = linear_schedule(num_steps)
    assert_close(sch.betas, torch.linspace(1e-4 * scale, 0.02 * scale, num_steps, dtype=F64).float(), rtol=0, atol=0)
    raw = linear_schedule(num_steps, scale_with_num_steps=False)
    assert raw.betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert raw.betas[-1].item() == pytest.approx(0.02, rel=1e-6)


@pytest.mark.parametrize("num_steps, scale", [(300, True), (1000, True), (100, False)])
def test_alpha_bar_is_cumulative_product_by_hand(num_steps, scale):
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. eq. 4) against a Python loop over float64 linspace betas."""
    sch = linear_schedule(num_steps, scale_with_num_steps=scale)
    k = 1000 / num_steps if scale else 1.0
    betas = torch.linspace(1e-4 * k, 0.02 * k, num_steps, dtype=F64).tolist()
    prod, expected = 1.0, []
    for b in betas:
        prod *= 1.0 - b
        expected.append(prod)
    expected_t = torch.tensor(expected, dtype=F64)
    assert_close(_f64(sch.alphas_cumprod), expected_t, rtol=RTOL32, atol=0)
    assert_close(_f64(sch.alphas), 1.0 - torch.tensor(betas, dtype=F64), rtol=RTOL32, atol=0)
    assert_close(_f64(sch.alphas_cumprod_prev), torch.tensor([1.0] + expected[:-1], dtype=F64), rtol=RTOL32, atol=0)
    assert_close(_f64(sch.sqrt_alphas_cumprod) ** 2, expected_t, rtol=4 * RTOL32, atol=0)
    assert_close(_f64(sch.sqrt_one_minus_alphas_cumprod) ** 2, 1 - expected_t, rtol=4 * RTOL32, atol=0)


@pytest.mark.parametrize("num_steps", [10, 100, 1000])
def test_cosine_alpha_bar_matches_closed_form(num_steps):
    """alpha_bar at index t is f((t+1)/T) / f(0) (eq. 17); the clipped last step is alpha_bar_{T-2} (1 - max_beta)."""
    sch = cosine_schedule(num_steps)
    ab = _f64(sch.alphas_cumprod)
    for t in sorted({0, 1, num_steps // 4, num_steps // 2, (3 * num_steps) // 4, num_steps - 2}):
        assert ab[t].item() == pytest.approx(_cosine_alpha_bar((t + 1) / num_steps), rel=RTOL32)
    assert ab[-1].item() == pytest.approx(ab[-2].item() * (1 - 0.999), rel=2 * RTOL32)
    assert sch.betas.max().item() <= 0.999 + 1e-7
    assert sch.betas[-1].item() == pytest.approx(0.999, rel=1e-7)  # f(1) = 0 would make beta = 1 without the clip


def test_cosine_max_beta_is_respected():
    """A lower max_beta clips the late betas (never exceeded), leaving the early ones at their eq. 17 values."""
    free, clipped = cosine_schedule(100), cosine_schedule(100, max_beta=0.2)
    assert clipped.betas.max().item() == pytest.approx(0.2, rel=1e-6)
    hit = free.betas > 0.2
    assert 0 < int(hit.sum()) < 100
    assert_close(clipped.betas[~hit], free.betas[~hit], rtol=0, atol=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: linear_schedule(21),  # the fewest steps whose scaled betas stay below 1 (0.02 * 1000 / 21 = 0.95)
        lambda: linear_schedule(1000),
        lambda: linear_schedule(2, scale_with_num_steps=False),
        lambda: cosine_schedule(1),
        lambda: cosine_schedule(2),
        lambda: cosine_schedule(1000),
    ],
    ids=["linear21", "linear1000", "linear2-unscaled", "cosine1", "cosine2", "cosine1000"],
)
def test_alpha_bar_strictly_decreasing_inside_unit_interval(build):
    """0 < alpha_bar_t < 1 and alpha_bar_t < alpha_bar_{t-1} at every step; every beta in (0, 1)."""
    sch = build()
    ab, betas = sch.alphas_cumprod.double(), sch.betas.double()
    assert ((ab > 0) & (ab < 1)).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ((betas > 0) & (betas < 1)).all()


def test_alpha_bar_at_last_step_is_near_zero():
    """DDPM's linear T=1000 ends at alpha_bar = 4.04e-5; scaled linear stays ~1e-5 for T=100/200; cosine < 1e-4."""
    last = lambda sch: sch.alphas_cumprod[-1].item()  # noqa: E731
    assert 4.00e-5 < last(linear_schedule(1000)) < 4.08e-5
    # scaled betas keep sum beta = T (b0 + b1) / 2 = 10.05 for every T, so alpha_bar ~ exp(-10.05) = 4.3e-5 to first
    # order; the higher-order terms of -log(1 - beta) grow with 1000/T and lower it (2.0e-5 at T = 100)
    for num_steps in (100, 200):
        assert 1.5e-5 < last(linear_schedule(num_steps)) < 4.1e-5
    # without scaling, T = 100 keeps alpha_bar = exp(-1.005 - ...) ~ 0.36 of the signal: why scaling is the default
    assert 0.35 < last(linear_schedule(100, scale_with_num_steps=False)) < 0.37
    for num_steps in (10, 100, 1000):
        assert 0 < last(cosine_schedule(num_steps)) < 1e-4


def test_make_schedule_by_name_and_kwargs():
    """make_schedule builds the same buffers as the constructors and forwards keyword arguments."""
    assert_close(make_schedule("linear", 100).betas, linear_schedule(100).betas, rtol=0, atol=0)
    assert_close(make_schedule("Cosine", 50, s=0.02).betas, cosine_schedule(50, s=0.02).betas, rtol=0, atol=0)
    assert_close(
        make_schedule("linear", 100, beta_start=1e-3, beta_end=0.05, scale_with_num_steps=False).betas,
        torch.linspace(1e-3, 0.05, 100, dtype=F64).float(),
        rtol=0,
        atol=0,
    )


def test_buffers_follow_module_moves_and_state_dict():
    """All derived quantities are buffers: in state_dict, converted by .double(), restored by load_state_dict."""
    sch = cosine_schedule(20)
    keys = set(sch.state_dict())
    expected = {
        "betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
        "posterior_mean_coef1", "posterior_mean_coef2",
    }
    assert expected <= keys
    assert all(v.dtype == torch.float32 and v.shape == (20,) for v in sch.state_dict().values())
    other = NoiseSchedule(torch.full((20,), 0.5))
    other.load_state_dict(sch.state_dict())
    assert_close(other.alphas_cumprod, sch.alphas_cumprod, rtol=0, atol=0)
    assert sch.double().betas.dtype == F64
    assert list(sch.parameters()) == []


# ---------------------------------------------------------------------------------------------- forward process
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_q_sample_moments_match_theory(name):
    """200k draws of x_t | x_0 = c have mean sqrt(ab) c and variance 1 - ab within 5 standard errors."""
    sch, n, c = make_schedule(name, 100), 200_000, 1.7
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), c, dtype=F64)
    for t in (0, 30, 70, 99):
        ab = sch.alphas_cumprod[t].double().item()
        xt = sch.q_sample(x0, torch.full((n,), t), generator=gen)
        assert xt.shape == x0.shape and xt.dtype == F64
        var = 1 - ab
        # standard errors: of the mean sqrt(var / n), of the sample variance var sqrt(2 / n)
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * c, abs=5 * math.sqrt(var / n))
        assert xt.var().item() == pytest.approx(var, abs=5 * var * math.sqrt(2 / n))


def test_q_sample_with_given_noise_is_the_formula_and_broadcasts_t():
    """Each sample b uses its own t[b] over all its remaining dims: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps."""
    sch = linear_schedule(100)
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    t = torch.tensor([0, 17, 63, 99])
    xt = sch.q_sample(x0, t, noise=eps)
    for b, tb in enumerate(t.tolist()):
        ab = sch.alphas_cumprod[tb]
        assert_close(xt[b], ab.sqrt() * x0[b] + (1 - ab).sqrt() * eps[b], rtol=1e-6, atol=1e-6)
    mean, var, log_var = sch.q_mean_variance(x0, t)
    assert var.shape == (4, 1, 1, 1)
    assert_close(mean, sch.sqrt_alphas_cumprod[t].view(4, 1, 1, 1) * x0, rtol=0, atol=0)
    assert_close(var.flatten(), 1 - sch.alphas_cumprod[t], rtol=0, atol=0)
    assert_close(log_var, var.log(), rtol=0, atol=0)
    # an int t means the same step for every sample, a seeded generator reproduces the draw
    assert_close(sch.q_sample(x0, 17, noise=eps)[1], xt[1], rtol=0, atol=0)
    draw = lambda: sch.q_sample(x0, t, generator=torch.Generator().manual_seed(5))  # noqa: E731
    assert_close(draw(), draw(), rtol=0, atol=0)


def test_sample_timesteps_uniform_over_all_steps():
    """100k indices: every step 0..T-1 hit with frequency 1/T within 5 binomial standard errors."""
    sch, n = cosine_schedule(10), 100_000
    t = sch.sample_timesteps(n, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (n,)
    counts = torch.bincount(t, minlength=10).double()
    assert counts.numel() == 10  # nothing at index >= T
    p = 0.1
    assert (counts - n * p).abs().max().item() < 5 * math.sqrt(n * p * (1 - p))


# ---------------------------------------------------------------------------------------------- posterior
def _posterior_by_bayes(x0: float, xt: float, ab_prev: float, alpha: float) -> tuple[float, float]:
    """q(x_{t-1}|x_t,x_0) from prior N(sqrt(ab_prev) x0, 1 - ab_prev), likelihood N(x_t; sqrt(alpha) x_{t-1}, beta)."""
    beta = 1 - alpha
    precision = 1 / (1 - ab_prev) + alpha / beta
    mean = (math.sqrt(ab_prev) * x0 / (1 - ab_prev) + math.sqrt(alpha) * xt / beta) / precision
    return mean, 1 / precision


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_q_posterior_matches_gaussian_conditioning(name):
    """q(x_{t-1}|x_t,x_0) equals scalar Bayes on q(x_t|x_{t-1}) q(x_{t-1}|x_0), to float32 rounding."""
    sch = make_schedule(name, 50)
    betas = sch.betas.double().tolist()  # the reference uses only the betas, recomputing alpha_bar by hand
    t = torch.arange(1, 50)
    x0 = torch.linspace(-2, 2, 49, dtype=F64)
    xt = torch.linspace(3, -1, 49, dtype=F64)
    mean, var, log_var = sch.q_posterior_mean_variance(x0, xt, t)
    for i, tb in enumerate(t.tolist()):
        ab_prev = math.prod(1 - b for b in betas[:tb])
        m, v = _posterior_by_bayes(x0[i].item(), xt[i].item(), ab_prev, 1 - betas[tb])
        assert mean[i].item() == pytest.approx(m, rel=1e-5, abs=1e-6)
        assert var[i].item() == pytest.approx(v, rel=1e-5)
        assert log_var[i].item() == pytest.approx(math.log(v), abs=1e-5)


def test_q_posterior_at_first_step_is_the_data():
    """At t = 0 the posterior is the point mass at x_0: beta_tilde_0 = 0, log-variance clipped to log beta_tilde_1."""
    sch = linear_schedule(100)
    assert sch.posterior_variance[0].item() == 0.0
    log_beta_tilde_1 = math.log(sch.posterior_variance[1].item())
    assert sch.posterior_log_variance_clipped[0].item() == pytest.approx(log_beta_tilde_1, abs=1e-6)
    assert_close(sch.posterior_log_variance_clipped[1:], sch.posterior_variance[1:].log(), rtol=0, atol=1e-6)
    x0, xt = torch.randn(6, 2), torch.randn(6, 2)
    mean, var, _ = sch.q_posterior_mean_variance(x0, xt, 0)
    assert_close(mean, x0, rtol=0, atol=1e-7)
    assert (var == 0).all()
    # a one-step schedule has no beta_tilde_1: the clipped log-variance falls back to log beta_0 (finite)
    one = linear_schedule(1, beta_start=0.5, beta_end=0.5, scale_with_num_steps=False)
    assert one.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(0.5), rel=1e-6)


# ---------------------------------------------------------------------------------------------- reverse process
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_predict_x0_from_eps_inverts_q_sample(name):
    """With the true noise x_0 comes back to 1e-5 where alpha_bar >= 1e-2, elsewhere to float32 rounding / sqrt(ab)."""
    sch = make_schedule(name, 200)
    gen = torch.Generator().manual_seed(2)
    t = torch.arange(200)
    x0, eps = torch.randn(200, 16, generator=gen), torch.randn(200, 16, generator=gen)
    err = (sch.predict_x0_from_eps(sch.q_sample(x0, t, noise=eps), t, eps) - x0).abs().amax(dim=1)
    ab = sch.alphas_cumprod.double()
    assert err[ab >= 1e-2].max().item() < 1e-5
    # x_t carries sqrt(ab) x0 under O(1) float32 rounding (2^-24 relative), which division by sqrt(ab) magnifies
    bound = 40 * 2.0**-24 / ab.sqrt()
    assert (err.double() < bound).all()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("variance", VARIANCES)
def test_p_mean_variance_with_true_eps_is_the_posterior(name, variance):
    """Feeding the true noise makes x0_hat = x_0, so the reverse mean is q(x_{t-1}|x_t,x_0)'s (Ho et al. eq. 10-11)."""
    sch = make_schedule(name, 100)
    gen = torch.Generator().manual_seed(3)
    t = torch.arange(100)
    x0, eps = torch.randn(100, 3, 2, generator=gen), torch.randn(100, 3, 2, generator=gen)
    xt = sch.q_sample(x0, t, noise=eps)
    mean, var, log_var, pred_x0 = sch.p_mean_variance(eps, xt, t, variance=variance)
    post_mean, post_var, post_log_var = sch.q_posterior_mean_variance(x0, xt, t)
    # the x0 error (see above) enters the mean times coef1 = beta / ((1 - ab) sqrt(alpha) sqrt(ab)) * sqrt(ab) <= 32
    assert_close(mean, post_mean, rtol=0, atol=2e-5)
    if variance == "beta":
        assert_close(var.flatten(), sch.betas, rtol=0, atol=0)
        assert_close(log_var.flatten(), sch.betas.log(), rtol=0, atol=0)
    else:
        assert_close(var, post_var, rtol=0, atol=0)
        assert_close(log_var, post_log_var, rtol=0, atol=0)
    assert pred_x0.shape == x0.shape


def test_p_mean_variance_clips_x0():
    """clip_x0 clamps the x_0 prediction before the posterior mean: a prediction of 10 becomes 1."""
    sch = cosine_schedule(50)
    xt, t = torch.zeros(2, 3), torch.tensor([10, 40])
    # x_t = 0 and eps = -sqrt(ab) * 10 / sqrt(1 - ab) make the x_0 prediction exactly 10
    ratio = sch.sqrt_alphas_cumprod[t] / sch.sqrt_one_minus_alphas_cumprod[t]
    eps = -10 * ratio.view(2, 1) * torch.ones(2, 3)
    _, _, _, raw = sch.p_mean_variance(eps, xt, t)
    assert_close(raw, torch.full((2, 3), 10.0), rtol=1e-5, atol=0)
    mean, _, _, clipped = sch.p_mean_variance(eps, xt, t, clip_x0=(-1.0, 1.0))
    assert_close(clipped, torch.ones(2, 3), rtol=0, atol=0)
    assert_close(mean, sch.q_posterior_mean_variance(torch.ones(2, 3), xt, t).mean, rtol=0, atol=0)


def test_p_sample_step_adds_no_noise_at_step_zero():
    """x_{t-1} = mean + sigma_t z, except at t == 0 where it is the mean: checked per sample in a mixed batch."""
    sch = linear_schedule(100)
    gen = torch.Generator().manual_seed(4)
    xt, eps, z = (torch.randn(3, 4, generator=gen) for _ in range(3))
    t = torch.tensor([0, 1, 50])
    for variance in VARIANCES:
        mean, var, _, _ = sch.p_mean_variance(eps, xt, t, variance=variance)
        out = sch.p_sample_step(eps, xt, t, variance=variance, noise=z)
        assert_close(out[0], mean[0], rtol=0, atol=0)
        assert_close(out[1:], mean[1:] + var[1:].sqrt() * z[1:], rtol=0, atol=0)
    step = lambda: sch.p_sample_step(eps, xt, t, generator=torch.Generator().manual_seed(9))  # noqa: E731
    assert_close(step(), step(), rtol=0, atol=0)


def _sample_chain(sch: NoiseSchedule, eps_fn, n: int, variance: str, seed: int, x_start: Tensor | None = None):
    """Ancestral sampling from x_{T-1} ~ N(0, 1) (or x_start) down to the data; returns the states after each step."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=gen) if x_start is None else x_start
    states = {}
    for t in reversed(range(sch.num_steps)):
        x = sch.p_sample_step(eps_fn(x, t), x, t, generator=gen, variance=variance)
        states[t - 1] = x  # the state at index t-1; index -1 is the data
    return x, states


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_sampler_recovers_point_mass(name):
    """Data = point mass at c: with the optimal eps*(x_t) = (x_t - sqrt(ab) c) / sqrt(1 - ab) the chain must end at c.

    eps* makes x0_hat = c at every step, and at t = 0 coef1 = 1, coef2 = 0 with no noise, so the output is c up to
    float32 rounding whatever the variance. The intermediate marginals test every other step: with beta_tilde and
    x_{T-1} ~ q(x_{T-1} | c), each reverse step is q(x_{t-1} | x_t, c) exactly, so the state at index t has mean
    sqrt(ab_t) c and variance 1 - ab_t (checked to 5 standard errors).
    """
    sch, c, n = make_schedule(name, 100), 1.5, 20_000
    ab = sch.alphas_cumprod

    def eps_star(x: Tensor, t: int) -> Tensor:
        return (x - ab[t].sqrt() * c) / (1 - ab[t]).sqrt()

    for variance in VARIANCES:
        out, _ = _sample_chain(sch, eps_star, n, variance, seed=10)
        assert abs(out.mean().item() - c) < 1e-5
        assert out.std().item() < 1e-5

    start = sch.q_sample(torch.full((n, 1), c), 99, generator=torch.Generator().manual_seed(11))
    _, states = _sample_chain(sch, eps_star, n, "beta_tilde", seed=12, x_start=start)
    for t in (90, 50, 20, 5, 0):
        var = 1 - ab[t].double().item()
        assert states[t].mean().item() == pytest.approx(math.sqrt(ab[t].item()) * c, abs=5 * math.sqrt(var / n))
        assert states[t].var().item() == pytest.approx(var, abs=5 * var * math.sqrt(2 / n))


def _chain_moments_by_hand(sch: NoiseSchedule, mu: float, s: float, variance: str) -> tuple[float, float]:
    """Exact mean and variance of the sampler's output for N(mu, s^2) data and the optimal predictor, in float64.

    Every step is affine in x_t: x0_hat = E[x_0 | x_t] = mu + sqrt(ab) s^2 (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)
    (Gaussian conditioning), x_{t-1} = coef1 x0_hat + coef2 x_t + sigma_t z, so the moments propagate in closed form.
    """
    ab = sch.alphas_cumprod.double().tolist()
    c1, c2 = sch.posterior_mean_coef1.double().tolist(), sch.posterior_mean_coef2.double().tolist()
    sig2 = (sch.betas if variance == "beta" else sch.posterior_variance).double().tolist()
    m, v = 0.0, 1.0
    for t in reversed(range(sch.num_steps)):
        k = math.sqrt(ab[t]) * s * s / (ab[t] * s * s + 1 - ab[t])
        a, b = c1[t] * k + c2[t], c1[t] * (mu - k * math.sqrt(ab[t]) * mu)
        m, v = a * m + b, a * a * v + (sig2[t] if t > 0 else 0.0)
    return m, v


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_sampler_recovers_gaussian_data(name):
    """Data N(mu, s^2), optimal eps*(x_t) = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab): T = 200, 50k samples.

    Two references. (1) The exact output moments of this affine-Gaussian chain (recursion above): samples must match
    them to 5 standard errors, a check of every coefficient. (2) The data itself: the chain's own bias is O(1/T); at
    T = 200 it is < 0.01% in the mean and -3.5%..+0.8% in the std (beta_tilde under-, beta over-disperses: Ho et al.
    sec. 3.2's lower/upper bounds), so with "beta" the std must be within 2.5% of s and the mean within 5 s.e. + 1e-3.
    """
    sch, mu, s, n = make_schedule(name, 200), 2.0, 0.5, 50_000
    ab = sch.alphas_cumprod

    def eps_star(x: Tensor, t: int) -> Tensor:
        return (1 - ab[t]).sqrt() * (x - ab[t].sqrt() * mu) / (ab[t] * s * s + 1 - ab[t])

    for seed, variance in enumerate(VARIANCES):
        out, _ = _sample_chain(sch, eps_star, n, variance, seed=20 + seed)
        m, v = _chain_moments_by_hand(sch, mu, s, variance)
        assert out.mean().item() == pytest.approx(m, abs=5 * math.sqrt(v / n))
        assert out.var().item() == pytest.approx(v, abs=5 * v * math.sqrt(2 / n))
        assert abs(m - mu) < 1e-3
        if variance == "beta":
            assert s <= math.sqrt(v) < 1.01 * s
            assert out.mean().item() == pytest.approx(mu, abs=5 * s / math.sqrt(n) + 1e-3)
            assert out.std().item() == pytest.approx(s, rel=0.025)
        else:
            assert 0.95 * s < math.sqrt(v) <= s


def test_one_step_schedule_samples_the_data():
    """T = 1: a single reverse step at t = 0 with the true noise returns x_0 without noise."""
    sch = cosine_schedule(1)
    x0, eps = torch.randn(5, 2), torch.randn(5, 2)
    xt = sch.q_sample(x0, 0, noise=eps)
    assert_close(sch.p_sample_step(eps, xt, 0, generator=torch.Generator().manual_seed(0)), x0, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_schedule_name_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown noise schedule 'quadratic'.*\['cosine', 'linear'\]"):
        make_schedule("quadratic", 10)


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, True])
def test_bad_num_steps(num_steps):
    for build in (linear_schedule, cosine_schedule):
        with pytest.raises(ValueError, match="num_steps must be a positive int"):
            build(num_steps)


def test_bad_beta_bounds():
    with pytest.raises(ValueError, match=r"use more steps or scale_with_num_steps=False"):
        linear_schedule(10)  # 0.02 * 1000 / 10 = 2 >= 1
    with pytest.raises(ValueError, match="0 < beta_start <= beta_end < 1"):
        linear_schedule(100, beta_start=0.0)
    with pytest.raises(ValueError, match="0 < beta_start <= beta_end < 1"):
        linear_schedule(1000, beta_start=0.02, beta_end=1e-4)
    with pytest.raises(ValueError, match=r"max_beta must lie in \(0, 1\)"):
        cosine_schedule(100, max_beta=1.0)
    with pytest.raises(ValueError, match="offset s must be >= 0"):
        cosine_schedule(100, s=-0.1)
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        NoiseSchedule([0.1, 1.0])
    with pytest.raises(ValueError, match="1-D sequence"):
        NoiseSchedule(torch.full((2, 2), 0.1))


def test_bad_timesteps():
    sch, x = linear_schedule(100), torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"step indices must lie in 0..99 .* got values in \[0, 100\]"):
        sch.q_sample(x, torch.tensor([0, 5, 100]))
    with pytest.raises(ValueError, match=r"must lie in 0..99"):
        sch.p_mean_variance(x, x, -1)
    with pytest.raises(TypeError, match="integer step indices"):
        sch.q_sample(x, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        sch.q_sample(x, torch.tensor([1, 2]))


def test_shape_mismatches_and_bad_options():
    sch, x = cosine_schedule(10), torch.zeros(3, 2)
    with pytest.raises(ValueError, match="noise and x0 must have the same shape"):
        sch.q_sample(x, 1, noise=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="eps_pred and x_t must have the same shape"):
        sch.p_sample_step(torch.zeros(3), x, 1)
    with pytest.raises(ValueError, match="x0 and x_t must have the same shape"):
        sch.q_posterior_mean_variance(torch.zeros(2, 2), x, 1)
    with pytest.raises(ValueError, match=r"Unknown variance 'learned'.*beta_tilde"):
        sch.p_mean_variance(x, x, 1, variance="learned")
    with pytest.raises(ValueError, match=r"clip_x0 must be \(low, high\) with low < high"):
        sch.p_mean_variance(x, x, 1, clip_x0=(1.0, -1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_schedule_moves_to_cuda():
    """After .to('cuda') the buffers and every output live on the GPU; CPU step indices are accepted."""
    sch = cosine_schedule(50).to("cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x0 = torch.randn(4, 3, device="cuda", generator=gen)
    t = sch.sample_timesteps(4, generator=gen)
    assert t.device.type == "cuda"
    xt = sch.q_sample(x0, t.cpu(), generator=gen)
    out = sch.p_sample_step(torch.zeros_like(xt), xt, t, generator=gen)
    assert xt.device.type == out.device.type == "cuda"
    assert_close(sch.q_sample(x0, t, noise=x0).cpu(), cosine_schedule(50).q_sample(x0.cpu(), t.cpu(), noise=x0.cpu()))
