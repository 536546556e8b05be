"""Tests for lightning_gen/callbacks/domains.py: the domain-translation grid of StarGAN."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_gen.callbacks import DomainTranslationGridCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
from test_stargan import SIZE, DomainImages, make_stargan  # noqa: E402


def _fit(model: L.LightningModule, data: L.LightningDataModule, callback: L.Callback, tmp_path: Path) -> None:
    L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(tmp_path),
              callbacks=[callback]).fit(model, data)


def _cell(grid: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """One image of a make_grid grid (2-pixel padding), first channel."""
    top, left = 2 + row * (SIZE + 2), 2 + col * (SIZE + 2)
    return grid[0, top:top + SIZE, left:left + SIZE]


def test_rows_hold_the_input_then_each_domain(tmp_path):
    model, data = make_stargan(base=4, n_critic=1), DomainImages()
    callback = DomainTranslationGridCallback(num_images=4)
    _fit(model, data, callback, tmp_path)
    grid = callback.last_grid
    assert grid.shape == (3, 4 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2)  # 4 rows; input + 3 domains
    images, domains = next(iter(data.val_dataloader()))
    assert torch.equal(callback.images, images[:4]) and torch.equal(callback.domains, domains[:4])
    for k in range(3):
        translated = model.translate(images[:4], k)
        for row in range(4):
            torch.testing.assert_close(_cell(grid, row, 0), ((images[row, 0] + 1) / 2).clamp(0, 1))
            torch.testing.assert_close(_cell(grid, row, k + 1), ((translated[row, 0] + 1) / 2).clamp(0, 1))
    assert sorted(tmp_path.rglob("domain_translations_step1.png"))


def test_multi_label_rows_flip_each_attribute_of_the_image(tmp_path):
    model, data = make_stargan(num_domains=2, multi_label=True, base=4, n_critic=1), DomainImages(multi_label=True)
    callback = DomainTranslationGridCallback(num_images=2)
    _fit(model, data, callback, tmp_path)
    images, attributes = callback.images, callback.domains
    flipped = attributes.clone()
    flipped[:, 1] = 1 - flipped[:, 1]
    expected = model.translate(images, flipped)
    torch.testing.assert_close(_cell(callback.last_grid, 1, 2), ((expected[1, 0] + 1) / 2).clamp(0, 1))
    callback.domains = None
    with pytest.raises(ValueError, match="own attributes"):
        callback.render(model)


def test_errors():
    with pytest.raises(ValueError, match="num_images"):
        DomainTranslationGridCallback(num_images=0)
    with pytest.raises(ValueError, match="split"):
        DomainTranslationGridCallback(split="train")
    with pytest.raises(RuntimeError, match="no images yet"):
        DomainTranslationGridCallback().render(make_stargan(base=4))
    with pytest.raises(TypeError, match="translate_to_each_domain"):
        DomainTranslationGridCallback().on_fit_start(None, torch.nn.Linear(1, 1))
