"""Tests of lightning_gen/diffusion/samplers.py: each sampler's step by hand, the chains against the exact output
moments of the optimal denoiser on Gaussian data, DDIM (eta 1 = ancestral, eta 0 deterministic), and DDPM's wiring."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

import lightning_gen
from lightning_gen import DDPM
from lightning_gen.diffusion import (
    AncestralSampler,
    AnnealedLangevinSampler,
    DDIMSampler,
    DiffusionSampler,
    NoiseSchedule,
    RespacedSampler,
    cosine_schedule,
    linear_schedule,
    make_sampler,
    make_schedule,
    strided_timesteps,
)
from lightning_gen.nets import MLPDenoiser

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class GaussianOracle(nn.Module):
    """The optimal noise predictor for data N(mu, s^2 I) under a schedule with alpha_bar ``ab``:
    eps*(x_t, t) = sqrt(1 - ab_t) (x_t - sqrt(ab_t) mu) / (ab_t s^2 + 1 - ab_t); s = 0 is a point mass at mu."""

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float, data_shape: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.register_buffer("ab", schedule.alphas_cumprod.double().clone())
        self.mu, self.s, self.data_shape = mu, s, data_shape

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.ab[t].reshape(-1, *([1] * (x.dim() - 1)))
        eps = (1 - ab).sqrt() * (x.double() - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)
        return eps.to(x.dtype)


def _exact_moments(ab_all: Tensor, kept: list[int], mu: float, s: float, kind: str, arg) -> tuple[float, float]:
    """Exact output mean and variance of a chain run with GaussianOracle, in float64, written from the papers'
    equations (not from the samplers' code). Every step is affine in x:
    x0_hat = mu + k (x - sqrt(ab) mu), eps_hat = (x - sqrt(ab) x0_hat) / sqrt(1 - ab), and
    x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - s_m) eps_hat + sqrt(s_n) z.
    DDIM (Song et al. eq. 12): s_m = s_n = eta^2 beta_tilde. Ancestral (Ho et al. eq. 11): its mean mu_tilde is the
    DDIM mean with s_m = beta_tilde (algebra: sqrt(1 - ab_prev - beta_tilde) / sqrt(1 - ab) = coef2 and so on), and
    s_n = beta or beta_tilde, 0 at the last step. ``kind`` is "ancestral" (``arg`` the variance) or "ddim" (eta)."""
    ab = [float(ab_all[k]) for k in kept]
    m, v = 0.0, 1.0
    for i in reversed(range(len(ab))):
        a, ap = ab[i], (ab[i - 1] if i > 0 else 1.0)
        beta = 1 - a / ap
        beta_tilde = (1 - ap) / (1 - a) * beta
        if kind == "ddim":
            s_m = s_n = arg * arg * beta_tilde
        else:
            s_m, s_n = beta_tilde, ((beta if arg == "beta" else beta_tilde) if i > 0 else 0.0)
        k = math.sqrt(a) * s * s / (a * s * s + 1 - a)
        a0, b0 = k, mu - k * math.sqrt(a) * mu  # x0_hat = a0 x + b0
        ae, be = (1 - math.sqrt(a) * a0) / math.sqrt(1 - a), -math.sqrt(a) * b0 / math.sqrt(1 - a)
        c = math.sqrt(max(1 - ap - s_m, 0.0))
        A, B = math.sqrt(ap) * a0 + c * ae, math.sqrt(ap) * b0 + c * be
        m, v = A * m + B, A * A * v + s_n
    return m, v


def _ks(a: Tensor, b: Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    values = torch.cat([a, b])
    order = values.argsort()
    steps = torch.cat([torch.full_like(a, 1 / len(a)), torch.full_like(b, -1 / len(b))])[order]
    return float(steps.cumsum(0).abs().max())


# ---------------------------------------------------------------------------------------------- one step by hand
def _by_hand(ab: list[float], t: int, t_prev: int) -> tuple[float, float]:
    """alpha_bar at kept step t and at the next kept step (1 after the last)."""
    return ab[t], (ab[t_prev] if t_prev >= 0 else 1.0)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("num_steps", [None, 5])
def test_ancestral_and_respaced_step_by_hand(variance, clip, num_steps):
    """x_prev = beta sqrt(ab_prev) / (1 - ab) x0_hat + sqrt(alpha) (1 - ab_prev) / (1 - ab) x + sigma z (Ho et al.
    eq. 7, 11) with alpha = ab / ab_prev over the kept steps [0, 12, 24, 37, 49] (Nichol & Dhariwal sec. 4)."""
    sch = linear_schedule(50)
    sampler = AncestralSampler(variance, clip) if num_steps is None else RespacedSampler(num_steps, variance, clip)
    timesteps = sampler.set_timesteps(schedule=sch).tolist()
    kept = list(range(49, -1, -1)) if num_steps is None else [49, 37, 24, 12, 0]
    assert timesteps == kept
    # the full chain's coefficients come from the float64 betas (stored as float32), the respaced ones from the
    # stored float32 alpha_bar at the kept steps: the hand computation starts from the same numbers (1 - alpha_bar
    # near t = 0 is 2e-3, where float32 rounding of alpha_bar would be a relative 1.5e-5)
    exact = torch.cumprod(1 - torch.linspace(1e-4 * 20, 0.02 * 20, 50, dtype=F64), 0)
    ab = (exact if num_steps is None else sch.alphas_cumprod.double()).tolist()
    g = _gen(0)
    x, eps, z = (torch.randn(4, 3, generator=g, dtype=F64) * 2 for _ in range(3))
    for i in (0, 1, len(kept) - 2, len(kept) - 1):
        t = kept[i]
        a, ap = _by_hand(ab, t, kept[i + 1] if i + 1 < len(kept) else -1)
        alpha, beta = a / ap, 1 - a / ap
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = beta * math.sqrt(ap) / (1 - a) * x0 + math.sqrt(alpha) * (1 - ap) / (1 - a) * x
        var = beta if variance == "beta" else (1 - ap) / (1 - a) * beta
        expected = mean + (math.sqrt(var) * z if t > 0 else 0.0)
        out = sampler.step(eps, t, x, noise=z)
        # float64 maths on float32 schedule coefficients (relative rounding 6e-8)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # the last step adds no noise and draws none: the generator is untouched
    state = g.get_state()
    last = sampler.step(eps, 0, x, generator=g)
    assert torch.equal(g.get_state(), state)
    torch.testing.assert_close(last, sampler.step(eps, 0, x, noise=z), rtol=0, atol=0)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_step_by_hand(eta, clip):
    """Song et al. 2021 eq. 12 and 16 over the kept steps [49, 37, 24, 12, 0]: x_prev = sqrt(ab_prev) x0_hat +
    sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z, sigma = eta sqrt((1 - ab_prev) / (1 - ab) (1 - ab / ab_prev));
    with clipping eps_hat is recomputed from the clipped x0_hat; the last step returns x0_hat. In float64 the only
    float32 numbers are the schedule's alpha_bar, which the hand computation uses too: agreement to 1e-9."""
    sch = cosine_schedule(50)
    sampler = DDIMSampler(5, eta=eta, clip_denoised=clip)
    kept = sampler.set_timesteps(schedule=sch).tolist()
    assert kept == [49, 37, 24, 12, 0]
    ab = sch.alphas_cumprod.double().tolist()
    g = _gen(1)
    x, eps, z = (torch.randn(3, 2, 2, generator=g, dtype=F64) * 2 for _ in range(3))
    for i, t in enumerate(kept):
        a, ap = _by_hand(ab, t, kept[i + 1] if i + 1 < len(kept) else -1)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        e = eps
        if clip:
            x0 = x0.clamp(-1, 1)
            e = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        expected = math.sqrt(ap) * x0 + math.sqrt(1 - ap - sigma**2) * e + sigma * z
        out = sampler.step(eps, t, x, noise=z)
        assert out.dtype == F64
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
        if t == 0:
            torch.testing.assert_close(out, x0, rtol=1e-9, atol=1e-9)
    state = g.get_state()
    sampler.step(eps, 49, x, generator=g)
    assert torch.equal(g.get_state(), state) == (eta == 0.0)  # noise is drawn only when sigma > 0


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_with_eta_one_is_the_respaced_beta_tilde_step(clip):
    """With the same x, eps and z at every kept step, DDIM(eta=1) equals RespacedSampler(beta_tilde) to float32
    rounding (the algebra in _exact_moments' docstring), also with clipping (eps recomputed from the clipped x0)."""
    sch = linear_schedule(100)
    ddim, respaced = DDIMSampler(20, eta=1.0, clip_denoised=clip), RespacedSampler(20, "beta_tilde", clip)
    steps = ddim.set_timesteps(schedule=sch)
    assert torch.equal(steps, respaced.set_timesteps(schedule=sch))
    g = _gen(2)
    for t in steps.tolist():
        x, eps, z = (torch.randn(64, generator=g) * 1.5 for _ in range(3))
        torch.testing.assert_close(ddim.step(eps, t, x, noise=z), respaced.step(eps, t, x, noise=z),
                                   rtol=1e-5, atol=5e-5)


