"""One helper per random idiom: draw on a ``torch.Generator``'s own device, then move to where the data lives.

A seeded CPU generator then gives the same numbers on any device, and nothing touches the global RNG when a
generator is given. Every layer (nets, losses, diffusion, metrics, modules) may import this module; it imports only
torch.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["randn", "rand", "randint"]

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
