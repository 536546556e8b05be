"""Tests for lightning_gen/metrics/toy.py: mode coverage, % high quality and reverse KL against their theory."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lightning_gen.data import make_mixture
from lightning_gen.metrics import ToyModeMetrics, toy_mode_counts, toy_mode_statistics

GRID = make_mixture("grid")  # 25 modes {-4,-2,0,2,4}^2, std 0.05
# 2-D isotropic Gaussian: ||x - mu|| / sigma is chi with 2 dof, so P(r <= 3 sigma) = 1 - exp(-9/2)
HQ_THEORY = 100.0 * (1.0 - math.exp(-4.5))  # 98.889 %


def _metric(mixture=GRID, **kwargs) -> ToyModeMetrics:
    return ToyModeMetrics(mixture.modes, mixture.std, **kwargs)


def _at_modes(mode_ids: list[int], per_mode: int, mixture=GRID) -> torch.Tensor:
    """``per_mode`` deterministic points around each listed mode, all within 1.5 std (so all high quality)."""
    angles = 2 * math.pi * torch.arange(per_mode) / per_mode
    offsets = 1.5 * mixture.std * torch.stack([angles.cos(), angles.sin()], 1) * torch.linspace(0, 1, per_mode)[:, None]
    return torch.cat([mixture.modes[k] + offsets for k in mode_ids])


def test_exact_grid_samples_cover_every_mode():
    """2,500 draws of the true mixture: 25/25 modes, ~98.9 % high quality, reverse KL ~ 24/(2N) ~ 0.005.

    Measured over seeds 0..9: hq 98.60..99.28 % (binomial sd 0.21 pp, so +-1 pp is ~4.7 sd); reverse KL
    0.0027..0.0063, where 2N KL ~ chi^2(24) puts 99.8 % of the mass in [0.0016, 0.0104].
    """
    x, _ = GRID.sample(2500, generator=torch.Generator().manual_seed(0))
    metric = _metric()
    metric.update(x)
    out = metric.compute()
    assert out["modes_covered"].item() == 25
    assert abs(out["hq_percent"].item() - HQ_THEORY) < 1.0
    assert 0.001 < out["reverse_kl"].item() < 0.02


def test_exact_ring_samples_cover_every_mode():
    """Same protocol on the 8-mode ring (std 0.01): 8/8 modes, ~98.9 % high quality."""
    ring = make_mixture("ring")
    x, _ = ring.sample(2500, generator=torch.Generator().manual_seed(1))
    metric = _metric(ring)
    metric.update(x)
    out = metric.compute()
    assert out["modes_covered"].item() == 8
    assert abs(out["hq_percent"].item() - HQ_THEORY) < 1.0
    assert 0.0 < out["reverse_kl"].item() < 0.01  # E ~ 7/(2*2472) = 0.0014


def test_three_equal_modes_give_log_25_over_3():
    """Mass split equally over 3 of 25 modes: 3 covered, 100 % hq, KL(p || U) = log(25/3) = 2.1203 exactly."""
    x = _at_modes([0, 7, 19], per_mode=100)
    metric = _metric()
    metric.update(x)
    out = metric.compute()
    assert out["modes_covered"].item() == 3
    assert_close(out["hq_percent"], torch.tensor(100.0))
    assert_close(out["reverse_kl"], torch.tensor(math.log(25 / 3)))
    counts = toy_mode_counts(x, GRID.modes, GRID.std)
    assert counts.dtype == torch.long and counts.shape == (25,)
    assert counts.sum().item() == 300 and set(counts.nonzero().flatten().tolist()) == {0, 7, 19}


def test_unequal_modes_reverse_kl_formula():
    """Counts (60, 30, 10) on 3 modes: KL = sum p log(25 p) with p = (.6, .3, .1)."""
    x = torch.cat([_at_modes([4], 60), _at_modes([12], 30), _at_modes([20], 10)])
    out = toy_mode_statistics(toy_mode_counts(x, GRID.modes, GRID.std), total=100)
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    assert_close(out["reverse_kl"], (p * (25 * p).log()).sum().float())
    assert out["modes_covered"].item() == 2  # 10 < min_count = 20


def test_min_count_boundary():
    """A mode is covered at exactly ``min_count`` high-quality samples and not at one fewer."""
    x = torch.cat([_at_modes([0], 20), _at_modes([1], 19)])
    out = toy_mode_statistics(toy_mode_counts(x, GRID.modes, GRID.std), total=39, min_count=20)
    assert out["modes_covered"].item() == 1
    assert toy_mode_statistics(toy_mode_counts(x, GRID.modes, GRID.std), total=39, min_count=19)["modes_covered"].item() == 2


def test_high_quality_radius_is_num_std_stds():
    """A point at 2.9 std from a mode is high quality, one at 3.1 std is not (num_std = 3); num_std moves the edge."""
    mode = GRID.modes[6]
    inside = mode + torch.tensor([2.9 * GRID.std, 0.0])
    outside = mode + torch.tensor([0.0, -3.1 * GRID.std])
    counts = toy_mode_counts(torch.stack([inside, outside]), GRID.modes, GRID.std)
    assert counts[6].item() == 1 and counts.sum().item() == 1
    assert toy_mode_counts(torch.stack([inside, outside]), GRID.modes, GRID.std, num_std=3.2).sum().item() == 2


def test_samples_far_from_modes_have_no_quality():
    """Points on the odd lattice (sqrt 2 = 28 std from every mode): 0 % hq, 0 modes, reverse KL undefined (inf)."""
    odd = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    x = torch.cartesian_prod(odd, odd).repeat(10, 1)
    metric = _metric()
    metric.update(x)
    out = metric.compute()
    assert out["hq_percent"].item() == 0.0
    assert out["modes_covered"].item() == 0
    assert math.isinf(out["reverse_kl"].item())


def test_hq_percent_counts_low_quality_samples_in_the_total():
    """300 good samples plus 100 far ones: 75 % hq, while KL is over the good ones only (still log(25/3))."""
    good = _at_modes([0, 7, 19], per_mode=100)
    far = torch.full((100, 2), 1.0)
    metric = _metric()
    metric.update(torch.cat([good, far]))
    out = metric.compute()
    assert_close(out["hq_percent"], torch.tensor(75.0))
    assert_close(out["reverse_kl"], torch.tensor(math.log(25 / 3)))


def test_metric_accumulates_across_updates_like_one_call():
    """Uneven chunks fed one by one give exactly the counts, total and results of a single update; reset clears."""
    x, _ = GRID.sample(3000, generator=torch.Generator().manual_seed(3))
    x[::7] += 0.5  # some low-quality samples so hq_percent is not trivially ~99
    whole, parts = _metric(), _metric()
    whole.update(x)
    for chunk in torch.split(x, [1000, 1, 1499, 500]):
        parts.update(chunk)
    assert torch.equal(whole.counts, parts.counts) and whole.total.item() == parts.total.item() == 3000
    a, b = whole.compute(), parts.compute()
    for key in a:
        assert_close(a[key], b[key], rtol=0, atol=0)
    assert 80.0 < a["hq_percent"].item() < 88.0  # 1 - 1/7 of 98.9 % = 84.8 %
    parts.reset()
    assert parts.counts.sum().item() == 0 and parts.total.item() == 0


def test_metric_rejects_wrong_dimensions():
    """Modes must be (K, D) and samples must have D values each."""
    with pytest.raises(ValueError, match="modes must have shape"):
        ToyModeMetrics(torch.zeros(25), std=0.05)
    with pytest.raises(ValueError, match="modes must have shape"):
        ToyModeMetrics(torch.zeros(2, 5, 2), std=0.05)
    metric = _metric()
    with pytest.raises(ValueError, match="3 values each"):
        metric.update(torch.zeros(10, 3))
    metric.update(torch.zeros(10, 1, 2))  # (N, 1, 2) flattens to 2-D points: accepted
    assert metric.total.item() == 10 and metric.counts[12].item() == 10  # mode (0, 0) is index 12
