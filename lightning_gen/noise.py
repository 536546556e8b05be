"""One helper per random idiom: draw on a ``torch.Generator``'s own device, then move to where the data lives.

A seeded CPU generator then gives the same numbers on any device, and nothing touches the global RNG when a
generator is given. Every layer (nets, losses, diffusion, metrics, modules) may import this module; it imports only
torch.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["randn", "truncated_randn", "check_truncation", "rand", "randint"]

Device = Union[str, torch.device, None]


def _draw(
    fn, shape: Sequence[int], generator: Optional[torch.Generator], device: Device, dtype: Optional[torch.dtype]
) -> Tensor:
    """``fn(shape)`` drawn on ``generator``'s device (when given), then moved to ``device``."""
    x = fn(tuple(shape), generator=generator, device=generator.device if generator is not None else device, dtype=dtype)
    return x.to(device) if device is not None else x


def randn(
    shape: Sequence[int],
    generator: Optional[torch.Generator] = None,
    device: Device = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """Standard normal numbers of ``shape`` on ``device``, drawn from ``generator`` (on its device) when given."""
    return _draw(torch.randn, shape, generator, device, dtype)


def check_truncation(threshold: Optional[float]) -> Optional[float]:
    """Return ``threshold`` as a float (``None`` stays ``None``); raise ``ValueError`` unless it is positive and finite."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold) \
            or threshold <= 0:
        raise ValueError(
            f"truncation must be a positive number (the largest |z| kept, e.g. 0.5 .. 2.0) or None for plain "
            f"N(0, 1) noise, got {threshold!r}"
        )
    return float(threshold)


def truncated_randn(
    shape: Sequence[int],
    threshold: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    device: Device = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """Standard normal numbers truncated to ``[-threshold, threshold]`` (the truncation trick, Brock et al. 2019).

    Every value whose magnitude exceeds ``threshold`` is redrawn until all lie within it, so each value is exactly a
    truncated standard normal. ``threshold=None`` is :func:`randn` itself: the same numbers from the same
    ``generator``. The redraws come in batches sized from the acceptance rate ``2 Phi(t) - 1``, so small thresholds
    take a few rounds, not thousands.
    """
    threshold = check_truncation(threshold)
    if threshold is None:
        return randn(shape, generator, device, dtype)
    where = device if generator is None else None  # draw on the generator's device, as randn does
    z = randn(shape, generator, where, dtype)
    if z.numel() > 0:
        flat = z.view(-1)
        accept = max(math.erf(threshold / math.sqrt(2.0)), 1e-12)  # P(|N(0, 1)| <= t) = 2 Phi(t) - 1
        bad = (flat.abs() > threshold).nonzero().squeeze(1)
        while bad.numel() > 0:
            # redraw enough candidates for the values still outside, and place the first ones inside, in order
            n = bad.numel()
            count = min(max(64, math.ceil(1.2 * n / accept)), 1 << 22)  # capped: a tiny threshold takes more rounds
            candidates = randn((count,), generator, where, dtype)
            kept = candidates[candidates.abs() <= threshold][:n]
            flat[bad[: kept.numel()]] = kept
            bad = bad[kept.numel():]
    return z.to(device) if device is not None else z


def rand(
    shape: Sequence[int],
    generator: Optional[torch.Generator] = None,
    device: Device = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """Uniform [0, 1) numbers of ``shape`` on ``device``, drawn from ``generator`` (on its device) when given."""
    return _draw(torch.rand, shape, generator, device, dtype)


def randint(
    high: int, shape: Sequence[int], generator: Optional[torch.Generator] = None, device: Device = None
) -> Tensor:
    """Integers uniform in ``[0, high)`` of ``shape`` on ``device``, drawn from ``generator`` when given."""
    x = torch.randint(0, high, tuple(shape), generator=generator,
                      device=generator.device if generator is not None else device)
    return x.to(device) if device is not None else x
