"""Tests for lightning_gen/data/toy.py: mixture geometry, sampling statistics, exact densities and the datamodule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.testing import assert_close

from lightning_gen.data import GaussianMixture, ToyGaussiansDataModule, make_mixture


def test_ring_modes_on_unit_circle_at_equal_angles():
    """Default ring: 8 modes at (cos 2 pi k/8, sin 2 pi k/8), radius 1, std 0.01."""
    ring = make_mixture("ring")
    k = torch.arange(8, dtype=torch.float64)
    expected = torch.stack([torch.cos(2 * math.pi * k / 8), torch.sin(2 * math.pi * k / 8)], 1).float()
    assert ring.num_modes == 8 and ring.dim == 2
    assert_close(ring.modes, expected)
    assert_close(ring.modes.norm(dim=1), torch.ones(8))
    assert ring.std == 0.01


def test_ring_options():
    """``num_modes`` and ``scale`` give K modes on a circle of that radius, neighbours 2 pi / K apart."""
    ring = make_mixture("ring", num_modes=5, scale=3.0)
    assert_close(ring.modes.norm(dim=1), torch.full((5,), 3.0))
    angles = torch.atan2(ring.modes[:, 1], ring.modes[:, 0])
    assert_close(torch.remainder(angles.diff(), 2 * math.pi), torch.full((4,), 2 * math.pi / 5))


def test_grid_modes_are_the_5x5_lattice():
    """Default grid: the 25 points of {-4, -2, 0, 2, 4}^2, std 0.05."""
    grid = make_mixture("grid")
    assert grid.num_modes == 25 and grid.dim == 2 and grid.std == 0.05
    got = {tuple(p) for p in grid.modes.tolist()}
    assert got == {(float(a), float(b)) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)}
    # a 3x3 grid of spacing 1 is centred too
    assert {tuple(p) for p in make_mixture("grid", num_modes=9, scale=1.0).modes.tolist()} == {
        (float(a), float(b)) for a in (-1, 0, 1) for b in (-1, 0, 1)
    }


def test_gaussians_1d_defaults():
    """The 1-D mixture: modes -2 and 2, std 0.5."""
    mix = make_mixture("gaussians_1d")
    assert mix.dim == 1 and mix.std == 0.5
    assert_close(mix.modes, torch.tensor([[-2.0], [2.0]]))


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_sample_statistics_per_mode(name):
    """Labels ~ uniform over modes; x - mode[label] has mean 0 and std = ``std`` per axis, per mode and pooled.

    20,000 draws: ~800 per grid mode (2,500 per ring mode); the sd of a per-mode sample std is std/sqrt(2n) <= 2.5 %,
    so +-12 % per mode is > 4.5 sd; pooled over 40,000 values it is 0.35 %, so +-2 % is > 5 sd.
    """
    mix = make_mixture(name)
    n = 20_000
    x, labels = mix.sample(n, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 2) and labels.shape == (n,)
    counts = torch.bincount(labels, minlength=mix.num_modes).double()
    p = 1.0 / mix.num_modes
    assert (counts - n * p).abs().max().item() < 5 * math.sqrt(n * p * (1 - p))
    resid = (x - mix.modes[labels]).double()
    assert abs(resid.std().item() / mix.std - 1) < 0.02
    assert resid.mean(0).abs().max().item() < 5 * mix.std / math.sqrt(n)
    for k in range(mix.num_modes):
        per_axis_std = resid[labels == k].std(dim=0)
        assert ((per_axis_std / mix.std - 1).abs() < 0.12).all(), (k, per_axis_std)


def test_sampling_is_seeded():
    """The same generator seed gives identical data; another seed gives different data."""
    mix = make_mixture("grid")
    a = mix.sample(500, generator=torch.Generator().manual_seed(5))
    b = mix.sample(500, generator=torch.Generator().manual_seed(5))
    c = mix.sample(500, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_log_prob_matches_scipy_1d():
    """log p(x) of the 1-D mixture equals log(1/2 N(x; -2, .5^2) + 1/2 N(x; 2, .5^2)), incl. far tails."""
    mix = make_mixture("gaussians_1d")
    x = np.linspace(-12.0, 12.0, 241)
    expected = np.logaddexp(stats.norm.logpdf(x, -2.0, 0.5), stats.norm.logpdf(x, 2.0, 0.5)) - math.log(2)
    got = mix.log_prob(torch.tensor(x).unsqueeze(1))
    assert got.shape == (241,)
    assert_close(got, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_log_prob_integrates_to_one():
    """exp(log_prob) integrates to 1: trapezoid on a fine grid, 1-D (3 modes) and 2-D (2x2 grid, std 0.4)."""
    mix1 = GaussianMixture(modes=torch.tensor([[-1.0], [0.5], [3.0]]), std=0.3)
    x = torch.linspace(-6.0, 8.0, 4001, dtype=torch.float64)
    dens = mix1.log_prob(x.unsqueeze(1)).exp().numpy()
    assert abs(integrate.trapezoid(dens, x.numpy()) - 1.0) < 1e-6

    mix2 = make_mixture("grid", num_modes=4, scale=2.0, std=0.4)
    axis = torch.linspace(-4.0, 4.0, 321, dtype=torch.float64)
    pts = torch.cartesian_prod(axis, axis)
    dens2 = mix2.log_prob(pts).exp().view(321, 321).numpy()
    total = integrate.trapezoid(integrate.trapezoid(dens2, axis.numpy(), axis=1), axis.numpy())
    assert abs(total - 1.0) < 1e-4


def test_log_prob_matches_scipy_2d():
    """2-D ring log-density equals the scipy multivariate-normal mixture at points near and between modes."""
    ring = make_mixture("ring", std=0.2)
    pts = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 0.0], [0.5, 0.5], [-1.3, 0.2]], dtype=torch.float64)
    comps = np.stack([stats.multivariate_normal(m, 0.04 * np.eye(2)).logpdf(pts.numpy()) for m in ring.modes.double().numpy()])
    expected = np.logaddexp.reduce(comps, axis=0) - math.log(8)
    assert_close(ring.log_prob(pts), torch.tensor(expected), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="grid", num_modes=24), "square number"),
        (dict(name="grid", num_modes=10), "square number"),
        (dict(name="ring", std=0.0), "std must be positive"),
        (dict(name="grid", std=-0.1), "std must be positive"),
        (dict(name="ring", num_modes=0), "num_modes must be >= 1"),
        (dict(name="spiral"), "Unknown mixture 'spiral'"),
    ],
)
def test_make_mixture_rejects_bad_arguments(kwargs, match):
    """Non-square grids, non-positive std or mode count, and unknown names raise ValueError with a useful message."""
    with pytest.raises(ValueError, match=match):
        make_mixture(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(train_size=0), dict(val_size=0), dict(mixture="moons")])
def test_datamodule_rejects_bad_arguments(kwargs):
    """Bad datamodule arguments fail at construction, not mid-training."""
    with pytest.raises(ValueError):
        ToyGaussiansDataModule(**kwargs)


def test_datamodule_loaders_yield_batches_of_batch_size():
    """Train batches are exactly (B, 2) (drop_last); val/test cover every sample once; predict yields indices."""
    dm = ToyGaussiansDataModule("grid", train_size=1000, val_size=300, predict_size=100, batch_size=64, seed=3)
    assert dm.data_shape == (2,)
    train = list(dm.train_dataloader())
    assert len(train) == 1000 // 64
    for x, y in train:
        assert x.shape == (64, 2) and x.dtype == torch.float32 and y.shape == (64,)
    val = list(dm.val_dataloader())
    assert [x.shape[0] for x, _ in val] == [64, 64, 64, 64, 44]
    assert all(x.shape[1:] == (2,) for x, _ in val)
    test_x = torch.cat([x for x, _ in dm.test_dataloader()])
    assert test_x.shape == (300, 2)
    assert not torch.equal(test_x, torch.cat([x for x, _ in val]))  # val and test are separate draws
    idx = torch.cat(list(dm.predict_dataloader()))
    assert torch.equal(idx, torch.arange(100))


def test_datamodule_data_follow_the_mixture_and_seed():
    """Training points sit within 5 std of their labelled mode; equal seeds give equal sets, other seeds differ."""
    def train_set(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        dm = ToyGaussiansDataModule("ring", train_size=400, val_size=50, batch_size=50, seed=seed)
        dm.setup("fit")
        return dm.train_dataloader().dataset.tensors

    x, y = train_set(0)
    ring = make_mixture("ring")
    assert (x - ring.modes[y]).norm(dim=1).max().item() < 5 * ring.std
    x2, y2 = train_set(0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, train_set(1)[0])


def test_datamodule_1d_mixture_shape():
    """The 1-D mixture gives (B, 1) batches and data_shape (1,)."""
    dm = ToyGaussiansDataModule("gaussians_1d", train_size=256, val_size=32, batch_size=32)
    assert dm.data_shape == (1,)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1)
