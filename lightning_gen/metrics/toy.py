"""Mode coverage, sample quality and reverse KL of samples from a toy Gaussian mixture (VEEGAN/PacGAN protocol)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["toy_mode_counts", "toy_mode_statistics", "ToyModeMetrics"]


def toy_mode_counts(samples: Tensor, modes: Tensor, std: float, num_std: float = 3.0) -> Tensor:
    """Per-mode counts of high-quality samples: those within ``num_std`` std of their nearest mode, ``(K,)``."""
    samples = samples.reshape(samples.shape[0], -1).float()
    modes = modes.to(samples)
    dist, nearest = torch.cdist(samples, modes, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    hq = dist <= num_std * std
    return torch.bincount(nearest[hq], minlength=modes.shape[0]).to(torch.long)


def toy_mode_statistics(counts: Tensor, total: int | Tensor, min_count: int = 20) -> dict[str, Tensor]:
    """Modes covered, % high-quality samples and reverse KL(generated mode histogram || uniform) from counts.

    A mode counts as covered with at least ``min_count`` high-quality samples (PacGAN: 20 of 2,500). The reverse KL
    is taken over the high-quality samples' mode histogram (0 log 0 = 0), in nats.
    """
    counts = counts.double()
    num_hq = counts.sum()
    k = counts.numel()
    covered = (counts >= min_count).sum()
    hq_percent = 100.0 * num_hq / torch.as_tensor(total, dtype=torch.double).clamp_min(1)
    p = counts / num_hq.clamp_min(1)
    nz = p > 0
    reverse_kl = (p[nz] * (p[nz] * k).log()).sum() if num_hq > 0 else torch.tensor(float("inf"), dtype=torch.double)
    return {"modes_covered": covered.float(), "hq_percent": hq_percent.float(), "reverse_kl": reverse_kl.float()}


class ToyModeMetrics(Metric):
    """Modes covered, % high-quality samples and reverse KL of generated samples; sums its counts across ranks."""

    full_state_update = False
    higher_is_better: Optional[bool] = None

    def __init__(self, modes: Tensor, std: float, num_std: float = 3.0, min_count: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        modes = torch.as_tensor(modes, dtype=torch.float32)
        if modes.dim() != 2:
            raise ValueError(f"modes must have shape (K, D), got {tuple(modes.shape)}")
        self.register_buffer("modes", modes, persistent=False)
        self.std = float(std)
        self.num_std = float(num_std)
        self.min_count = int(min_count)
        self.add_state("counts", default=torch.zeros(modes.shape[0], dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        """Add a batch of generated samples ``(N, D)``."""
        if samples.reshape(samples.shape[0], -1).shape[1] != self.modes.shape[1]:
            raise ValueError(f"samples have {samples[0].numel()} values each but the modes are {self.modes.shape[1]}-D")
        self.counts += toy_mode_counts(samples, self.modes, self.std, self.num_std)
        self.total += samples.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """``modes_covered``, ``hq_percent`` and ``reverse_kl`` over everything seen."""
        return toy_mode_statistics(self.counts, self.total, self.min_count)
