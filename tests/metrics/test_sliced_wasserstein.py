"""Tests for lightning_gen/metrics/sliced_wasserstein.py against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.metrics import SlicedWassersteinDistance, sliced_wasserstein_distance


def test_identical_sets_are_at_distance_zero():
    x = torch.randn(500, 3, 4, 4)
    assert sliced_wasserstein_distance(x, x.clone()[torch.randperm(500)]).item() == pytest.approx(0.0, abs=1e-6)


def test_one_dimensional_sets_give_the_exact_wasserstein_distance():
    # In 1-D every direction is +-1, so SW_p = W_p: the mean |gap| between sorted samples.
    x = torch.tensor([[0.0], [1.0], [5.0]])
    y = torch.tensor([[2.0], [0.5], [1.0]])  # sorted: 0.5, 1, 2 -> gaps 0.5, 0, 3
    assert sliced_wasserstein_distance(x, y, p=1).item() == pytest.approx((0.5 + 0 + 3) / 3, rel=1e-6)
    assert sliced_wasserstein_distance(x, y, p=2).item() == pytest.approx(math.sqrt((0.25 + 0 + 9) / 3), rel=1e-6)


def test_shifted_gaussians_match_the_closed_form():
    # For N(0, I) and N(m, I) in d dimensions each slice is a shift by theta.m, so
    # SW_2^2 = E_theta[(theta.m)^2] = |m|^2 / d for theta uniform on the sphere.
    g = torch.Generator().manual_seed(0)
    d, n = 8, 20_000
    m = torch.tensor([3.0, -1.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, d, generator=g) + m
    sw = sliced_wasserstein_distance(x, y, num_projections=2000, generator=g).item()
    expected = math.sqrt(m.pow(2).sum().item() / d)
    assert sw == pytest.approx(expected, rel=0.05)
    # scaling both sets scales the distance
    sw2 = sliced_wasserstein_distance(2 * x, 2 * y, num_projections=2000, generator=torch.Generator().manual_seed(1))
    assert sw2.item() == pytest.approx(2 * expected, rel=0.05)


def test_errors_are_named():
    with pytest.raises(ValueError, match="equal size"):
        sliced_wasserstein_distance(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="different sizes"):
        sliced_wasserstein_distance(torch.zeros(3, 2), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="real and generated"):
        SlicedWassersteinDistance().compute()


def test_metric_accumulates_batches_like_the_function():
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g) * 2
    metric = SlicedWassersteinDistance(num_projections=64, seed=7)
    for chunk in range(3):
        metric.update(real[100 * chunk:100 * (chunk + 1)], real=True)
        metric.update(fake[100 * chunk:100 * (chunk + 1)], real=False)
    expected = sliced_wasserstein_distance(real, fake, 64, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(metric.compute(), expected)
