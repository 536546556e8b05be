"""Tests of lightning_gen/modules/flow.py: RealNVP's exact likelihood, dequantization, sampling and training."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen.data.toy import make_mixture
from lightning_gen.metrics import ToyModeMetrics
from lightning_gen.modules.flow import RealNVP
from lightning_gen.nets.flows import ImageRealNVP, VectorRealNVP, squeeze2d

ROOT = Path(__file__).resolve().parents[2]


def linear_vector_flow(dim: int, seed: int) -> VectorRealNVP:
    """A VectorRealNVP whose couplings are affine maps: constant log-scales and shifts linear in the kept half."""
    flow = VectorRealNVP(dim, num_couplings=4, hidden_dims=()).double()  # each net is one Linear(dim, 2 dim)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for coupling in flow.couplings:
            linear = coupling.net[-1]
            linear.weight.copy_(0.5 * torch.randn(linear.weight.shape, generator=g, dtype=torch.float64))
            linear.weight[:dim].zero_()  # log-scale rows: constant (bias only), so the coupling is affine
            linear.bias.copy_(0.5 * torch.randn(linear.bias.shape, generator=g, dtype=torch.float64))
    return flow


@pytest.mark.parametrize("seed", [0, 1])
def test_log_prob_is_the_change_of_variables_gaussian_of_an_affine_flow(seed):
    # z = M x + b with z ~ N(0, I) makes x ~ N(-M^-1 b, (M^T M)^-1): compare with torch.distributions
    model = RealNVP(linear_vector_flow(3, seed))
    b = model.flow(torch.zeros(1, 3, dtype=torch.float64))[0][0]
    m = model.flow(torch.eye(3, dtype=torch.float64))[0] - b  # row i = M e_i
    m = m.T
    reference = torch.distributions.MultivariateNormal(-torch.linalg.solve(m, b), precision_matrix=m.T @ m)
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(model.log_prob(x), reference.log_prob(x), rtol=1e-10, atol=1e-10)
    assert model.log_prob(x).shape == (6,)


def test_dequantized_log_prob_and_bits_per_dim_match_a_hand_computation():
    model = RealNVP(ImageRealNVP(1, 2, num_scales=1, hidden_channels=4, num_blocks=1), dequantize=True)
    # the flow is the identity at init, so log p(y) = log N(y; 0, I) and everything else is the preprocessing
    levels = torch.tensor([[0.0, 17.0], [128.0, 255.0]]).view(1, 1, 2, 2)
    x = levels / 255 * 2 - 1  # the package's images: k / 255 mapped to [-1, 1]
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    a = 0.05
    v = (levels + u) / 256
    s = a + (1 - 2 * a) * v
    y = torch.log(s / (1 - s))
    per_dim = -0.5 * math.log(2 * math.pi) - 0.5 * y**2 + math.log(1 - 2 * a) - torch.log(s) - torch.log(1 - s)
    expected = per_dim.sum() - 4 * 8 * math.log(2)
    got = model.log_prob(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected.view(1), rtol=1e-5, atol=1e-5)
    bpd = model.bits_per_dim(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(bpd, -expected.view(1) / (4 * math.log(2)), rtol=1e-5, atol=1e-5)


def test_dequantization_is_a_bound_that_integrates_to_one_over_levels():
    # 1 value, 2 bits, no logit, identity flow on [0, 1): P(k) = integral of N(v) over [k/4, (k+1)/4) (times the
    # cell volume convention) -- the bound E_u log p(v) - log 4 lies below log P(k) and close to it
    flow = VectorRealNVP(2, num_couplings=2, hidden_dims=(4,))
    model = RealNVP(flow, dequantize=True, num_bits=2, data_range=(0.0, 3.0), logit_alpha=0.0)
    x = torch.tensor([[1.0, 2.0]]).expand(4000, 2)
    with torch.no_grad():
        bound = model.log_prob(x, generator=torch.Generator().manual_seed(0)).mean()
    normal = torch.distributions.Normal(0.0, 1.0)
    exact = sum(math.log(normal.cdf(torch.tensor((k + 1) / 4)) - normal.cdf(torch.tensor(k / 4))) for k in (1, 2))
    assert exact - 0.02 <= bound.item() <= exact


def test_preprocess_and_postprocess_keep_every_level():
    model = RealNVP(ImageRealNVP(1, 4, num_scales=1, hidden_channels=4, num_blocks=1), dequantize=True)
    levels = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) * 17  # 0 ... 255
    x = levels / 255 * 2 - 1
    y, _ = model.preprocess(x, generator=torch.Generator().manual_seed(0))
    back = model.postprocess(y)
    assert torch.equal(model._levels(back), levels)
    assert (back - x).abs().max() <= 1 / 255 + 1e-6  # within one level (half a level each side of its centre)


def test_data_outside_the_range_and_wrong_shapes_are_reported():
    model = RealNVP(ImageRealNVP(1, 4, num_scales=1, hidden_channels=4, num_blocks=1), dequantize=True)
    with pytest.raises(ValueError, match="data_range"):
        model.log_prob(torch.full((1, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match=r"shape \(1, 4, 4\)"):
        model.log_prob(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        RealNVP(VectorRealNVP(2)).training_loss(torch.zeros(5, 3))


def test_sample_is_reproducible_shaped_clamped_and_restores_mode():
    torch.manual_seed(0)
    flow = ImageRealNVP(1, 8, num_scales=2, hidden_channels=4, num_blocks=1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = RealNVP(flow, dequantize=True)
    model.train()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a, b = model.sample(5, generator=g()), model.sample(5, generator=g())
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert model.training and not torch.equal(a, model.sample(5, generator=torch.Generator().manual_seed(4)))
    with pytest.raises(TypeError, match="unconditional"):
        model.sample(2, labels=torch.zeros(2))
    toy = RealNVP(VectorRealNVP(2), temperature=0.5)
    assert toy.sample(7, generator=g()).shape == (7, 2)
    # the temperature scales the latent: at init the flow is the identity, so samples are N(0, 0.25)
    torch.testing.assert_close(toy.sample(3, generator=g()), 0.5 * torch.randn(3, 2, generator=g()))


def test_validation_and_test_log_nll_and_bits_per_dim(tiny_trainer_kwargs):
    images = (torch.randint(0, 256, (16, 1, 8, 8)).float() / 255) * 2 - 1
    loader = DataLoader(TensorDataset(images, torch.zeros(16, dtype=torch.long)), batch_size=8)
    model = RealNVP(ImageRealNVP(1, 8, num_scales=2, hidden_channels=4, num_blocks=1), dequantize=True)
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, log_every_n_steps=1, **tiny_trainer_kwargs)
    trainer.fit(model, loader, loader)
    logged = trainer.callback_metrics
    assert {"train/nll", "train/bits_per_dim", "val/nll", "val/bits_per_dim"} <= set(logged)
    torch.testing.assert_close(logged["val/bits_per_dim"], logged["val/nll"] / (64 * math.log(2)))
    first = trainer.validate(model, loader, verbose=False)[0]["val/bits_per_dim"]
    assert first == trainer.validate(model, loader, verbose=False)[0]["val/bits_per_dim"]  # fixed dequantization
    result = trainer.test(model, loader, verbose=False)[0]
    assert set(result) == {"test/nll", "test/bits_per_dim"}
    assert 5.0 < result["test/bits_per_dim"] < 12.0  # uniform noise images: about 8 bits/dim near init


# The entropy floor: no model's expected NLL on fresh samples can go below the mixture's entropy H = E[-log p]
# (cross-entropy >= entropy); a well-trained flow gets close to it from above.
TOY_FLOORS = {"ring": -4.29}
# 1,200 steps of batch 256 with gradients clipped to norm 10 (about 30 s on one CPU thread) reach a held-out NLL
# about 2 nats above the ring's floor (measured: -2.28 vs -4.29; without clipping rare gradient spikes left
# -0.8 to -1.8); affine couplings in 2-D approach the floor of such sharp modes (std 0.01) only slowly. The
# tolerance is 3 nats above the floor: well below the NLL of the flow at init (~ +2.8 nats, a standard normal) and
# of the best single Gaussian fit to the ring (+0.84 nats), so only a flow that has separated the modes passes.
TOY_COUPLINGS, TOY_HIDDEN, TOY_LR, TOY_STEPS, TOY_BATCH, TOY_CLIP = 12, (64, 64), 3e-3, 1200, 256, 10.0
TOY_TOLERANCE = 3.0


@pytest.mark.slow
def test_toy_ring_nll_approaches_the_entropy_floor():
    torch.manual_seed(0)
    mixture = make_mixture("ring")
    held_out = mixture.sample(20_000, generator=torch.Generator().manual_seed(1))[0].float()
    floor = float(-mixture.log_prob(held_out.double()).mean())
    assert abs(floor - TOY_FLOORS["ring"]) < 0.05  # the protocol's entropy, estimated on the held-out draw
    model = RealNVP(VectorRealNVP(2, num_couplings=TOY_COUPLINGS, hidden_dims=TOY_HIDDEN, activation="silu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=TOY_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, TOY_STEPS)
    g = torch.Generator().manual_seed(2)
    for _ in range(TOY_STEPS):
        loss, _ = model.training_loss(mixture.sample(TOY_BATCH, generator=g)[0].float())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TOY_CLIP)
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        nll = float(-model.log_prob(held_out).mean())
    assert floor - 0.05 <= nll <= floor + TOY_TOLERANCE, (nll, floor)


# Spline couplings (Durkan et al. 2019) make the grid's sharp modes where affine ones cannot: 8 couplings of 16 bins
# with 2x64 MLPs, 200 steps of batch 256 at Adam 3e-3 (about 4 s on one CPU thread) reach 25/25 modes, 87 % high
# quality and a held-out NLL 0.13-0.15 nats above the grid's floor at seeds 0-2 (measured); the same flow with affine
# couplings stays 4.2 nats above it, with no mode covered. The bounds leave room for other seeds and platforms.
SPLINE_GRID_STEPS, SPLINE_GRID_GAP = 200, 0.4


@pytest.mark.slow
def test_spline_couplings_fit_the_sharp_grid_modes_to_near_the_entropy_floor():
    torch.manual_seed(0)
    mixture = make_mixture("grid")
    held_out = mixture.sample(20_000, generator=torch.Generator().manual_seed(1))[0].float()
    floor = float(-mixture.log_prob(held_out.double()).mean())
    model = RealNVP(VectorRealNVP(2, 8, (64, 64), activation="silu", coupling="spline", num_bins=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, SPLINE_GRID_STEPS)
    g = torch.Generator().manual_seed(2)
    for step in range(SPLINE_GRID_STEPS):
        loss, _ = model.training_loss(mixture.sample(256, generator=g)[0].float())
        optimizer.zero_grad()
        loss.backward()
        if step == 1:  # every parameter of every spline coupling receives a gradient (at step 0 the zero-initialized
            # last layers block the gradient to the layers before them)
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        nll = float(-model.log_prob(held_out).mean())
    assert floor - 0.05 <= nll <= floor + SPLINE_GRID_GAP, (nll, floor)
    metric = ToyModeMetrics(mixture.modes, mixture.std)
    metric.update(model.sample(2500, generator=torch.Generator().manual_seed(3)))
    scores = metric.compute()
    assert scores["modes_covered"] == 25 and 75.0 <= float(scores["hq_percent"]) <= 100.0, scores
    nets = model.sharding_units()  # sharded training shards the spline couplings' conditioners too
    assert len(nets) == 8 and all(net is coupling.net for net, coupling in zip(nets, model.flow.couplings))


def test_actnorm_init_under_ddp_uses_every_ranks_batch_and_is_the_same_on_both_ranks(likelihood_ddp_runs):
    # rank 0's half of the data has mean ~3 and std ~5, rank 1's mean ~0 and std ~1: a per-rank init would differ
    proc, runs = likelihood_ddp_runs  # tests/scripts/ddp_actnorm.py, launched with the other likelihood families
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(runs / "actnorm" / f"rank{r}.pt", weights_only=True)["state_dict"] for r in (0, 1)]
    for name, value in ranks[0].items():
        torch.testing.assert_close(value, ranks[1][name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    sys.path.insert(0, str(ROOT / "tests" / "scripts"))
    from ddp_actnorm import data

    first = squeeze2d(data())  # what the first ActNorm sees: the squeezed images, (8, 4, 2, 2)
    mean, std = first.mean((0, 2, 3)), first.std((0, 2, 3), unbiased=False)
    prefix = "flow.scales.0.channel.0.layers.0."
    assert bool(ranks[0][prefix + "initialized"])
    torch.testing.assert_close(ranks[0][prefix + "bias"], -mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(ranks[0][prefix + "log_scale"], -torch.log(std), rtol=0, atol=1e-5)
    own = squeeze2d(data()[1::2]).std((0, 2, 3), unbiased=False)  # rank 1's batch alone: a clearly different init
    assert (torch.log(own) - torch.log(std)).abs().min() > 0.5
