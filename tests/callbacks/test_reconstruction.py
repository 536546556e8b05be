"""Tests for lightning_gen/callbacks/reconstruction.py: rows of x over reconstruct(x), fixed images, PNG logging."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import BiGAN
from lightning_gen.callbacks import ReconstructionGridCallback
from lightning_gen.nets import ConvEncoder, DCGANGenerator, JointConvDiscriminator

SIZE = 28


class Negate:
    """Stand-in module whose reconstruction is ``-x``."""

    def reconstruct(self, x: Tensor) -> Tensor:
        return -x


def tile(grid: Tensor, row: int, col: int) -> Tensor:
    """The ``(3, SIZE, SIZE)`` tile at ``(row, col)`` of a make_grid grid with 2-px padding."""
    top, left = 2 + row * (SIZE + 2), 2 + col * (SIZE + 2)
    return grid[:, top:top + SIZE, left:left + SIZE]


def test_rows_of_originals_over_reconstructions_with_a_blank_padded_last_row():
    cb = ReconstructionGridCallback(num_images=5, nrow=3)
    images = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 1, SIZE, SIZE).clone()
    cb.set_images(images)
    grid = cb.render(Negate())
    assert grid.shape == (3, 4 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2)  # 2 pairs of rows, 3 columns
    for i in range(5):
        row, col = 2 * (i // 3), i % 3
        x = (images[i, 0, 0, 0].item() + 1) / 2
        assert tile(grid, row, col).mean().item() == pytest.approx(x, abs=1e-6)  # the original ...
        assert tile(grid, row + 1, col).mean().item() == pytest.approx(1 - x, abs=1e-6)  # ... over -x
    assert tile(grid, 2, 2).abs().max().item() == 0.0 and tile(grid, 3, 2).abs().max().item() == 0.0  # blank cells


def test_fit_logs_a_png_of_fixed_validation_images_without_a_logger(tmp_path):
    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.rand(16, 1, SIZE, SIZE) * 2 - 1, torch.zeros(16)), batch_size=8)

        def val_dataloader(self):
            return DataLoader(TensorDataset(torch.full((10, 1, SIZE, SIZE), 0.5), torch.zeros(10)), batch_size=4)

    torch.manual_seed(0)
    model = BiGAN(DCGANGenerator(4, SIZE, 1, 4), ConvEncoder(SIZE, 1, 4, 4), JointConvDiscriminator(SIZE, 1, 4, 4, 8))
    cb = ReconstructionGridCallback(num_images=6, nrow=6, every_n_epochs=None)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(tmp_path), callbacks=[cb])
    trainer.fit(model, Data())
    assert cb.images.shape == (6, 1, SIZE, SIZE) and torch.all(cb.images == 0.5)  # the first 6 validation images
    assert [p.name for p in (tmp_path / "images").glob("*.png")] == ["reconstructions_step2.png"]
    assert tile(cb.last_grid, 0, 0).mean().item() == pytest.approx(0.75, abs=1e-6)


def test_a_module_without_reconstruct_is_refused():
    with pytest.raises(TypeError, match="needs a module with reconstruct"):
        ReconstructionGridCallback().on_fit_start(None, object())  # type: ignore[arg-type]
