"""Tests for lightning_gen/data/root.py: one environment variable moves every data module's default root, an explicit
root always wins, and the missing-data errors say which root was used and how to change it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from PIL import Image

from lightning_gen.cli import main
from lightning_gen.data import (
    CelebADataModule,
    CIFAR10DataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    PairedImageDataModule,
    UnpairedImageDataModule,
)
from lightning_gen.data.root import DATA_ENV, default_data_root, describe_data_root, resolve_data_root

ROOT = Path(__file__).resolve().parents[2]


def _images(folder: Path, n: int = 3, size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_default_root_is_the_variable_else_data(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert default_data_root() == Path("data")
    monkeypatch.setenv(DATA_ENV, "")
    assert default_data_root() == Path("data")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert default_data_root() == tmp_path
    assert resolve_data_root(None) == tmp_path
    assert resolve_data_root(None, "trainA") == tmp_path / "trainA"
    # an explicit root, relative or absolute, is used as given: the variable never changes it
    assert resolve_data_root("data") == Path("data")
    assert resolve_data_root("/elsewhere", "trainA") == Path("/elsewhere")
    assert "was set to 'x'" in describe_data_root("x")
    assert f"{DATA_ENV}={str(tmp_path)!r} was used" in describe_data_root(None)


@pytest.mark.parametrize("cls", [MNISTDataModule, CIFAR10DataModule, CelebADataModule])
def test_every_image_module_follows_the_variable_unless_root_is_given(cls, monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "copy"))
    assert cls().root == tmp_path / "copy"
    assert cls(root=str(tmp_path / "mine")).root == tmp_path / "mine"
    monkeypatch.delenv(DATA_ENV)
    assert cls().root == Path("data")


def test_folder_modules_take_their_default_subfolders_under_the_variable(monkeypatch, tmp_path):
    _images(tmp_path / "trainA")
    _images(tmp_path / "trainB")
    _images(tmp_path / "train", size=16)  # A|B side by side
    _images(tmp_path / "faces")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    unpaired = UnpairedImageDataModule(image_size=8)
    assert (unpaired.root_a, unpaired.root_b) == (tmp_path / "trainA", tmp_path / "trainB")
    assert len(unpaired._paths_a) == 3 and len(unpaired._paths_b) == 3
    paired = PairedImageDataModule(image_size=8)
    assert paired.root == tmp_path / "train" and len(paired._items) == 3
    assert ImageFolderDataModule(root=str(tmp_path / "faces"), image_size=8).root == tmp_path / "faces"


def test_missing_folder_error_says_where_the_default_came_from(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as info:
        UnpairedImageDataModule()
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "trainA") in message
    assert f"`root_a` was not set, so {DATA_ENV}=" in message and "--data.root_a" in message


def test_missing_digits_error_names_the_root_the_variable_and_the_argument(monkeypatch, tmp_path):
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda *a, **k: pytest.fail("network access attempted"))
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        MNISTDataModule().prepare_data()
    message = str(info.value)
    assert str(tmp_path / "data" / "MNIST" / "raw") in message
    assert f"`root` was not set and {DATA_ENV} is not set, so the default 'data' was used" in message
    assert f"export {DATA_ENV}=<folder>" in message and "--data.root <folder>" in message
    assert "torchvision.datasets.MNIST('data', download=True)" in message


def test_offline_recipe_says_what_to_run(monkeypatch, tmp_path):
    """`lightning-gen fit --config configs/dcgan/mnist.yaml` without the digits and without internet: the recipe
    tries to download (download: true) into $LIGHTNING_GEN_DATA and stops with what to run and where to put files."""
    cause = OSError("Name or service not known")

    def offline(*args, **kwargs):
        raise cause

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError) as info:
        main(["fit", f"--config={ROOT / 'configs' / 'dcgan' / 'mnist.yaml'}", f"--trainer.default_root_dir={tmp_path}",
              "--trainer.logger=false", "--trainer.max_steps=1"])
    message = str(info.value)
    assert info.value.__cause__ is cause
    assert f"could not download its data into {tmp_path / 'empty'}" in message
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message and "download=True" in message
    assert f"{DATA_ENV}={str(tmp_path / 'empty')!r} was used" in message
