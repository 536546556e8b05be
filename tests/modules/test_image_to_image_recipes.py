"""End-to-end tests of the image-to-image recipes (configs/{pix2pix,cyclegan}/folders.yaml) via `lightning-gen`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightning_gen
from lightning_gen.cli import GenerativeCLI, main

ROOT = Path(__file__).resolve().parents[2]
PIX2PIX = ROOT / "configs" / "pix2pix" / "folders.yaml"
CYCLEGAN = ROOT / "configs" / "cyclegan" / "folders.yaml"


def fake_folder(folder: Path, n: int = 6, size: int = 32, seed: int = 0) -> Path:
    """``n`` random RGB PNGs of ``size x size`` named 0.png ... in ``folder``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _common(config: Path, root: Path) -> list[str]:
    """Two generator steps, one val batch, CSV logging under ``root``."""
    return [
        f"--config={config}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.accelerator=cpu",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--data.num_workers=0",
        "--data.val_fraction=0.34",  # 2 of 6 images held out
        "--data.predict_size=2",
    ]


def _check_fit(root: Path) -> Path:
    last = next(root.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2  # generator steps
    assert sorted(root.rglob("translation_step*.png")), "the translation-grid callback wrote no PNG"
    return last


@pytest.mark.slow
def test_pix2pix_recipe_fits_tests_predicts_and_loads(tmp_path):
    data = tmp_path / "data"
    fake_folder(data / "A", seed=0)
    fake_folder(data / "B", seed=1)
    args = _common(PIX2PIX, tmp_path) + [
        f"--data.root={data}",
        "--data.image_size=32",
        "--data.load_size=36",
        "--model.generator.init_args.base_channels=4",
        "--model.generator.init_args.num_downs=5",
        "--model.discriminator.init_args.base_channels=4",
        "--model.discriminator.init_args.num_layers=2",
    ]
    main(["fit", *args])
    last = _check_fit(tmp_path)
    grid = np.asarray(Image.open(sorted(tmp_path.rglob("translation_step*.png"))[-1]))
    # 2 val images x (A, G(A), B): make_grid pads 2 px around 32 px tiles
    assert grid.shape == (2 + 2 * 34, 2 + 3 * 34, 3)

    cli = GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    assert torch.isfinite(cli.trainer.callback_metrics["test/l1"])
    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (2, 3, 32, 32) and samples.min() >= -1 and samples.max() <= 1

    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.Pix2Pix) and model.l1_weight == 100.0
    out = model.translate(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert out.shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_cyclegan_recipe_fits_tests_predicts_and_loads(tmp_path):
    root_a = fake_folder(tmp_path / "data" / "trainA", seed=0)
    root_b = fake_folder(tmp_path / "data" / "trainB", seed=1)
    args = _common(CYCLEGAN, tmp_path) + [
        f"--data.root_a={root_a}",
        f"--data.root_b={root_b}",
        "--data.image_size=16",
        "--data.load_size=20",
        "--model.pool_size=2",
    ]
    for net in ("generator_ab", "generator_ba"):
        args += [f"--model.{net}.init_args.base_channels=4", f"--model.{net}.init_args.num_blocks=1"]
    for net in ("discriminator_a", "discriminator_b"):
        args += [f"--model.{net}.init_args.base_channels=4", f"--model.{net}.init_args.num_layers=2"]
    main(["fit", *args])
    last = _check_fit(tmp_path)
    grid = np.asarray(Image.open(sorted(tmp_path.rglob("translation_step*.png"))[-1]))
    # 2 val images x (A, A->B, A->B->A, B, B->A, B->A->B) of 16 px
    assert grid.shape == (2 + 2 * 18, 2 + 6 * 18, 3)

    GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (2, 3, 16, 16) and samples.min() >= -1 and samples.max() <= 1

    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.CycleGAN)
    assert (model.cycle_weight, model.identity_weight) == (10.0, 0.5)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert model.translate(x, "AtoB").shape == model.translate(x, "BtoA").shape == (1, 3, 16, 16)
