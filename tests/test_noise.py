"""Tests of lightning_gen/noise.py: the truncated normal of the truncation trick (Brock et al. 2019)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from lightning_gen.noise import randn, truncated_randn


def _phi(t: float) -> float:
    return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)


def _mass(t: float) -> float:
    return math.erf(t / math.sqrt(2))  # 2 Phi(t) - 1


def truncated_moments(t: float) -> tuple[float, float]:
    """E[z^2] and E[z^4] of N(0, 1) truncated to [-t, t] (integration by parts of z^n phi(z))."""
    m2 = 1 - 2 * t * _phi(t) / _mass(t)
    m4 = 3 * m2 - 2 * t**3 * _phi(t) / _mass(t)
    return m2, m4


N = 200_000


@pytest.mark.parametrize("t", [0.25, 0.5, 1.0, 2.0])
def test_truncated_randn_moments_match_the_truncated_normal(t: float) -> None:
    z = truncated_randn((N // 100, 100), t, torch.Generator().manual_seed(0)).double().flatten()
    assert z.shape == (N,)
    assert float(z.abs().max()) <= t
    m2, m4 = truncated_moments(t)
    # four standard errors either side: the mean's is sqrt(m2 / n), the variance's sqrt((m4 - m2^2) / n)
    assert abs(float(z.mean())) <= 4 * math.sqrt(m2 / N)
    assert abs(float(z.var()) - m2) <= 4 * math.sqrt((m4 - m2**2) / N)


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_truncated_randn_passes_a_ks_test_that_clamping_fails(t: float) -> None:
    g = torch.Generator().manual_seed(1)
    z = truncated_randn((20_000,), t, g).double().numpy()
    cdf = stats.truncnorm(-t, t).cdf
    assert stats.kstest(z, cdf).pvalue > 1e-3
    # the test has the power to see the wrong recipe: clamping piles the tails onto +-t
    clamped = randn((20_000,), torch.Generator().manual_seed(1)).clamp(-t, t).double().numpy()
    assert stats.kstest(clamped, cdf).pvalue < 1e-6


def test_truncation_none_is_randn_with_the_same_generator() -> None:
    a = truncated_randn((64, 100), None, torch.Generator().manual_seed(3))
    b = randn((64, 100), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_truncated_randn_is_reproducible_and_leaves_inside_values_alone() -> None:
    a = truncated_randn((256, 8), 1.0, torch.Generator().manual_seed(5))
    b = truncated_randn((256, 8), 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    plain = randn((256, 8), torch.Generator().manual_seed(5))
    inside = plain.abs() <= 1.0
    assert torch.equal(a[inside], plain[inside])  # only the values outside are redrawn
    assert not torch.equal(a[~inside], plain[~inside])


def test_truncated_randn_keeps_shape_dtype_and_the_global_rng() -> None:
    state = torch.get_rng_state()
    z = truncated_randn((3, 4, 5), 0.1, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(torch.get_rng_state(), state)
    assert z.shape == (3, 4, 5) and z.dtype == torch.float64 and float(z.abs().max()) <= 0.1
    assert truncated_randn((0, 4), 1.0).shape == (0, 4)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_truncated_randn_rejects_bad_thresholds(bad: object) -> None:
    with pytest.raises(ValueError, match="truncation must be a positive number"):
        truncated_randn((2, 2), bad)  # type: ignore[arg-type]
