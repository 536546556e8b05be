"""Tests of lightning_gen/modules/score.py: the ScoreModel's DSM and SSM losses at the exact score (closed form),
annealed Langevin dynamics with the exact score, sampling overrides, errors, and two-process DDP."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lightning_gen import ScoreModel
from lightning_gen.diffusion import AnnealedLangevinSampler, NoiseLadder
from lightning_gen.nets import MLPDenoiser


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class GaussianScoreOracle(nn.Module):
    """sigma_i times the exact score of N(m, C + sigma_i^2 I) (model space), so ScoreModel's ``net / sigma`` is that
    score: the minimizer of DSM and SSM at every level."""

    def __init__(self, sigmas: Tensor, m: Tensor, C: Tensor) -> None:
        super().__init__()
        self.data_shape = (m.numel(),)
        eye = torch.eye(m.numel(), dtype=torch.float64)
        precisions = torch.stack([torch.linalg.inv(C.double() + s * s * eye) for s in sigmas.double()])
        self.register_buffer("scaled_precisions", sigmas.double()[:, None, None] * precisions)
        self.register_buffer("m", m.double())
        self.dummy = nn.Parameter(torch.zeros(()))  # something for an optimizer to hold

    def forward(self, x: Tensor, level: Tensor) -> Tensor:
        out = -(self.scaled_precisions[level] @ (x.double() - self.m)[..., None])[..., 0]
        return out.to(x.dtype) + 0 * self.dummy


@pytest.mark.parametrize("objective", ["dsm", "ssm"])
def test_losses_at_the_exact_score_match_their_closed_forms(objective):
    # data N(m, s^2 I) in d = 2, data_scale 2 (model space: N(m/2, (s/2)^2 I)). At the exact score of level sigma:
    # DSM = d/2 s'^2 / (s'^2 + sigma^2) and SSM = sigma^2 (tr grad s + 1/2 E||s||^2) = -d/2 sigma^2 / (s'^2 + sigma^2),
    # so DSM - SSM = d/2 at every level (Vincent 2011: both are the Fisher divergence up to a constant)
    m, s, scale = torch.tensor([1.0, -3.0]), 1.2, 2.0
    ladder = NoiseLadder.geometric(3.0, 0.05, 6)
    sp = s / scale
    oracle = GaussianScoreOracle(ladder.sigmas, m / scale, sp * sp * torch.eye(2))
    model = ScoreModel(oracle, sigma_max=3.0, sigma_min=0.05, num_levels=6, objective=objective, data_scale=scale,
                       projection="gaussian")
    data = m + s * torch.randn(40_000, 2, generator=_g(0))
    loss = float(model.score_matching_loss(data, generator=_g(1)).detach())
    var = sp * sp + ladder.sigmas.double() ** 2
    expected = float((sp * sp / var).mean()) if objective == "dsm" else float((-ladder.sigmas.double() ** 2 / var).mean())
    assert loss == pytest.approx(expected, abs=0.02)


def test_annealed_langevin_with_the_exact_score_samples_the_gaussian():
    m = torch.tensor([1.0, -2.0])
    C = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    ladder = NoiseLadder.geometric(5.0, 0.1, 8)
    precisions = [torch.linalg.inv(C + s * s * torch.eye(2)) for s in ladder.sigmas.tolist()]

    def score(x: Tensor, level: Tensor) -> Tensor:  # the exact score of N(m, C + sigma^2 I); one level per call
        assert (level == level[0]).all()
        return -(x - m) @ precisions[int(level[0])].T

    # 100 steps per level at epsilon / sigma_min^2 = 1 leave the covariance 1.5 % wide of C (exact moment recursion)
    sampler = AnnealedLangevinSampler(step_size=0.01, steps_per_level=100, final_denoise=True)
    x = sampler.sample(score, (6000, 2), ladder, _g(0))
    assert sampler.timesteps.tolist() == [i for i in range(7, -1, -1) for _ in range(100)]
    torch.testing.assert_close(x.mean(0), m, rtol=0, atol=0.05)
    torch.testing.assert_close(torch.cov(x.T), C, rtol=0, atol=0.07)


def test_langevin_step_and_denoise_by_hand():
    ladder = NoiseLadder(torch.tensor([0.1, 0.4]))
    sampler = AnnealedLangevinSampler(step_size=0.003, steps_per_level=2)
    sampler.set_timesteps(schedule=ladder)
    x, s, z = torch.randn(3, 2, generator=_g(0)), torch.randn(3, 2, generator=_g(1)), torch.randn(3, 2, generator=_g(2))
    alpha = 0.003 * 0.4**2 / 0.1**2
    torch.testing.assert_close(sampler.step(s, 1, x, noise=z), x + alpha / 2 * s + alpha**0.5 * z)
    torch.testing.assert_close(sampler.denoise(s, x), x + 0.01 * s)
    assert isinstance(ScoreModel(MLPDenoiser(2, (8,), 4), sampler="langevin").sampler, AnnealedLangevinSampler)
    with pytest.raises(TypeError, match="NoiseLadder"):
        from lightning_gen.diffusion import make_schedule
        sampler.set_timesteps(schedule=make_schedule("linear", 1000))


def test_sample_overrides_and_errors():
    model = ScoreModel(MLPDenoiser(2, (16,), 8), sigma_max=2.0, num_levels=3, steps_per_level=2)
    with torch.no_grad():
        model.net.out.weight.normal_(generator=_g(0))  # a non-zero score
    a = model.sample(4, generator=_g(1))
    assert a.shape == (4, 2) and torch.equal(a, model.sample(4, generator=_g(1)))
    assert not torch.equal(a, model.sample(4, generator=_g(1), steps_per_level=3))
    assert not torch.equal(a, model.sample(4, generator=_g(1), step_size=1e-4))
    assert not torch.equal(a, model.sample(4, generator=_g(1), final_denoise=False))
    assert model.sampler.steps_per_level == 2  # the overrides were for one call
    with pytest.raises(TypeError, match="unexpected"):
        model.sample(2, labels=torch.zeros(2))
    with pytest.raises(TypeError, match="Langevin"):
        ScoreModel(MLPDenoiser(2, (16,), 8), sampler="ddim")
    with pytest.raises(ValueError, match="objective"):
        ScoreModel(MLPDenoiser(2, (16,), 8), objective="esm")
    with pytest.raises(ValueError, match="sigma_min"):
        ScoreModel(MLPDenoiser(2, (16,), 8), sigma_max=0.1, sigma_min=1.0)
    with pytest.raises(ValueError, match="data_shape"):
        ScoreModel(nn.Linear(2, 2))


def test_ddp_two_cpu_processes_keep_weights_identical_and_train(likelihood_ddp_runs):
    proc, runs = likelihood_ddp_runs  # tests/scripts/ddp_score.py, launched with the other likelihood families
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(runs / "score" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for objective in ("dsm", "ssm"):
        for name, value in ranks[0][objective].items():  # weights and the EMA identical on both ranks
            torch.testing.assert_close(value, ranks[1][objective][name], rtol=0, atol=0, msg=f"{objective}.{name}")
        assert any("net_ema" in name for name in ranks[0][objective])
        init = ranks[0][f"{objective}_init"]
        assert any(not torch.equal(init[k], ranks[0][objective][k]) for k in init if k.startswith("net."))
        assert ranks[0][f"{objective}_steps"] == 6  # 96 points, 2 ranks, batch 16, 2 epochs
