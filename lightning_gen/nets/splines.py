"""Monotonic rational-quadratic splines (Gregory & Delbourgo 1982) as used by neural spline flows (Durkan et al.
2019, "Neural Spline Flows", section 3.1), with linear (identity) tails outside ``[-bound, bound]``.

The spline maps ``[-bound, bound]`` onto itself through ``K`` bins. Its knots ``(x_k, y_k)``, ``k = 0..K``, and the
derivatives ``d_k`` at them come from unconstrained parameters: bin widths and heights through a softmax (each bin at
least ``min_bin_width`` / ``min_bin_height`` of the interval), interior derivatives through a softplus shifted so that
a zero parameter gives ``d = 1`` (at least ``min_derivative``). The boundary derivatives are 1, so the spline joins
the identity tails with a continuous first derivative, and all-zero parameters give the identity map.

Inside bin ``k``, with ``xi = (x - x_k) / w_k`` and ``s_k = h_k / w_k`` (Durkan et al. 2019, eqs. 4-6, and appendix A
for the inverse):

    y = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))
    dy/dx = s_k^2 (d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))^2

The arithmetic runs in float32 at least (float64 for float64 inputs), also when the parameters come from a net
running under ``torch.autocast``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rational_quadratic_spline", "spline_parameter_count"]


def spline_parameter_count(num_bins: int) -> int:
    """Unconstrained parameters per transformed value: ``num_bins`` widths and heights, ``num_bins - 1`` derivatives."""
    return 3 * int(num_bins) - 1


def _knots(raw: Tensor, min_size: float, bound: float) -> tuple[Tensor, Tensor]:
    """Bin sizes and the ``K + 1`` knot positions in ``[-bound, bound]`` from unnormalized sizes ``(..., K)``."""
    num_bins = raw.shape[-1]
    sizes = min_size + (1.0 - min_size * num_bins) * torch.softmax(raw, dim=-1)
    cum = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    knots = 2.0 * bound * cum - bound
    knots = torch.cat([knots.new_full(knots.shape[:-1] + (1,), -bound), knots[..., 1:-1],
                       knots.new_full(knots.shape[:-1] + (1,), bound)], dim=-1)  # exact ends
    return knots[..., 1:] - knots[..., :-1], knots


def _bin_index(knots: Tensor, values: Tensor) -> Tensor:
    """The bin ``k`` with ``knots[k] <= value`` (the last bin for the right end), shape ``(..., 1)``."""
    return (values.unsqueeze(-1) >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)


def rational_quadratic_spline(
    inputs: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    inverse: bool = False,
    bound: float = 5.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise; returns ``(outputs, log|d outputs / d inputs|)``, both shaped
    like ``inputs``.

    Args:
        inputs: values of any shape ``S``; those outside ``[-bound, bound]`` pass through unchanged (log-det 0).
        widths: unnormalized bin widths, shape ``S + (K,)``.
        heights: unnormalized bin heights, shape ``S + (K,)``.
        derivatives: unconstrained derivatives at the ``K - 1`` interior knots, shape ``S + (K - 1,)``.
        inverse: apply the inverse spline; the log-determinant is then that of the inverse (minus the forward's).
        bound: the spline's half-width ``B``.
        min_bin_width, min_bin_height: the least share of ``[-B, B]`` one bin takes (``K * min < 1``).
        min_derivative: the least derivative at an interior knot.
    """
    num_bins = widths.shape[-1]
    if num_bins < 1 or heights.shape[-1] != num_bins or derivatives.shape[-1] != num_bins - 1:
        raise ValueError(
            f"a {num_bins}-bin spline needs {num_bins} widths, {num_bins} heights and {num_bins - 1} interior "
            f"derivatives (last dimension), got {widths.shape[-1]}, {heights.shape[-1]} and {derivatives.shape[-1]}"
        )
    for name, p in (("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        if p.shape[:-1] != inputs.shape:
            raise ValueError(f"{name} must have shape inputs.shape + (n,), got {tuple(p.shape)} for inputs "
                             f"{tuple(inputs.shape)}")
    if not bound > 0:
        raise ValueError(f"bound must be positive, got {bound}")
    if not (0 <= min_bin_width * num_bins < 1 and 0 <= min_bin_height * num_bins < 1):
        raise ValueError(f"num_bins * min_bin_width and num_bins * min_bin_height must be below 1, got {num_bins} bins "
                         f"with minima {min_bin_width} and {min_bin_height}")
    if not 0 < min_derivative < 1:
        raise ValueError(f"min_derivative must be in (0, 1), got {min_derivative}")

    dtype = torch.promote_types(inputs.dtype, torch.float32)
    x = inputs.to(dtype)
    bin_widths, x_knots = _knots(widths.to(dtype), min_bin_width, bound)
    bin_heights, y_knots = _knots(heights.to(dtype), min_bin_height, bound)
    shift = math.log(math.expm1(1.0 - min_derivative))  # softplus(0 + shift) + min_derivative = 1
    interior = min_derivative + F.softplus(derivatives.to(dtype) + shift)
    ones = interior.new_ones(interior.shape[:-1] + (1,))
    slopes = torch.cat([ones, interior, ones], dim=-1)  # boundary derivatives 1: C1 joins with the identity tails

    inside = (x >= -bound) & (x <= bound)
    clamped = x.clamp(-bound, bound)  # tail entries run the spline on a harmless value, then are replaced
    k = _bin_index(y_knots if inverse else x_knots, clamped)
    x_k = x_knots.gather(-1, k).squeeze(-1)
    y_k = y_knots.gather(-1, k).squeeze(-1)
    w = bin_widths.gather(-1, k).squeeze(-1)
    h = bin_heights.gather(-1, k).squeeze(-1)
    d0 = slopes.gather(-1, k).squeeze(-1)
    d1 = slopes.gather(-1, k + 1).squeeze(-1)
    s = h / w
    curvature = d1 + d0 - 2.0 * s

    if inverse:
        dy = clamped - y_k
        a = h * (s - d0) + dy * curvature
        b = h * d0 - dy * curvature
        c = -s * dy
        disc = (b * b - 4.0 * a * c).clamp_min(0.0)
        xi = ((2.0 * c) / (-b - torch.sqrt(disc))).clamp(0.0, 1.0)  # the stable root (appendix A)
        out = x_k + xi * w
    else:
        xi = ((clamped - x_k) / w).clamp(0.0, 1.0)
    mix = xi * (1.0 - xi)
    denominator = s + curvature * mix
    if not inverse:
        out = y_k + h * (s * xi * xi + d0 * mix) / denominator
    log_slope = (2.0 * torch.log(s) + torch.log(d1 * xi * xi + 2.0 * s * mix + d0 * (1.0 - xi) ** 2)
                 - 2.0 * torch.log(denominator))
    if inverse:
        log_slope = -log_slope
    return torch.where(inside, out, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))
