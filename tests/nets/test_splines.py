"""Tests of lightning_gen/nets/splines.py: the monotonic rational-quadratic spline with linear tails (Durkan et al.
2019): exact inverse, log-determinant against autograd, monotonicity, identity at zero parameters, knots and tails."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.nets.splines import rational_quadratic_spline, spline_parameter_count


def random_parameters(shape: tuple[int, ...], num_bins: int, scale: float, seed: int,
                      dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalized widths, heights and interior derivatives, N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(*shape, n, generator=g, dtype=dtype) for n in (num_bins, num_bins, num_bins - 1))


def derivative_parameter(d: float, min_derivative: float = 1e-3) -> float:
    """The unconstrained parameter that gives the interior derivative ``d`` (the module's softplus, inverted)."""
    shift = math.log(math.expm1(1.0 - min_derivative))
    return math.log(math.expm1(d - min_derivative)) - shift


@pytest.mark.parametrize("num_bins", [2, 5, 16])  # one bin with unit end slopes is the identity
def test_inverse_of_forward_is_the_identity_in_float64(num_bins):
    x = 4.0 * torch.randn(4000, generator=torch.Generator().manual_seed(num_bins), dtype=torch.float64)
    params = random_parameters(x.shape, num_bins, scale=2.0, seed=num_bins)
    y, log_det = rational_quadratic_spline(x, *params, bound=5.0)
    assert (x.abs() < 5).sum() > 3000 and (y - x).abs().max() > 0.5  # most inside, and far from the identity
    x_back, log_det_inverse = rational_quadratic_spline(y, *params, inverse=True, bound=5.0)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-8)
    torch.testing.assert_close(log_det_inverse, -log_det, rtol=0, atol=1e-8)


def test_inverse_of_forward_is_the_identity_to_1e5_in_float32():
    # float32 inversion is as well conditioned as the spline: where dy/dx is tiny, a rounding of y moves x by
    # eps |y| / (dy/dx); parameters of the size a zero-initialized net gives early on keep that below 1e-5
    x = 3.0 * torch.randn(20000, generator=torch.Generator().manual_seed(0))
    params = random_parameters(x.shape, 8, scale=0.3, seed=1, dtype=torch.float32)
    y, log_det = rational_quadratic_spline(x, *params, bound=5.0)
    assert y.dtype == torch.float32 and log_det.abs().max() > 0.3
    x_back, _ = rational_quadratic_spline(y, *params, inverse=True, bound=5.0)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("inverse", [False, True])
