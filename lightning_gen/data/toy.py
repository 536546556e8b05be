"""Toy Gaussian mixtures generated from a seed: the 2-D ring and grid of the VEEGAN/PacGAN protocol, and 1-D mixtures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen.data.resumable import ResumableDataLoader

__all__ = ["GaussianMixture", "make_mixture", "ToyGaussiansDataModule"]

MixtureName = Literal["ring", "grid", "gaussians_1d"]

# (num_modes, scale, std) per mixture: ring radius 1 / std 0.01 (VEEGAN, PacGAN); grid {-4,-2,0,2,4}^2 / std 0.05.
_DEFAULTS: dict[str, tuple[int, float, float]] = {
    "ring": (8, 1.0, 0.01),
    "grid": (25, 2.0, 0.05),
    "gaussians_1d": (2, 2.0, 0.5),
}


@dataclass(frozen=True)
class GaussianMixture:
    """An equal-weight mixture of isotropic Gaussians with the given ``modes`` (K, D) and common ``std``."""

    modes: Tensor
    std: float

    @property
    def dim(self) -> int:
        """Dimension of the data space."""
        return int(self.modes.shape[1])

    @property
    def num_modes(self) -> int:
        """Number of mixture components."""
        return int(self.modes.shape[0])

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points and their component labels."""
        labels = torch.randint(self.num_modes, (n,), generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return self.modes[labels] + self.std * noise, labels

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of each point of ``x`` (N, D) under the mixture."""
        modes = self.modes.to(x)
        sq = torch.cdist(x, modes, compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # exact for tiny std
        log_comp = -0.5 * sq / self.std**2 - 0.5 * self.dim * math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(log_comp, dim=1) - math.log(self.num_modes)


def make_mixture(
    name: MixtureName, num_modes: Optional[int] = None, scale: Optional[float] = None, std: Optional[float] = None
) -> GaussianMixture:
    """Build a named mixture; ``None`` arguments take the protocol defaults (ring: 8, 1, 0.01; grid: 25, 2, 0.05)."""
    if name not in _DEFAULTS:
        raise ValueError(f"Unknown mixture {name!r}. Choose one of {sorted(_DEFAULTS)}.")
    k0, s0, std0 = _DEFAULTS[name]
    k = k0 if num_modes is None else int(num_modes)
    scale = s0 if scale is None else float(scale)
    std = std0 if std is None else float(std)
    if k < 1:
        raise ValueError(f"num_modes must be >= 1, got {k}")
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    if name == "ring":
        angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
        modes = scale * torch.stack([angles.cos(), angles.sin()], dim=1)
    elif name == "grid":
        side = math.isqrt(k)
        if side * side != k:
            raise ValueError(f"the grid mixture needs a square number of modes (4, 9, 25, ...), got {k}")
        axis = scale * (torch.arange(side, dtype=torch.float64) - (side - 1) / 2)
        modes = torch.cartesian_prod(axis, axis)
    else:
        modes = torch.linspace(-scale, scale, k, dtype=torch.float64).unsqueeze(1) if k > 1 else torch.zeros(1, 1)
    return GaussianMixture(modes=modes.float(), std=std)


class _BatchedTensorDataset(TensorDataset):
    """A ``TensorDataset`` that gathers a whole batch with one indexing operation instead of one call per sample."""

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return [t[index] for t in self.tensors]


def _already_batched(batch: list[Tensor]) -> list[Tensor]:
    """Collate function for :class:`_BatchedTensorDataset`, whose fetch returns whole batches."""
    return batch


class ToyGaussiansDataModule(L.LightningDataModule):
    """Samples from a toy Gaussian mixture, generated from ``seed`` (no files); val/test/predict hold fresh draws."""

    def __init__(
        self,
        mixture: MixtureName = "grid",
        num_modes: Optional[int] = None,
        scale: Optional[float] = None,
        std: Optional[float] = None,
        train_size: int = 100_000,
        val_size: int = 2_500,
        batch_size: int = 256,
        predict_size: int = 2_500,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("train_size", train_size), ("val_size", val_size), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.save_hyperparameters()
        self.mixture = make_mixture(mixture, num_modes, scale, std)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._sets: dict[str, _BatchedTensorDataset] = {}

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``(D,)``."""
        return (self.mixture.dim,)

    def setup(self, stage: Optional[str] = None) -> None:
        """Draw the train/val/test sets from the mixture (identical on every rank for the same seed)."""
        if self._sets:
            return
        g = torch.Generator().manual_seed(self.hparams.seed)
        sizes = {"train": self.hparams.train_size, "val": self.hparams.val_size, "test": self.hparams.val_size}
        for split, n in sizes.items():
            x, y = self.mixture.sample(n, generator=g)
            self._sets[split] = _BatchedTensorDataset(x, y)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return ResumableDataLoader(
            self._sets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(self._sets[split]) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=_already_batched,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of ``(x, mode_label)``."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Held-out batches of ``(x, mode_label)``."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Held-out batches of ``(x, mode_label)`` drawn separately from validation."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of sample indices; a generative module's ``predict_step`` draws one sample per index."""
        return DataLoader(torch.arange(self.hparams.predict_size), batch_size=self.batch_size)
