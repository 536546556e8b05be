"""Noise ladders for score matching: the geometric sequence of Gaussian noise levels of NCSN (Song & Ermon 2019).

Indexing follows :mod:`lightning_gen.diffusion.schedules`: level ``i`` in ``0 .. L-1`` has noise ``sigmas[i]``, with
level 0 the smallest (``sigma_min``) and level ``L-1`` the largest (``sigma_max``), so sampling visits the levels
from ``L-1`` down to 0 as a diffusion chain visits its steps. (The paper numbers them the other way: its
``sigma_1 > ... > sigma_L``.) The perturbed data at level ``i`` is ``x + sigmas[i] z``, ``z ~ N(0, I)``.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from lightning_gen.noise import randint

__all__ = ["geometric_sigmas", "NoiseLadder"]


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """``num_levels`` noise levels in geometric progression from ``sigma_min`` up to ``sigma_max`` (both kept),
    ascending, float64 (Song & Ermon 2019, sec. 4.2: a common ratio ``sigma_{i+1} / sigma_i``)."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be a positive int, got {num_levels!r}")
    if not (0.0 < sigma_min <= sigma_max and math.isfinite(sigma_max)):
        raise ValueError(
            f"the noise levels need 0 < sigma_min <= sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )
    if num_levels == 1:
        if sigma_min != sigma_max:
            raise ValueError(f"one noise level needs sigma_min == sigma_max, got {sigma_min} and {sigma_max}")
        return torch.tensor([float(sigma_min)], dtype=torch.float64)
    if sigma_min == sigma_max:
        raise ValueError(f"{num_levels} noise levels need sigma_min < sigma_max, got both {sigma_min}")
    return torch.logspace(math.log10(sigma_min), math.log10(sigma_max), num_levels, dtype=torch.float64)


class NoiseLadder(nn.Module):
    """The noise levels ``sigmas`` (ascending, a float32 buffer that follows the module across devices) with the
    perturbation ``x + sigma z`` and the uniform choice of a level per training example."""

    sigmas: Tensor

    def __init__(self, sigmas: Union[Tensor, list[float]]) -> None:
        """Hold ``sigmas`` (positive, strictly ascending); :meth:`geometric` builds NCSN's ladder."""
        super().__init__()
        values = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        if values.numel() < 1 or not torch.isfinite(values).all() or (values <= 0).any():
            raise ValueError(f"noise levels must be positive and finite, got {values.tolist()}")
        if (values[1:] <= values[:-1]).any():
            raise ValueError(f"noise levels must be strictly ascending (level 0 the smallest), got {values.tolist()}")
        self.register_buffer("sigmas", values.float())

    @classmethod
    def geometric(cls, sigma_max: float, sigma_min: float, num_levels: int) -> "NoiseLadder":
        """NCSN's ladder: :func:`geometric_sigmas`."""
        return cls(geometric_sigmas(sigma_max, sigma_min, num_levels))

    @property
    def num_levels(self) -> int:
        """The number of noise levels L."""
        return int(self.sigmas.numel())

    @property
    def sigma_min(self) -> float:
        """The smallest level, ``sigmas[0]``."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """The largest level, ``sigmas[-1]``."""
        return float(self.sigmas[-1])

    def extra_repr(self) -> str:
        """The number of levels and their range."""
        return f"num_levels={self.num_levels}, sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g}"

    def sample_levels(
        self, batch_size: int, generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None
    ) -> Tensor:
        """One level per example, uniform over ``0 .. L-1`` (a LongTensor ``(batch_size,)``)."""
        return randint(self.num_levels, (batch_size,), generator, device if device is not None else self.sigmas.device)

    def sigma(self, levels: Union[Tensor, int], ndim: int = 1) -> Tensor:
        """The noise of ``levels`` (a LongTensor ``(B,)`` or an int), shaped ``(B, 1, ..., 1)`` to broadcast over an
        ``ndim``-dimensional batch (a 0-d tensor for an int)."""
        if isinstance(levels, int):
            return self.sigmas[levels]
        return self.sigmas[levels.to(self.sigmas.device)].reshape(-1, *([1] * (ndim - 1)))

    def perturb(self, x: Tensor, levels: Union[Tensor, int], noise: Tensor) -> Tensor:
        """``x + sigma_level * noise``: the data perturbed at ``levels``."""
        if noise.shape != x.shape:
            raise ValueError(f"noise and x must have the same shape, got {tuple(noise.shape)} and {tuple(x.shape)}")
        return x + self.sigma(levels, x.dim()).to(x.dtype) * noise