def test_log_det_matches_the_autograd_derivative(inverse):
    x = 6.0 * torch.rand(3000, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 3.0
    params = random_parameters(x.shape, 10, scale=1.5, seed=3)
    x.requires_grad_(True)
    y, log_det = rational_quadratic_spline(x, *params, inverse=inverse, bound=3.0)
    (slope,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the Jacobian is diagonal
    assert slope.min() > 0
    torch.testing.assert_close(log_det.detach(), slope.log(), rtol=0, atol=1e-9)


def test_spline_is_strictly_increasing_and_maps_the_interval_onto_itself():
    grid = torch.linspace(-7.0, 7.0, 4001, dtype=torch.float64).expand(6, -1)
    params = [p[:, None].expand(-1, grid.shape[1], -1) for p in random_parameters((6,), 12, scale=2.0, seed=4)]
    y, _ = rational_quadratic_spline(grid, *params, bound=5.0)
    assert (y.diff(dim=1) > 0).all()
    inside = grid[0].abs() <= 5.0
    assert y[:, inside].min() >= -5.0 and y[:, inside].max() <= 5.0
    ends = torch.tensor([-5.0, 5.0], dtype=torch.float64).expand(6, -1)
    y_ends, _ = rational_quadratic_spline(ends, *[p[:, :2] for p in params], bound=5.0)
    torch.testing.assert_close(y_ends, ends, rtol=0, atol=1e-12)


def test_zero_parameters_give_the_identity():
    x = 8.0 * torch.rand(1000, generator=torch.Generator().manual_seed(5)) - 4.0
    zeros = [torch.zeros(1000, n) for n in (7, 7, 6)]
    y, log_det = rational_quadratic_spline(x, *zeros, bound=3.0)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(log_det, torch.zeros(1000), rtol=0, atol=1e-6)


def test_knots_derivatives_and_a_bin_midpoint_match_the_closed_form():
    # three bins on [-2, 2] (min sizes 0): widths 1/4, 1/2, 1/4 of the interval put the x-knots at -2, -1, 1, 2;
    # heights 1/2, 1/4, 1/4 put the y-knots at -2, 0, 1, 2; interior derivatives 3 (at x = -1) and 1 (at x = 1)
    n = 7
    widths = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64).log().expand(n, 3)
    heights = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64).log().expand(n, 3)
    derivatives = torch.tensor([derivative_parameter(3.0), derivative_parameter(1.0)], dtype=torch.float64).expand(n, 2)
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, -3.5, 2.5], dtype=torch.float64, requires_grad=True)
    y, log_det = rational_quadratic_spline(x, widths, heights, derivatives, bound=2.0, min_bin_width=0.0,
                                           min_bin_height=0.0)
    # the middle bin at xi = 1/2: w = 2, h = 1, s = 1/2, d0 = 3, d1 = 1 ->
    # y = 0 + (s/4 + d0/4) / (s + (d1 + d0 - 2 s)/4) = 0.875 / 1.25 = 0.7
    expected = torch.tensor([-2.0, 0.0, 0.7, 1.0, 2.0, -3.5, 2.5], dtype=torch.float64)
    torch.testing.assert_close(y.detach(), expected, rtol=0, atol=1e-12)
    slopes = torch.tensor([1.0, 3.0, float("nan"), 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    known = ~slopes.isnan()
    torch.testing.assert_close(log_det.detach()[known], slopes[known].log(), rtol=0, atol=1e-9)
    # the derivative is continuous across a knot and into the tails
    for at, d in ((-1.0, 3.0), (1.0, 1.0), (2.0, 1.0), (-2.0, 1.0)):
        near = torch.tensor([at - 1e-7, at + 1e-7], dtype=torch.float64)
        _, ld = rational_quadratic_spline(near, widths[:2], heights[:2], derivatives[:2], bound=2.0,
                                          min_bin_width=0.0, min_bin_height=0.0)
        torch.testing.assert_close(ld.exp(), torch.full((2,), d, dtype=torch.float64), rtol=1e-5, atol=0)


def test_tails_are_the_identity_and_give_finite_zero_gradients():
    x = torch.tensor([-9.0, -5.0001, 5.0001, 40.0, 0.3])
    params = [p.requires_grad_(True) for p in random_parameters(x.shape, 6, 3.0, seed=6, dtype=torch.float32)]
    y, log_det = rational_quadratic_spline(x, *params, bound=5.0)
    assert torch.equal(y[:4], x[:4]) and torch.equal(log_det[:4], torch.zeros(4))
    grads = torch.autograd.grad(y.sum() + log_det.sum(), params)
    for g in grads:
        assert torch.isfinite(g).all() and torch.equal(g[:4], torch.zeros_like(g[:4]))
        assert g[4].abs().sum() > 0  # the entry inside the spline does train its parameters
    x_back, ld_inverse = rational_quadratic_spline(y, *[p.detach() for p in params], inverse=True, bound=5.0)
    assert torch.equal(x_back[:4], x[:4]) and torch.equal(ld_inverse[:4], torch.zeros(4))


def test_low_precision_parameters_are_evaluated_in_float32():
    x = torch.randn(50, generator=torch.Generator().manual_seed(7))
    params = random_parameters(x.shape, 4, 1.0, seed=8, dtype=torch.float32)
    y32, ld32 = rational_quadratic_spline(x, *params)
    y16, ld16 = rational_quadratic_spline(x, *[p.bfloat16() for p in params])
    assert y16.dtype == torch.float32 and ld16.dtype == torch.float32
    torch.testing.assert_close(y16, y32, rtol=0, atol=0.05)  # only the parameters were rounded


def test_bad_parameters_are_refused_with_what_to_fix():
    x = torch.zeros(3)
    good = [torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 3)]
    assert spline_parameter_count(4) == 11
    with pytest.raises(ValueError, match="4 widths, 4 heights and 3 interior derivatives"):
        rational_quadratic_spline(x, good[0], good[1], torch.zeros(3, 4))
    with pytest.raises(ValueError, match="inputs.shape"):
        rational_quadratic_spline(x, torch.zeros(2, 4), good[1], good[2])
    with pytest.raises(ValueError, match="bound must be positive"):
        rational_quadratic_spline(x, *good, bound=0.0)
    with pytest.raises(ValueError, match="below 1"):
        rational_quadratic_spline(x, *good, min_bin_width=0.25)
    with pytest.raises(ValueError, match="min_derivative"):
        rational_quadratic_spline(x, *good, min_derivative=0.0)
