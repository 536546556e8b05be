"""Tests for lightning_gen/callbacks/translation.py: the translation grid's layout, fixed images and logging."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_gen import GAN
from lightning_gen.callbacks import TranslationGridCallback
from lightning_gen.modules.image_to_image import CycleGAN, Pix2Pix
from lightning_gen.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    PatchGANDiscriminator,
    ResnetGenerator,
    UNetGenerator,
)

SIZE = 8


class TwoWay:
    """CycleGAN-style stand-in: A -> B negates, B -> A adds 0.5."""

    def translate(self, x: Tensor, direction: str = "AtoB") -> Tensor:
        return -x if direction == "AtoB" else x + 0.5


class OneWay:
    """pix2pix-style stand-in: grayscale A -> RGB B, constant 0 (grey)."""

    def translate(self, a: Tensor) -> Tensor:
        return torch.zeros(a.shape[0], 3, *a.shape[2:])


def tile(grid: Tensor, row: int, col: int, size: int = SIZE) -> Tensor:
    """The ``(3, size, size)`` tile at ``(row, col)`` of a make_grid grid with 2-px padding."""
    top, left = 2 + row * (size + 2), 2 + col * (size + 2)
    return grid[:, top : top + size, left : left + size]


def test_two_way_grid_has_one_row_per_image_and_six_columns():
    cb = TranslationGridCallback(num_images=3)
    a = torch.rand(5, 1, SIZE, SIZE) * 2 - 1
    b = torch.rand(5, 1, SIZE, SIZE) * 2 - 1
    cb.set_images(a, b)
    grid = cb.render(TwoWay())
    assert grid.shape == (3, 2 + 3 * (SIZE + 2), 2 + 6 * (SIZE + 2))
    assert cb.last_grid is grid
    unit = lambda x: ((x + 1) / 2).clamp(0, 1).expand(3, -1, -1)  # noqa: E731
    for i in range(3):
        expected = [a[i], -a[i], -a[i] + 0.5, b[i], b[i] + 0.5, -(b[i] + 0.5)]
        for col, image in enumerate(expected):
            torch.testing.assert_close(tile(grid, i, col), unit(image), atol=1e-6, rtol=0)


def test_a_to_b_only_and_one_way_grids():
    a, b = torch.rand(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    cb = TranslationGridCallback(num_images=2, both_directions=False)
    cb.set_images(a, b)
    assert cb.render(TwoWay()).shape == (3, 2 + 2 * (SIZE + 2), 2 + 3 * (SIZE + 2))

    cb = TranslationGridCallback(num_images=2)
    cb.set_images(a, b)  # pix2pix-style: A, G(A), B; the grayscale A/B are shown as RGB next to the RGB output
    grid = cb.render(OneWay())
    assert grid.shape == (3, 2 + 2 * (SIZE + 2), 2 + 3 * (SIZE + 2))
    torch.testing.assert_close(tile(grid, 1, 1), torch.full((3, SIZE, SIZE), 0.5))
    torch.testing.assert_close(tile(grid, 1, 2), ((b[1] + 1) / 2).expand(3, -1, -1))


@pytest.mark.parametrize(
    "kwargs", [{"num_images": 0}, {"every_n_epochs": 0}, {"split": "train"}, {"key": ""}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        TranslationGridCallback(**kwargs)


def test_render_before_images_raises():
    with pytest.raises(RuntimeError, match="set_images"):
        TranslationGridCallback().render(TwoWay())


class PairSet(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.a = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1
        self.b = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"a": self.a[i], "b": self.b[i]}


class PairData(L.LightningDataModule):
    def __init__(self, with_val: bool = True) -> None:
        super().__init__()
        self.train, self.val, self.with_val = PairSet(4, 0), PairSet(3, 1), with_val

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=2, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=2) if self.with_val else []


def tiny_cyclegan() -> CycleGAN:
    g = lambda: ResnetGenerator(3, 3, base_channels=4, num_blocks=1)  # noqa: E731
    d = lambda: PatchGANDiscriminator(3, base_channels=4, num_layers=1)  # noqa: E731
    return CycleGAN(g(), g(), d(), d(), pool_size=0)


def tiny_pix2pix() -> Pix2Pix:
    return Pix2Pix(UNetGenerator(3, 3, base_channels=4, num_downs=3), PatchGANDiscriminator(6, 4, num_layers=1))


@pytest.mark.parametrize("make, columns", [(tiny_cyclegan, 6), (tiny_pix2pix, 3)], ids=["cyclegan", "pix2pix"])
def test_fit_logs_grids_of_the_fixed_val_images(make, columns, tiny_trainer_kwargs, tmp_path):
    cb = TranslationGridCallback(num_images=3, every_n_epochs=1)
    data = PairData()
    trainer = L.Trainer(max_epochs=2, callbacks=[cb], limit_val_batches=0, **tiny_trainer_kwargs)
    trainer.fit(make(), datamodule=data)
    torch.testing.assert_close(cb.images[0], data.val.a[:3])
    torch.testing.assert_close(cb.images[1], data.val.b[:3])
    assert cb.last_grid.shape == (3, 2 + 3 * (SIZE + 2), 2 + columns * (SIZE + 2))
    assert cb.last_grid.min() >= 0 and cb.last_grid.max() <= 1
    pngs = sorted(p.name for p in (tmp_path / "images").glob("translation_step*.png"))
    assert pngs == ["translation_step2.png", "translation_step4.png"]  # one per epoch; train end already logged


def test_fit_without_val_images_falls_back_to_training_images(tiny_trainer_kwargs):
    cb = TranslationGridCallback(num_images=2)
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], limit_val_batches=0, **tiny_trainer_kwargs)
    with pytest.warns(UserWarning, match="no val images"):
        trainer.fit(tiny_pix2pix(), datamodule=PairData(with_val=False))
    assert cb.images[0].shape == (2, 3, SIZE, SIZE)


def test_module_without_translate_is_rejected(tiny_trainer_kwargs):
    gan = GAN(DCGANGenerator(latent_dim=4, image_size=28, channels=1, base_channels=4),
              DCGANDiscriminator(image_size=28, channels=1, base_channels=4))
    trainer = L.Trainer(max_epochs=1, callbacks=[TranslationGridCallback()], **tiny_trainer_kwargs)
    with pytest.raises(TypeError, match="translate"):
        trainer.fit(gan, datamodule=PairData())