# ---------------------------------------------------------------------------------------------- chains vs theory
CASES: dict[str, tuple[Callable[[], DiffusionSampler], str, str, object, tuple[float, float]]] = {
    # name: (sampler, schedule, kind, variance or eta, bounds on the exact output std / s)
    "ancestral-beta": (lambda: AncestralSampler("beta"), "linear", "ancestral", "beta", (1.0, 1.04)),
    "ancestral-beta_tilde": (lambda: AncestralSampler("beta_tilde"), "cosine", "ancestral", "beta_tilde", (0.93, 1.0)),
    "respaced20-beta": (lambda: RespacedSampler(20, "beta"), "cosine", "ancestral", "beta", (1.0, 1.1)),
    "respaced20-beta_tilde": (lambda: RespacedSampler(20, "beta_tilde"), "linear", "ancestral", "beta_tilde",
                              (0.7, 0.8)),
    "ddim-all-eta0": (lambda: DDIMSampler(None, 0.0), "cosine", "ddim", 0.0, (0.97, 1.0)),
    "ddim20-eta0": (lambda: DDIMSampler(20, 0.0), "linear", "ddim", 0.0, (0.8, 0.9)),
    "ddim20-eta0.5": (lambda: DDIMSampler(20, 0.5), "cosine", "ddim", 0.5, (0.85, 0.95)),
    "ddim-all-eta1": (lambda: DDIMSampler(None, 1.0), "linear", "ddim", 1.0, (0.9, 0.95)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_sampler_matches_the_exact_gaussian_chain(case):
    """Data N(3, 0.8^2) per coordinate, data_scale 2, T = 100, through DDPM(sampler=...): the samples' mean and
    variance match the exact output moments of the affine-Gaussian chain to 5 standard errors; those moments are
    within 0.01 s of the data's mean, with a std whose O(1/steps) bias lies in the stated bounds (beta over-,
    beta_tilde and DDIM under-disperse; DDIM eta 0 lies between the two ancestral variances)."""
    build, schedule, kind, arg, (lo, hi) = CASES[case]
    mu, s, scale, n, T = 3.0, 0.8, 2.0, 20_000, 100
    oracle = GaussianOracle(make_schedule(schedule, T), mu / scale, s / scale, (2,))
    sampler = build()
    model = DDPM(oracle, schedule=schedule, num_timesteps=T, data_scale=scale, sampler=sampler)
    assert type(model.sampler) is type(sampler) and model.sampler.num_steps == sampler.num_steps
    out = model.sample(n // 2, generator=_gen(3)).double().reshape(-1)
    kept = strided_timesteps(T, sampler.num_steps).tolist()
    m, v = _exact_moments(oracle.ab, kept, mu / scale, s / scale, kind, arg)
    m, v = m * scale, v * scale**2
    assert out.mean().item() == pytest.approx(m, abs=5 * math.sqrt(v / n))
    assert out.var().item() == pytest.approx(v, abs=5 * v * math.sqrt(2 / n))
    assert m == pytest.approx(mu, abs=0.01 * s)
    assert lo * s <= math.sqrt(v) <= hi * s


def test_ddim_with_eta_one_and_all_steps_matches_ancestral_sampling_in_distribution():
    """1-D data N(1.5, 0.4^2), T = 100, 20k samples each from independent seeds: DDIM(eta=1) and the ancestral chain
    with beta_tilde agree in mean and variance (5 standard errors of the difference) and in distribution (KS statistic
    below 1.95 sqrt(2/n) = 0.0195, the 0.1% critical value); a 10-step respaced chain with beta, a distribution with
    a 40% wider std (KS distance 0.08), is told apart (KS > 0.05), so the check has power."""
    sch, n = linear_schedule(100), 20_000
    oracle = GaussianOracle(sch, 1.5, 0.4)
    draw = lambda sampler, seed: sampler.sample(oracle, (n, 1), sch, generator=_gen(seed)).reshape(-1).double()  # noqa: E731
    ddim = draw(DDIMSampler(None, eta=1.0), 10)
    ancestral = draw(AncestralSampler("beta_tilde"), 11)
    v = ancestral.var().item()
    assert ddim.mean().item() == pytest.approx(ancestral.mean().item(), abs=5 * math.sqrt(2 * v / n))
    assert ddim.var().item() == pytest.approx(v, abs=5 * v * math.sqrt(4 / n))
    assert _ks(ddim, ancestral) < 1.95 * math.sqrt(2 / n)
    assert _ks(ddim, draw(RespacedSampler(10, "beta"), 12)) > 0.05


def test_ddim_with_eta_zero_is_deterministic_given_x_T():
    """eta = 0 draws nothing after x_T: the same x_T gives identical samples whatever generator is passed (and the
    generators are left untouched); another x_T gives other samples; DDPM.sample draws x_T from its generator first,
    so its samples are the sampler's from that x_T. eta = 0.5 does depend on the generator."""
    torch.manual_seed(0)
    net = MLPDenoiser(2, (16,), 8)
    nn.init.normal_(net.out.weight)
    model = DDPM(net, num_timesteps=40, sampler=DDIMSampler(10, eta=0.0)).eval()
    x_T = torch.randn(6, 2, generator=_gen(0))
    g1, g2 = _gen(1), _gen(2)
    s1, s2 = g1.get_state(), g2.get_state()
    a = model.sampler.sample(net, (6, 2), model.noise_schedule, generator=g1, x_T=x_T)
    b = model.sampler.sample(net, (6, 2), model.noise_schedule, generator=g2, x_T=x_T)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), s1) and torch.equal(g2.get_state(), s2)
    assert not torch.allclose(a, model.sampler.sample(net, (6, 2), model.noise_schedule, x_T=x_T + 0.5))
    torch.testing.assert_close(model.sample(6, generator=_gen(0)), a, rtol=0, atol=0)
    noisy = DDIMSampler(10, eta=0.5)
    c = noisy.sample(net, (6, 2), model.noise_schedule, generator=_gen(1), x_T=x_T)
    assert not torch.allclose(c, noisy.sample(net, (6, 2), model.noise_schedule, generator=_gen(2), x_T=x_T))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_sampler_ends_at_a_point_mass_and_clips(case):
    """Images all equal to c: every x0 prediction is c, so every sampler's last step returns c; with c outside
    [-1, 1] and clip_denoised (the model's, inherited) the samples lie at the bound."""
    T = 40
    for c, clip, expected in ((0.5, True, 0.5), (-0.3, False, -0.3), (1.7, True, 1.0)):
        model = DDPM(GaussianOracle(make_schedule("linear", T), c, 0.0, (1, 3, 3)), num_timesteps=T,
                     clip_denoised=clip)
        sampler = CASES[case][0]()
        if sampler.num_steps is not None:
            sampler = type(sampler)(**{**sampler.init_arguments(), "num_steps": 7})
        out = model.sample(5, generator=_gen(4), sampler=sampler)
        assert out.shape == (5, 1, 3, 3)
        torch.testing.assert_close(out, torch.full_like(out, expected), rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------- DDPM wiring
def _loop_before_samplers(model: DDPM, n: int, generator: torch.Generator) -> Tensor:
    """DDPM.sample as written before samplers existed (the ancestral / respaced loop), as the reference."""
    net, (sch, net_steps) = model.sampling_denoiser, model.sampling_schedule()
    clip = (-1.0, 1.0) if model.clip_denoised else None
    x = torch.randn((n, *model.data_shape), generator=generator)
    for i in reversed(range(sch.num_steps)):
        t = torch.full((n,), i, dtype=torch.long)
        eps = net(x, net_steps[t])
        noise = torch.randn((n, *model.data_shape), generator=generator) if i > 0 else torch.zeros_like(x)
        x = sch.p_sample_step(eps, x, t, clip_x0=clip, variance=model.variance, noise=noise)
    x = x.clamp(-1, 1) if model.clip_denoised else x
    return x * model.data_scale


@pytest.mark.parametrize("sampling_steps, variance, clip", [(None, "beta", False), (7, "beta_tilde", True)])
def test_default_sampler_reproduces_the_loop_before_samplers(sampling_steps, variance, clip):
    """Existing configs and checkpoints (no `sampler`) draw exactly the samples they drew before, seed for seed."""
    torch.manual_seed(0)
    net = MLPDenoiser(2, (16,), 8)
    nn.init.normal_(net.out.weight)
    model = DDPM(net, num_timesteps=30, variance=variance, clip_denoised=clip, data_scale=1.5,
                 sampling_steps=sampling_steps).eval()
    expected_type = AncestralSampler if sampling_steps is None else RespacedSampler
    assert type(model.sampler) is expected_type
    assert (model.sampler.variance, model.sampler.clip_denoised) == (variance, clip)
    with torch.no_grad():
        expected = _loop_before_samplers(model, 9, _gen(5))
    torch.testing.assert_close(model.sample(9, generator=_gen(5)), expected, rtol=0, atol=0)


def test_samplers_by_name_take_the_models_settings_and_calls_can_override():
    net = MLPDenoiser(2, (8,), 4)
    model = DDPM(net, num_timesteps=30, variance="beta_tilde", clip_denoised=True, sampling_steps=10, sampler="ddim")
    assert isinstance(model.sampler, DDIMSampler)
    assert (model.sampler.num_steps, model.sampler.eta, model.sampler.clip_denoised) == (10, 0.0, True)
    respaced = DDPM(net, num_timesteps=30, variance="beta_tilde", sampling_steps=10, sampler="respaced").sampler
    assert type(respaced) is RespacedSampler and (respaced.num_steps, respaced.variance) == (10, "beta_tilde")
    # an object's own settings win; its None ones are filled on a copy, the object itself is left as given
    given = RespacedSampler(variance="beta")
    model = DDPM(net, num_timesteps=30, variance="beta_tilde", sampling_steps=6, sampler=given)
    assert (model.sampler.num_steps, model.sampler.variance, model.sampler.clip_denoised) == (6, "beta", False)
    assert given.num_steps is None and given.clip_denoised is None
    # one call with another sampler: the same samples as a model built with it, and the model's sampler stays
    other = DDPM(net, num_timesteps=30, variance="beta_tilde", sampler=DDIMSampler(5, eta=0.3))
    torch.testing.assert_close(model.sample(4, generator=_gen(6), sampler=DDIMSampler(5, eta=0.3)),
                               other.sample(4, generator=_gen(6)), rtol=0, atol=0)
    assert model.sampler.num_steps == 6 and isinstance(model.sampler, RespacedSampler)
    full = model.sample(4, generator=_gen(6), sampler="ancestral")  # every step, whatever sampling_steps says
    plain = DDPM(net, num_timesteps=30, variance="beta_tilde")
    torch.testing.assert_close(full, plain.sample(4, generator=_gen(6)), rtol=0, atol=0)
    assert repr(model.sampler) == "RespacedSampler(num_steps=6, variance='beta', clip_denoised=False)"


def test_bad_sampler_arguments_are_reported():
    net = MLPDenoiser(2, (8,), 4)
    with pytest.raises(ValueError, match=r"Unknown sampler 'euler'.*\['ancestral', 'ddim', 'respaced'\]"):
        DDPM(net, num_timesteps=30, sampler="euler")
    with pytest.raises(TypeError, match="sampler must be a name"):
        DDPM(net, num_timesteps=30, sampler=3)
    for langevin in ("langevin", AnnealedLangevinSampler()):  # a ScoreModel's sampler, refused at construction
        with pytest.raises(TypeError, match="annealed Langevin dynamics samples a lightning_gen.ScoreModel"):
            DDPM(net, num_timesteps=30, sampler=langevin)
    with pytest.raises(ValueError, match=r"sampling_steps=10 but the sampler .* takes 30 steps"):
        DDPM(net, num_timesteps=30, sampling_steps=10, sampler="ancestral")
    with pytest.raises(ValueError, match=r"sampling_steps=10 but the sampler .* takes 5 steps"):
        DDPM(net, num_timesteps=30, sampling_steps=10, sampler=DDIMSampler(5))
    with pytest.raises(ValueError, match=r"cannot take 50 steps on a schedule of 30"):
        DDPM(net, num_timesteps=30, sampler=DDIMSampler(50))
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
        DDIMSampler(10, eta=1.5)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        RespacedSampler(0)
    with pytest.raises(ValueError, match="Unknown variance 'fixed'"):
        AncestralSampler("fixed")
    with pytest.raises(ValueError, match="has no schedule"):
        DDIMSampler(5).set_timesteps()
    sampler = DDIMSampler(5)
    sampler.set_timesteps(schedule=linear_schedule(30))
    with pytest.raises(ValueError, match="13 is not one of this sampler's timesteps"):
        sampler.step(torch.zeros(2), 13, torch.zeros(2))
    assert isinstance(make_sampler("DDIM", num_steps=4, eta=0.5), DDIMSampler)


def test_schedule_takes_a_name_or_a_noise_schedule():
    """A NoiseSchedule object gives the same buffers as its name; num_timesteps defaults to its length and must match
    it when given; Python-built objects stay out of the hyperparameters."""
    net = MLPDenoiser(2, (8,), 4)
    by_object = DDPM(net, schedule=cosine_schedule(40), sampler=DDIMSampler(8))
    by_name = DDPM(net, schedule="cosine", num_timesteps=40)
    assert by_object.num_timesteps == 40
    for key, value in by_name.noise_schedule.state_dict().items():
        torch.testing.assert_close(by_object.noise_schedule.state_dict()[key], value, rtol=0, atol=0)
    assert "schedule" not in by_object.hparams and "sampler" not in by_object.hparams
    assert by_name.hparams.schedule == "cosine" and by_name.hparams.sampler is None
    assert DDPM(net).num_timesteps == 1000
    with pytest.raises(ValueError, match="num_timesteps=50 but the schedule has 40 steps"):
        DDPM(net, schedule=cosine_schedule(40), num_timesteps=50)
    with pytest.raises(TypeError, match="schedule must be a name"):
        DDPM(net, schedule=[0.1, 0.2])


def test_a_yaml_config_sets_the_sampler(tmp_path, monkeypatch):
    """`sampler: {class_path: lightning_gen.diffusion.DDIMSampler, init_args: {...}}` in a YAML on top of a DDPM
    recipe builds that sampler (filled with the recipe's clip_denoised), and a name works from the command line."""
    from lightning_gen.cli import GenerativeCLI

    monkeypatch.setattr(sys, "argv", ["lightning-gen"])  # the CLI reads only `args`
    extra = tmp_path / "ddim.yaml"
    extra.write_text("model:\n  init_args:\n    sampler:\n      class_path: lightning_gen.diffusion.DDIMSampler\n"
                     "      init_args: {num_steps: 50, eta: 0.0}\n")
    config = ROOT / "configs" / "ddpm" / "toy_ring.yaml"
    cli = GenerativeCLI(args=["--config", str(config), "--config", str(extra), "--trainer.logger=false"], run=False)
    assert isinstance(cli.model.sampler, DDIMSampler)
    assert (cli.model.sampler.num_steps, cli.model.sampler.eta, cli.model.sampler.clip_denoised) == (50, 0.0, False)
    cli = GenerativeCLI(args=["--config", str(config), "--model.init_args.sampler=respaced",
                              "--model.init_args.sampling_steps=20", "--trainer.logger=false"], run=False)
    assert isinstance(cli.model.sampler, RespacedSampler) and cli.model.sampler.num_steps == 20


@pytest.mark.slow
def test_a_fitted_model_with_a_yaml_sampler_reloads_it(tmp_path, monkeypatch):
    """`lightning-gen fit` with the DDIM sampler in YAML saves it in the checkpoint; load_model rebuilds it."""
    from lightning_gen.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning-gen"])
    extra = tmp_path / "ddim.yaml"
    extra.write_text("model:\n  init_args:\n    num_timesteps: 25\n    sampler:\n"
                     "      class_path: lightning_gen.diffusion.DDIMSampler\n"
                     "      init_args: {num_steps: 5, eta: 0.0}\n")
    main(["fit", f"--config={ROOT / 'configs' / 'ddpm' / 'toy_ring.yaml'}", f"--config={extra}",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2", "--trainer.logger=false",
          "--trainer.check_val_every_n_epoch=1", "--data.train_size=256", "--data.val_size=64",
          "--data.batch_size=64", "--model.denoiser.init_args.hidden_dims=[16, 16]"])
    model = lightning_gen.load_model(next(tmp_path.rglob("last.ckpt")))
    assert isinstance(model.sampler, DDIMSampler) and (model.sampler.num_steps, model.sampler.eta) == (5, 0.0)
    x_T = torch.randn(4, 2, generator=_gen(0))
    torch.testing.assert_close(model.sample(4, generator=_gen(0)),
                               model.sampler.sample(model.sampling_denoiser, (4, 2), model.noise_schedule, x_T=x_T),
                               rtol=0, atol=0)
