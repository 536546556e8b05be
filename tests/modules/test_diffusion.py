"""Tests of lightning_gen/modules/diffusion.py: the DDPM module's loss, sampler wiring, EMA, checkpoints, training."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import DDPM
from lightning_gen.data.toy import make_mixture
from lightning_gen.diffusion.schedules import NoiseSchedule, make_schedule
from lightning_gen.losses.diffusion import epsilon_loss
from lightning_gen.metrics.toy import ToyModeMetrics
from lightning_gen.nets import MLPDenoiser, UNet


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class GaussianOracle(nn.Module):
    """The optimal noise predictor for data N(mu, s^2 I) (in diffusion space) under a given training schedule:
    eps*(x_t, t) = sqrt(1 - ab_t) (x_t - sqrt(ab_t) mu) / (ab_t s^2 + 1 - ab_t); s = 0 is a point mass at mu."""

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("ab", schedule.alphas_cumprod.double().clone())
        self.mu, self.s, self.data_shape = mu, s, data_shape
        self.dummy = nn.Parameter(torch.zeros(()))  # something for an optimizer to hold

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.ab[t].reshape(-1, *([1] * (x.dim() - 1)))
        eps = (1 - ab).sqrt() * (x.double() - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)
        return eps.to(x.dtype) + 0 * self.dummy


def _chain_moments(sch: NoiseSchedule, ab_net: Tensor, mu: float, s: float, variance: str) -> tuple[float, float]:
    """Exact output mean and variance of the (possibly respaced) chain ``sch`` run with GaussianOracle, in float64:
    every step is affine in x_t (x0_hat = mu + k (x_t - sqrt(ab) mu)), so the moments propagate in closed form."""
    ab = sch.alphas_cumprod.double().tolist()
    c1, c2 = sch.posterior_mean_coef1.double().tolist(), sch.posterior_mean_coef2.double().tolist()
    sig2 = (sch.betas if variance == "beta" else sch.posterior_variance).double().tolist()
    m, v = 0.0, 1.0
    for t in reversed(range(sch.num_steps)):
        a_t = float(ab_net[t])
        assert a_t == pytest.approx(ab[t], rel=1e-4)  # respacing keeps alpha_bar at the kept steps
        k = math.sqrt(a_t) * s * s / (a_t * s * s + 1 - a_t)
        a, b = c1[t] * k + c2[t], c1[t] * (mu - k * math.sqrt(a_t) * mu)
        m, v = a * m + b, a * a * v + (sig2[t] if t > 0 else 0.0)
    return m, v


# -- loss ---------------------------------------------------------------------------------------------------------
def test_training_loss_is_epsilon_loss_on_q_sample_by_hand():
    torch.manual_seed(0)
    net = MLPDenoiser(2, (16,), 8)
    nn.init.normal_(net.out.weight)
    model = DDPM(net, schedule="cosine", num_timesteps=50, data_scale=2.0)
    x = torch.randn(64, 2) * 3
    ab = make_schedule("cosine", 50).alphas_cumprod

    def by_hand(t: Tensor, noise: Tensor) -> Tensor:
        x_t = ab[t].sqrt()[:, None] * (x / 2.0) + (1 - ab[t]).sqrt()[:, None] * noise
        return ((net(x_t, t) - noise) ** 2).mean()

    # with a generator: t then noise, drawn on the generator's device
    g = _gen(3)
    t, noise = torch.randint(0, 50, (64,), generator=g), torch.randn(64, 2, generator=g)
    torch.testing.assert_close(model.diffusion_loss(x, generator=_gen(3)), by_hand(t, noise))
    # training_loss: the same with the global RNG, logged as "loss"
    torch.manual_seed(5)
    loss, logs = model.training_loss(x)
    torch.manual_seed(5)
    t = torch.randint(0, 50, (64,))
    noise = torch.randn(64, 2)
    torch.testing.assert_close(loss, by_hand(t, noise))
    torch.testing.assert_close(logs["loss"], loss.detach())
    assert loss.requires_grad and 0.5 < float(loss.detach()) < 50  # a random net: finite, order of Var(eps) and more
    assert float(epsilon_loss(torch.zeros(64, 2), noise)) == pytest.approx(float(noise.pow(2).mean()))


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="data_shape"):
        DDPM(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Unknown variance"):
        DDPM(MLPDenoiser(2, (8,), 4), variance="fixed")
    with pytest.raises(ValueError, match="Unknown noise schedule"):
        DDPM(MLPDenoiser(2, (8,), 4), schedule="quadratic")
    with pytest.raises(ValueError, match="sampling_steps"):
        DDPM(MLPDenoiser(2, (8,), 4), num_timesteps=50, sampling_steps=60)
    model = DDPM(MLPDenoiser(2, (8,), 4), num_timesteps=30)
    with pytest.raises(TypeError, match="unconditional"):
        model.sample(2, labels=3)


# -- sampler wiring against the optimal denoiser -------------------------------------------------------------------
@pytest.mark.parametrize("schedule, variance, sampling_steps", [("linear", "beta", None), ("cosine", "beta_tilde", None),
                                                                ("linear", "beta", 20), ("cosine", "beta_tilde", 25)])
def test_sample_with_gaussian_oracle_reproduces_the_data(schedule, variance, sampling_steps):
    """Data N(3, 0.8^2) per coordinate, data_scale 2: the module's chain must match the exact output moments of the
    affine-Gaussian chain to 5 standard errors, which lie within a few % of the data's (the chain's O(1/T) bias)."""
    mu, s, scale, n, T = 3.0, 0.8, 2.0, 20_000, 100
    oracle = GaussianOracle(make_schedule(schedule, T), mu / scale, s / scale, (2,))
    model = DDPM(oracle, schedule=schedule, num_timesteps=T, variance=variance, data_scale=scale,
                 sampling_steps=sampling_steps)
    out = model.sample(n // 2, generator=_gen(1)).double().reshape(-1)  # 2 coordinates: n draws
    assert out.shape == (n,)
    sch, kept = model.sampling_schedule()
    assert sch.num_steps == (sampling_steps or T) and kept[0] == 0 and kept[-1] == T - 1
    m, v = _chain_moments(sch, oracle.ab[kept], mu / scale, s / scale, variance)
    m, v = m * scale, v * scale**2
    assert out.mean().item() == pytest.approx(m, abs=5 * math.sqrt(v / n))
    assert out.var().item() == pytest.approx(v, abs=5 * v * math.sqrt(2 / n))
    assert m == pytest.approx(mu, abs=0.01)
    if sampling_steps is None:
        assert math.sqrt(v) == pytest.approx(s, rel=0.06)
    # a short chain's std is biased by O(1/steps), bracketed as in Ho et al. sec. 3.2: "beta" over-, "beta_tilde"
    # under-disperses (+14% / -13% here)
    elif variance == "beta":
        assert s < math.sqrt(v) < 1.2 * s
    else:
        assert 0.8 * s < math.sqrt(v) < s


@pytest.mark.parametrize("sampling_steps", [None, 7])
def test_sample_with_point_mass_oracle_ends_at_the_point_and_clips(sampling_steps):
    """Images all equal to c: the optimal predictor makes every x0 prediction c, so the chain ends at c exactly;
    with c outside [-1, 1] and clip_denoised the samples lie at the clip bound."""
    T = 40
    for c, clip, expected in ((0.5, True, 0.5), (-0.3, False, -0.3), (1.7, True, 1.0)):
        oracle = GaussianOracle(make_schedule("linear", T), c, 0.0, (1, 4, 4))
        model = DDPM(oracle, num_timesteps=T, clip_denoised=clip, sampling_steps=sampling_steps)
        out = model.sample(6, generator=_gen(2))
        assert out.shape == (6, 1, 4, 4)
        torch.testing.assert_close(out, torch.full_like(out, expected), rtol=0, atol=1e-4)


# -- sampling API ---------------------------------------------------------------------------------------------------
def test_sample_is_reproducible_uses_only_the_generator_and_restores_train_mode():
    torch.manual_seed(0)
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2), dropout=0.5)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.1)
    model = DDPM(net, num_timesteps=30, clip_denoised=True).train()
    state = torch.get_rng_state()
    a, b = model.sample(4, generator=_gen(7)), model.sample(4, generator=_gen(7))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(a, b)  # same generator, same samples (dropout off while sampling)
    assert not torch.equal(a, model.sample(4, generator=_gen(8)))
    assert a.shape == (4, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert model.training and net.training
    assert model.sample(3).shape == (3, 1, 8, 8)  # the global RNG without a generator


def test_sampling_uses_the_ema_denoiser():
    torch.manual_seed(0)
    net = MLPDenoiser(2, (16,), 8)
    nn.init.normal_(net.out.weight)
    model = DDPM(net, num_timesteps=30, ema_decay=0.9)
    assert model.sampling_denoiser is model.denoiser_ema
    with torch.no_grad():  # the online net moves, the average does not
        for p in model.denoiser.parameters():
            p.add_(1.0)
    plain = DDPM(copy.deepcopy(model.denoiser_ema.module), num_timesteps=30)
    online = DDPM(copy.deepcopy(model.denoiser), num_timesteps=30)
    ours = model.sample(5, generator=_gen(0))
    torch.testing.assert_close(ours, plain.sample(5, generator=_gen(0)), rtol=0, atol=0)
    assert not torch.allclose(ours, online.sample(5, generator=_gen(0)))


def _toy_loader(n: int = 96, batch: int = 16) -> DataLoader:
    data, labels = make_mixture("ring").sample(n, generator=_gen(0))
    return DataLoader(TensorDataset(data, labels), batch_size=batch)


def test_fit_updates_ema_per_optimizer_step_logs_losses_and_reloads(tiny_trainer_kwargs, tmp_path):
    torch.manual_seed(0)
    model = DDPM(MLPDenoiser(2, (16, 16), 8), num_timesteps=30, ema_decay=0.9)
    trainer = L.Trainer(max_steps=3, accumulate_grad_batches=2, limit_val_batches=2, log_every_n_steps=1,
                        **tiny_trainer_kwargs)
    trainer.fit(model, _toy_loader(), _toy_loader(32))
    assert trainer.global_step == 3 and int(model.denoiser_ema.num_updates) == 3  # optimizer steps, not batches
    assert "train/loss" in trainer.callback_metrics and "val/loss" in trainer.callback_metrics
    # the evaluation loss draws fixed t and noise: the same model gives the same number twice
    first = trainer.validate(model, _toy_loader(32), verbose=False)[0]["val/loss"]
    assert trainer.validate(model, _toy_loader(32), verbose=False)[0]["val/loss"] == first
    assert trainer.test(model, _toy_loader(32), verbose=False)[0]["test/loss"] == pytest.approx(first)

    path = tmp_path / "ddpm.ckpt"
    trainer.save_checkpoint(path)
    loaded = DDPM.load_from_checkpoint(path, denoiser=MLPDenoiser(2, (16, 16), 8))
    assert loaded.hparams.num_timesteps == 30 and loaded.denoiser_ema is not None
    torch.testing.assert_close(loaded.sample(5, generator=_gen(1)), model.sample(5, generator=_gen(1)),
                               rtol=0, atol=0)


def test_short_training_covers_the_ring_and_the_untrained_model_does_not():
    """800 Adam steps on the 8-mode ring (std 0.01 widened to 0.05 to learn fast): every mode is hit and many
    samples land within 3 std of one; the untrained model (zero noise prediction: x_T shrunk towards 0) covers nothing."""
    torch.manual_seed(0)
    mixture = make_mixture("ring", std=0.05)
    model = DDPM(MLPDenoiser(2, (64, 64, 64), 16), num_timesteps=50, variance="beta_tilde")
    metric = lambda x: {k: float(v) for k, v in ToyModeMetrics(mixture.modes, mixture.std).forward(x).items()}  # noqa: E731
    before = metric(model.sample(1000, generator=_gen(0)))
    assert before["modes_covered"] == 0 and before["hq_percent"] < 5
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = _gen(1)
    for _ in range(800):
        x, _ = mixture.sample(256, generator=g)
        loss, _ = model.training_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = metric(model.sample(1000, generator=_gen(0)))
    assert after["modes_covered"] == 8
    assert 20 < after["hq_percent"] <= 100  # 29% here
    assert 0 <= after["reverse_kl"] < 0.2
