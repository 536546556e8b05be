"""Small image data and a model for the metrics-callback tests (also imported by the DDP script beside it).

``BlobImages``: 1 x 16 x 16 images of a bright Gaussian blob whose position is the class (three classes), plus pixel
noise, in [-1, 1]. ``BlobSampler``: a generative module whose ``sample()`` draws the same kind of images, with the
blobs moved by ``shift`` pixels (``shift=0``: the data distribution itself).
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import GenerativeModule

SIZE = 16
CENTERS = ((4.0, 4.0), (4.0, 11.0), (11.0, 8.0))


def blobs(labels: Tensor, generator: torch.Generator, shift: float = 0.0) -> Tensor:
    """Images ``(N, 1, 16, 16)`` in [-1, 1]: a blob of width 2 px at each label's centre (+ ``shift``), plus noise."""
    centers = torch.tensor(CENTERS)[labels] + shift
    jitter = 0.7 * torch.randn(len(labels), 2, generator=generator)
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    cy, cx = (centers + jitter).unbind(1)
    d2 = (ys[None] - cy[:, None, None]) ** 2 + (xs[None] - cx[:, None, None]) ** 2
    images = torch.exp(-d2 / 8.0) * 2 - 1 + 0.1 * torch.randn(len(labels), SIZE, SIZE, generator=generator)
    return images.clamp(-1, 1)[:, None]


class BlobImages(L.LightningDataModule):
    """Seeded train/test splits of blob images with their class labels."""

    def __init__(self, train_size: int = 600, test_size: int = 300, batch_size: int = 100, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.image_shape = (1, SIZE, SIZE)
        self.num_classes = len(CENTERS)
        g = torch.Generator().manual_seed(seed)
        self.splits = {}
        for split, n in (("train", train_size), ("test", test_size)):
            labels = torch.randint(0, self.num_classes, (n,), generator=g)
            self.splits[split] = TensorDataset(blobs(labels, g), labels)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return DataLoader(self.splits["train"], batch_size=self.hparams.batch_size, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        """Test batches in order."""
        return DataLoader(self.splits["test"], batch_size=self.hparams.batch_size)


class BlobSampler(GenerativeModule):
    """Samples blob images (class ``i % 3`` for sample ``i``) moved by ``shift`` px; trains a dummy parameter."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift
        self.dummy = nn.Parameter(torch.zeros(1))
        self.sample_calls: list[int] = []

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, **condition: Any) -> Tensor:
        """``num_samples`` blob images; a seeded ``generator`` makes them reproducible."""
        self.sample_calls.append(num_samples)
        g = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
        return blobs(torch.arange(num_samples) % len(CENTERS), g, self.shift).to(self.device)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """A loss that moves the dummy parameter."""
        return (self.dummy - batch[0].mean()).pow(2).sum()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing: the metrics callback does the testing."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SmallConvFeatures(nn.Module):
    """A fixed random conv net: 1 x 16 x 16 images -> 12 features (seeded, so every process builds the same)."""

    num_features = 12

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            self.net = nn.Sequential(nn.Conv2d(1, 6, 5, stride=2), nn.Tanh(), nn.Conv2d(6, 12, 3, stride=2),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(N, 12)``."""
        return self.net(x)
