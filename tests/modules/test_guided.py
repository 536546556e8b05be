"""Tests of lightning_gen/modules/guided.py: GuidedDDPM's label dropout, guided sampling against the closed form for
Gaussian classes, labels in sample(), EMA, checkpoints and a two-process DDP fit."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from scipy import integrate
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import DDPM, GuidedDDPM
from lightning_gen.diffusion import ClassifierFreeGuidance, DDIMSampler, NoiseSchedule, make_schedule
from lightning_gen.nets import MLPDenoiser, UNet


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class GaussianClassesOracle(nn.Module):
    """The exact noise predictor of 1-D Gaussian classes: label k (the last one the null label) is data N(mu_k, s_k^2),
    eps*(x_t, t, k) = sqrt(1 - ab_t) (x_t - sqrt(ab_t) mu_k) / (ab_t s_k^2 + 1 - ab_t). Records the labels it gets."""

    def __init__(self, schedule: NoiseSchedule, mus: list[float], stds: list[float]) -> None:
        super().__init__()
        self.register_buffer("ab", schedule.alphas_cumprod.double().clone())
        self.register_buffer("mus", torch.tensor(mus, dtype=torch.float64))
        self.register_buffer("stds", torch.tensor(stds, dtype=torch.float64))
        self.num_classes, self.data_shape = len(mus) - 1, (1,)
        self.dummy = nn.Parameter(torch.zeros(()))  # something for an optimizer to hold
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        self.seen.append(labels.detach().clone())
        ab, mu, s = self.ab[t][:, None], self.mus[labels][:, None], self.stds[labels][:, None]
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)).to(x.dtype) + 0 * self.dummy


def _oracle_model(w: float = 0.0, **kwargs) -> GuidedDDPM:
    # class 0: N(2, 0.5^2), class 1: N(-2, 0.5^2), null: N(0, 4.25), the two classes' moment-matched mixture
    oracle = GaussianClassesOracle(make_schedule("linear", 1000), [2.0, -2.0, 0.0], [0.5, 0.5, math.sqrt(4.25)])
    return GuidedDDPM(oracle, guidance_scale=w, **kwargs)


def _guided_ode_map(w: float, mu_c: float, s_c: float, mu_u: float, s_u: float, ab_T: float) -> tuple[float, float]:
    """x_0 = A x_T + B for the probability-flow ODE of the guided prediction, solved in closed form.

    In DDIM's variables y = x / sqrt(ab), sigma = sqrt((1 - ab) / ab) the ODE is dy/dsigma = eps~ (Song et al. 2021,
    eq. 14; DDIM is its Euler scheme), and for Gaussian data eps*(y, sigma) = sigma (y - mu) / (s^2 + sigma^2). So
    eps~ = (1 + w) eps_c - w eps_u = a(sigma) y - c(sigma) with the integrating factor
    Phi = (s_c^2 + sigma^2)^((1 + w) / 2) (s_u^2 + sigma^2)^(-w / 2), and y(0) = Phi(0) (y_T / Phi(sigma_T)
    + int_0^sigma_T c / Phi dsigma), y_T = x_T / sqrt(ab_T).
    """
    s_T = math.sqrt((1 - ab_T) / ab_T)

    def phi(s: float) -> float:
        return (s_c**2 + s**2) ** ((1 + w) / 2) * (s_u**2 + s**2) ** (-w / 2)

    def c(s: float) -> float:
        return (1 + w) * s * mu_c / (s_c**2 + s**2) - w * s * mu_u / (s_u**2 + s**2)

    integral, _ = integrate.quad(lambda s: c(s) / phi(s), 0.0, s_T, limit=500)
    return phi(0.0) / (phi(s_T) * math.sqrt(ab_T)), phi(0.0) * integral


# -- guided sampling: theory ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("w", [0.0, 1.0, 3.0, -1.0])
def test_guided_ddim_samples_of_gaussian_classes_follow_the_closed_form(w):
    """With exact Gaussian predictions, deterministic DDIM over all 1000 steps maps each x_T to A x_T + B, the guided
    probability-flow ODE's solution. As sigma_T -> inf, A -> s_c (s_c / s_u)^w: guidance shrinks the class's spread
    geometrically in w (not to the "tilted" p_c^(1+w) / p_u^w, whose std at w = 1 would be 0.36, not 0.12), and the
    mean moves beyond mu_c = 2, away from the unconditional mean 0. w = 0 samples the class, w = -1 the null
    distribution."""
    model = _oracle_model(sampler=DDIMSampler(eta=0.0))
    n = 400
    x = model.sample(n, generator=_gen(0), labels=0, guidance_scale=w).double().squeeze(1)
    x_T = torch.randn((n, 1), generator=_gen(0)).double().squeeze(1)  # DDIM with eta 0 draws only x_T
    ab_T = float(model.noise_schedule.alphas_cumprod[-1].double())
    a, b = _guided_ode_map(w, 2.0, 0.5, 0.0, math.sqrt(4.25), ab_T)
    torch.testing.assert_close(x, a * x_T + b, rtol=0, atol=0.02)  # the Euler scheme's error over 1000 steps
    limit = {0.0: (0.5, 2.0), 1.0: (0.5 * 0.5 / math.sqrt(4.25), 2.25), 3.0: (0.5 * (0.5 / math.sqrt(4.25)) ** 3, 2.2),
             -1.0: (math.sqrt(4.25), 0.0)}[w]
    assert a == pytest.approx(limit[0], rel=1e-3)
    assert b == pytest.approx(limit[1], abs=0.01)


def test_sample_uses_the_module_scale_unless_given_and_the_same_x_T_for_every_scale():
    model = _oracle_model(w=2.0, sampler=DDIMSampler(10))
    default = model.sample(50, generator=_gen(1), labels=1)
    torch.testing.assert_close(default, model.sample(50, generator=_gen(1), labels=1, guidance_scale=2.0), rtol=0, atol=0)
    conditional = model.sample(50, generator=_gen(1), labels=1, guidance_scale=0)
    # the same noise: guidance only sharpens each sample towards its class (class 1: N(-2, 0.5^2))
    assert float(conditional.std()) > 2 * float(default.std())
    assert torch.corrcoef(torch.stack([default.squeeze(1), conditional.squeeze(1)]))[0, 1] > 0.99


# -- labels ---------------------------------------------------------------------------------------------------------
def test_the_null_label_reaches_the_net_only_as_guidance_asks():
    model = _oracle_model(sampler=DDIMSampler(3))
    net = model.denoiser
    model.sample(7, guidance_scale=0.0)  # default labels: sample i is class i % 2, never the null label
    assert len(net.seen) == 3 and all(torch.equal(y, torch.arange(7) % 2) for y in net.seen)
    net.seen.clear()
    model.sample(4, labels=[1, 0, 0, 1], guidance_scale=2.5)  # each step: the labels, then the null label
    assert all(torch.equal(y, torch.tensor([1, 0, 0, 1, 2, 2, 2, 2])) for y in net.seen)
    net.seen.clear()
    model.sample(3, labels=1, guidance_scale=-1.0)  # unconditional samples, on request
    assert all(torch.equal(y, torch.full((3,), 2)) for y in net.seen)
    net.seen.clear()
    model.predict_step((torch.arange(4), torch.tensor([1, 1, 0, 1])), 0)  # predict: the (indices, labels) batch's
    assert all(torch.equal(y, torch.tensor([1, 1, 0, 1])) for y in net.seen)
    for bad, match in ((2, r"0\.\.1"), (-1, r"0\.\.1"), ([0, 1], "2 labels for 3"), (torch.tensor([0.5]), "integer")):
        with pytest.raises(ValueError, match=match):
            model.sample(3, labels=bad)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.sample(3, guidance_scale=math.nan)
    with pytest.raises(TypeError, match="unexpected"):
        model.sample(3, domains=torch.zeros(3))


def test_training_drops_labels_at_rate_p_and_keeps_the_others():
    torch.manual_seed(0)
    model = _oracle_model(label_dropout=0.1)
    net = model.denoiser
    n = 20_000
    labels = torch.arange(n) % 2
    batch = (torch.randn(n, 1), labels)
    model.training_step(batch, 0)
    seen = net.seen[-1]
    dropped = seen == 2
    assert abs(int(dropped.sum()) - 0.1 * n) < 5 * math.sqrt(n * 0.1 * 0.9)
    assert torch.equal(seen[~dropped], labels[~dropped])
    # evaluation draws its dropout (and t, eps) from a generator seeded by the batch index: reproducible
    model.log = lambda *args, **kwargs: None
    first = model.validation_step(batch, 3)
    assert torch.equal(model.validation_step(batch, 3), first) and torch.equal(net.seen[-1], net.seen[-2])
    assert 0 < int((net.seen[-1] == 2).sum()) < n // 5
    with pytest.raises(ValueError, match="labels"):
        model.batch_labels((torch.randn(3, 1),))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        model.batch_labels((torch.randn(3, 1), torch.tensor([0, 1, 2])))


def test_constructor_checks():
    with pytest.raises(ValueError, match="num_classes"):
        GuidedDDPM(MLPDenoiser(2, (8,), 8))
    with pytest.raises(ValueError, match="GuidedDDPM"):
        DDPM(MLPDenoiser(2, (8,), 8, num_classes=3))
    with pytest.raises(ValueError, match="label_dropout"):
        GuidedDDPM(MLPDenoiser(2, (8,), 8, num_classes=3), label_dropout=1.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        GuidedDDPM(MLPDenoiser(2, (8,), 8, num_classes=3), guidance_scale=math.inf)
    model = GuidedDDPM(MLPDenoiser(2, (8,), 8, num_classes=3), schedule="cosine", num_timesteps=20, guidance_scale=3.0)
    assert model.num_classes == 3 and model.hparams.guidance_scale == 3.0 and model.hparams.label_dropout == 0.1


# -- EMA, checkpoints, training -------------------------------------------------------------------------------------
def _blobs(n: int = 48) -> TensorDataset:
    """n 8 x 8 images in [-1, 1] whose brightness is set by their class (0, 1, 2)."""
    g = _gen(0)
    labels = torch.arange(n) % 3
    x = (labels.float()[:, None, None, None] - 1) * 0.6 + 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    return TensorDataset(x.clamp(-1, 1), labels)


def test_sampling_uses_the_ema_denoiser_with_its_label_embedding(tiny_trainer_kwargs, tmp_path):
    L.seed_everything(0)
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2), attention=False, num_classes=3)
    model = GuidedDDPM(net, schedule="cosine", num_timesteps=20, ema_decay=0.5, clip_denoised=True, guidance_scale=1.5)
    initial = net.label_embedding.weight.detach().clone()
    trainer = L.Trainer(max_steps=4, **tiny_trainer_kwargs)
    trainer.fit(model, DataLoader(_blobs(), batch_size=12, shuffle=True))
    ema = model.denoiser_ema
    assert not torch.equal(net.label_embedding.weight, initial)  # the label embedding trained
    assert not torch.equal(ema.module.label_embedding.weight, net.label_embedding.weight)  # and its average lags
    labels = torch.tensor([2, 0, 1, 1])
    expected = model.sampler.sample(ClassifierFreeGuidance(ema, labels, 1.5, 3), (4, 1, 8, 8), model.noise_schedule,
                                    _gen(5))
    got = model.sample(4, generator=_gen(5), labels=labels)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    raw = model.sampler.sample(ClassifierFreeGuidance(net, labels, 1.5, 3), (4, 1, 8, 8), model.noise_schedule, _gen(5))
    assert not torch.allclose(got, raw)
    # a checkpoint gives the same guided samples, and its hyperparameters the same default scale
    trainer.save_checkpoint(tmp_path / "guided.ckpt")
    loaded = GuidedDDPM.load_from_checkpoint(
        tmp_path / "guided.ckpt", denoiser=UNet(1, 8, base_channels=8, channel_mults=(1, 2), attention=False, num_classes=3))
    assert loaded.guidance_scale == 1.5 and loaded.label_dropout == 0.1
    torch.testing.assert_close(loaded.sample(4, generator=_gen(5), labels=labels), got, rtol=0, atol=0)


def test_ddp_two_cpu_processes_train_identical_weights_with_their_own_label_dropout(likelihood_ddp_runs):
    proc, runs = likelihood_ddp_runs  # tests/scripts/ddp_guided.py, launched with the other likelihood families
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(runs / "guided" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(runs / "guided" / "init.pt", weights_only=True)
    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    assert a.keys() == b.keys() and "denoiser.label_embedding.weight" in a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    for name in ("denoiser.label_embedding.weight", "denoiser.out.weight"):
        assert (a[name] - init[name]).abs().max() > 1e-3, f"{name} did not train"
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 6
    # each rank drew its own label dropout (and each dropped about 10 % of its labels)
    assert not torch.equal(ranks[0]["dropped"], ranks[1]["dropped"])
    for info in ranks:
        assert 0.02 < float(info["dropped"].float().mean()) < 0.25
    torch.testing.assert_close(ranks[0]["samples"], ranks[1]["samples"], rtol=0, atol=0)
