"""End-to-end tests of the image recipes (configs/{dcgan,cgan,sngan,wgan_gp}/*.yaml) through `lightning-gen`."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from PIL import Image

import lightning_gen
from lightning_gen.cli import GenerativeCLI, main

ROOT = Path(__file__).resolve().parents[1]
GAN_FAMILIES = {"dcgan", "cgan", "sngan", "wgan_gp"}
# GAN image recipes; the likelihood families' recipes have their own tests (tests/modules/test_*_recipes.py)
IMAGE_CONFIGS = sorted(
    p for p in (ROOT / "configs").glob("*/*.yaml") if not p.name.startswith("toy_") and p.parent.name in GAN_FAMILIES
)


def fake_cifar(root: Path, n: int = 40) -> Path:
    """A tiny CIFAR-10 layout (python pickles) with random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (n // 5, 3072), dtype=np.uint8), b"labels": list(range(n // 5))}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    return root


def fake_celeba(root: Path, n: int = 24) -> Path:
    """A tiny CelebA layout: aligned-size JPEGs without a partition file."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / f"{i + 1:06d}.jpg")
    return root


def data_root(config: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Optional[Path]:
    """The ``--data.root`` to pass; ``None`` for MNIST, which the recipes read from ``$LIGHTNING_GEN_DATA``."""
    text = config.read_text()
    if "MNISTDataModule" in text:
        request.getfixturevalue("mnist_root")  # skips when $LIGHTNING_GEN_DATA holds no digits
        return None
    if "CIFAR10DataModule" in text:
        return fake_cifar(tmp_path / "data")
    if "CelebADataModule" in text:
        return fake_celeba(tmp_path / "data")
    raise AssertionError(f"no test data for {config}")


def _quick(config: Path, root: Path, data: Optional[Path]) -> list[str]:
    """Arguments that shrink an image recipe to a few seconds: 2 generator steps, narrow nets, small batches."""
    return [
        f"--config={config}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--data.batch_size=8",
        "--data.predict_size=20",
        "--data.num_workers=0",
        "--model.generator.init_args.base_channels=8",
        "--model.discriminator.init_args.base_channels=8",
        *([] if data is None else [f"--data.root={data}"]),  # after --config, which names the data class
    ]


def test_every_image_recipe_of_the_issue_exists():
    names = {f"{p.parent.name}/{p.stem}" for p in IMAGE_CONFIGS}
    assert names == {"dcgan/mnist", "dcgan/celeba", "dcgan/cifar10", "cgan/mnist", "sngan/cifar10", "wgan_gp/mnist",
                     "wgan_gp/cifar10"}


@pytest.mark.slow
@pytest.mark.parametrize("config", IMAGE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_image_recipe_fits_predicts_tests_and_loads(config, tmp_path, shrink_recipe_metrics, request):
    data = data_root(config, tmp_path, request)
    args = _quick(shrink_recipe_metrics(config), tmp_path, data)
    if "CelebADataModule" in config.read_text():
        args.append("--data.val_fraction=0.5")  # without a partition file test = val: 12 of the 24 fake faces
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2  # generator steps
    grids = sorted(tmp_path.rglob("samples_step*.png"))
    assert grids, "the sample-grid callback wrote no PNG"

    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    model = lightning_gen.load_model(last)
    assert samples.shape == (20, *model.generator.image_shape)
    assert samples.min() >= -1 and samples.max() <= 1
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(model.sample(3, generator=g()), model.sample(3, generator=g()), rtol=0, atol=0)
    if model.num_classes:
        assert samples.shape[0] == 20 and model.sample(4, labels=7).shape[0] == 4

    # `lightning-gen test` reports the image metrics of the checkpoint's samples against the test split
    cli = GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    logged = cli.trainer.callback_metrics
    for key in ("test/fid", "test/kid", "test/inception_score", "test/precision", "test/recall"):
        assert key in logged and torch.isfinite(logged[key]), key
    assert float(logged["test/fid"]) > 0 and 1.0 <= float(logged["test/inception_score"])
    assert 0.0 <= float(logged["test/precision"]) <= 1.0
