"""Tests for lightning_gen/data/paired.py on tiny PIL images written to tmp_path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from lightning_gen.data.paired import PairedImageDataModule, UnpairedImageDataModule, UnpairedSampler


def pattern(k: int, size: int = 32) -> np.ndarray:
    """A uint8 RGB image whose pixels encode their position (R = x, G = y) and the image index (B)."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x * 7 % 256, y * 7 % 256, np.full_like(x, 10 * k)], axis=-1).astype(np.uint8)


def constant(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def save(folder: Path, name: str, array: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)


def unit_value(batch: torch.Tensor) -> list[int]:
    """The uint8 value each constant image of a batch was made from."""
    return [round((float(img.mean()) + 1) * 127.5) for img in batch]


@pytest.fixture
def unpaired(tmp_path: Path) -> tuple[Path, Path]:
    """8 constant A images (values 0, 10, ...) and 5 constant B images (values 200, 201, ...)."""
    for k in range(8):
        save(tmp_path / "trainA", f"a{k}.png", constant(10 * k))
    for k in range(5):
        save(tmp_path / "trainB", f"b{k}.jpg" if k % 2 else f"b{k}.png", constant(200 + 10 * k))
    return tmp_path / "trainA", tmp_path / "trainB"


def test_unpaired_shapes_range_and_batch_format(tmp_path: Path) -> None:
    for k in range(4):
        save(tmp_path / "A", f"{k}.png", pattern(k))
        save(tmp_path / "B", f"{k}.png", 255 - pattern(k))
    dm = UnpairedImageDataModule(str(tmp_path / "A"), str(tmp_path / "B"), image_size=24, load_size=28,
                                 batch_size=2, val_fraction=0.5)
    assert dm.image_shape == (3, 24, 24)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"a", "b"}
    for x in batch.values():
        assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
    val = next(iter(dm.val_dataloader()))
    assert val["a"].shape == (2, 3, 24, 24)


def test_unpaired_grayscale_and_exact_range(tmp_path: Path) -> None:
    save(tmp_path / "A", "0.png", constant(0))
    save(tmp_path / "B", "0.png", constant(255))
    dm = UnpairedImageDataModule(str(tmp_path / "A"), str(tmp_path / "B"), image_size=16, channels=1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["a"].shape == (1, 1, 16, 16)
    assert torch.all(batch["a"] == -1) and torch.all(batch["b"] == 1)


def test_unpaired_every_a_once_per_epoch_and_pairing_changes(unpaired: tuple[Path, Path]) -> None:
    root_a, root_b = unpaired
    dm = UnpairedImageDataModule(str(root_a), str(root_b), image_size=16, batch_size=3, seed=1)
    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        pairs = [(a, b) for batch in loader for a, b in zip(unit_value(batch["a"]), unit_value(batch["b"]))]
        assert len(pairs) == 6  # 8 items, batch 3, drop_last
        epochs.append(pairs)
    # the full epochs (no drop_last) show every A exactly once, B drawn from its 5 images
    sampler = UnpairedSampler(8, 5, seed=1)
    for epoch in range(3):
        items = sampler.pairs(epoch)
        assert sorted(i for i, _ in items) == list(range(8))
        assert all(0 <= j < 5 for _, j in items)
    assert sampler.pairs(0) != sampler.pairs(1) != sampler.pairs(2)
    assert epochs[0] != epochs[1]
    assert all(b in {200, 210, 220, 230, 240} for pairs in epochs for _, b in pairs)
    # reproducible: a fresh module with the same seed gives the same epoch-1 pairing; another seed does not
    again = UnpairedImageDataModule(str(root_a), str(root_b), image_size=16, batch_size=3, seed=1).train_dataloader()
    again.sampler.set_epoch(1)
    assert [(a, b) for batch in again for a, b in zip(unit_value(batch["a"]), unit_value(batch["b"]))] == epochs[1]
    assert UnpairedSampler(8, 5, seed=2).pairs(1) != sampler.pairs(1)


def test_unpaired_sampler_advances_without_set_epoch_and_covers_larger_b() -> None:
    sampler = UnpairedSampler(3, 7, seed=0)
    first, second = list(sampler), list(sampler)
    assert first == sampler.pairs(0) and second == sampler.pairs(1)
    assert len(first) == 7
    assert Counter(i for i, _ in first) == Counter({0: 3, 1: 2, 2: 2})


def test_unpaired_test_folders_and_fixed_eval_pairing(unpaired: tuple[Path, Path], tmp_path: Path) -> None:
    root_a, root_b = unpaired
    for k in range(3):
        save(tmp_path / "testA", f"{k}.png", constant(k))
        save(tmp_path / "testB", f"{k}.png", constant(100 + k))
    dm = UnpairedImageDataModule(str(root_a), str(root_b), image_size=16, batch_size=4,
                                 test_root_a=str(tmp_path / "testA"), test_root_b=str(tmp_path / "testB"))
    batch = next(iter(dm.test_dataloader()))
    assert unit_value(batch["a"]) == [0, 1, 2] and unit_value(batch["b"]) == [100, 101, 102]
    assert len(dm.val_dataloader()) == 1  # val falls back to the test folders
    assert sum(len(b["a"]) for b in UnpairedImageDataModule(
        str(root_a), str(root_b), image_size=16, batch_size=4, predict_size=2,
        test_root_a=str(tmp_path / "testA"), test_root_b=str(tmp_path / "testB")).predict_dataloader()) == 2


def write_concatenated(folder: Path, n: int = 6, size: int = 32) -> None:
    for k in range(n):
        a = pattern(k, size)
        save(folder, f"{k}.png", np.concatenate([a, 255 - a], axis=1))


def test_paired_concatenated_identical_crop_and_flip(tmp_path: Path) -> None:
    write_concatenated(tmp_path / "train")
    dm = PairedImageDataModule(str(tmp_path / "train"), image_size=24, load_size=32, flip=True, batch_size=6)
    assert dm.image_shape == (3, 24, 24)
    crops, flips = set(), 0
    for _ in range(5):
        batch = next(iter(dm.train_dataloader()))
        a, b = batch["a"], batch["b"]
        assert a.shape == b.shape == (6, 3, 24, 24)
        assert a.min() >= -1 and a.max() <= 1
        assert_close(b, -a, atol=1e-6, rtol=0)  # B = 255 - A: same window and flip -> b == -a
        x = torch.round((a[:, 0] + 1) * 127.5) / 7  # the x coordinate each pixel came from
        flipped = x[:, 0, 0] > x[:, 0, -1]
        flips += int(flipped.sum())
        crops.update((round(float(x[i, 0].min())), round(float(((a[i, 1, :, 0] + 1) * 127.5 / 7).min())))
                     for i in range(6))
    assert len(crops) > 1  # random windows
    assert 0 < flips < 30  # some flipped, some not


def test_paired_eval_centre_crop_no_flip_and_direction(tmp_path: Path) -> None:
    write_concatenated(tmp_path / "train", n=4)
    dm = PairedImageDataModule(str(tmp_path / "train"), image_size=24, load_size=32, batch_size=4,
                               val_fraction=0.5, test_root=str(tmp_path / "train"))
    batch = next(iter(dm.test_dataloader()))
    expected = torch.from_numpy(pattern(0)).permute(2, 0, 1)[:, 4:28, 4:28].float() / 127.5 - 1
    assert_close(batch["a"][0], expected, atol=1e-6, rtol=0)
    assert_close(batch["b"], -batch["a"], atol=1e-6, rtol=0)
    rev = PairedImageDataModule(str(tmp_path / "train"), direction="BtoA", image_size=24, load_size=32,
                                batch_size=4, test_root=str(tmp_path / "train"))
    assert_close(next(iter(rev.test_dataloader()))["b"][0], expected, atol=1e-6, rtol=0)
    assert len(next(iter(dm.val_dataloader()))["a"]) == 2


def test_paired_folders_mode_with_resize(tmp_path: Path) -> None:
    for k in range(5):
        save(tmp_path / "A", f"{k}.png", pattern(k, 40))
        save(tmp_path / "B", f"{k}.png", 255 - pattern(k, 40))
    dm = PairedImageDataModule(str(tmp_path), mode="folders", image_size=16, load_size=20, batch_size=5)
    batch = next(iter(dm.train_dataloader()))
    assert batch["a"].shape == (5, 3, 16, 16)
    # resizing rounds each side separately: within one uint8 level of b == -a
    assert_close(batch["b"], -batch["a"], atol=1.01 / 127.5, rtol=0)


def test_errors_missing_and_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    save(tmp_path / "A", "0.png", constant(0))
    with pytest.raises(FileNotFoundError, match=r"root_b \(domain B\) folder .*nowhere.* does not exist"):
        UnpairedImageDataModule(str(tmp_path / "A"), str(tmp_path / "nowhere"), image_size=16)
    with pytest.raises(FileNotFoundError, match=r"root_a \(domain A\) folder .*empty.* holds no images.*\.png"):
        UnpairedImageDataModule(str(tmp_path / "empty"), str(tmp_path / "A"), image_size=16)
    with pytest.raises(FileNotFoundError, match=r"holds no images: expected files ending in .*\.jpg"):
        PairedImageDataModule(str(tmp_path / "empty"), image_size=16)
    with pytest.raises(FileNotFoundError, match=r"root/B \(mode='folders', side B\).*does not exist"):
        PairedImageDataModule(str(tmp_path), mode="folders", image_size=16)
    with pytest.raises(ValueError, match="both test_root_a and test_root_b"):
        UnpairedImageDataModule(str(tmp_path / "A"), str(tmp_path / "A"), image_size=16, test_root_a="x")


def test_errors_mismatched_names(tmp_path: Path) -> None:
    for name in ("x0.png", "x1.png", "onlyA.png"):
        save(tmp_path / "A", name, constant(0))
    for name in ("x0.jpg", "x1.png", "onlyB1.png", "onlyB2.png"):
        save(tmp_path / "B", name, constant(0))
    with pytest.raises(ValueError, match=r"In A but not in B: onlyA\. In B but not in A: onlyB1, onlyB2\."):
        PairedImageDataModule(str(tmp_path), mode="folders", image_size=16)


def test_errors_odd_width_crop_and_arguments(tmp_path: Path) -> None:
    save(tmp_path / "odd", "0.png", np.zeros((16, 33, 3), np.uint8))
    dm = PairedImageDataModule(str(tmp_path / "odd"), image_size=16)
    with pytest.raises(ValueError, match=r"33 px wide, an odd width"):
        next(iter(dm.train_dataloader()))
    with pytest.raises(ValueError, match=r"image_size=32 is larger than load_size=16"):
        PairedImageDataModule(str(tmp_path / "odd"), image_size=32, load_size=16)
    with pytest.raises(ValueError, match="mode must be"):
        PairedImageDataModule(str(tmp_path / "odd"), mode="side-by-side", image_size=16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction must be"):
        PairedImageDataModule(str(tmp_path / "odd"), direction="AB", image_size=16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels must be"):
        PairedImageDataModule(str(tmp_path / "odd"), image_size=16, channels=4)
    with pytest.raises(ValueError, match="no held-out images"):
        PairedImageDataModule(str(tmp_path / "odd"), image_size=16).test_dataloader()


def test_unpaired_trainer_sets_epoch(unpaired: tuple[Path, Path], tiny_trainer_kwargs: dict) -> None:
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.seen: list[list[tuple[int, int]]] = []

        def on_train_epoch_start(self) -> None:
            self.seen.append([])

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            self.seen[-1] += list(zip(unit_value(batch["a"]), unit_value(batch["b"])))
            return self.weight * batch["a"].mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    root_a, root_b = unpaired
    dm = UnpairedImageDataModule(str(root_a), str(root_b), image_size=16, batch_size=8, flip=False, seed=3)
    model = Recorder()
    kwargs = {**tiny_trainer_kwargs, "max_epochs": 2, "limit_val_batches": 0}
    L.Trainer(**kwargs).fit(model, datamodule=dm)
    assert len(model.seen) == 2 and all(len(s) == 8 for s in model.seen)
    sampler = UnpairedSampler(8, 5, seed=3)
    b_of = {j: 200 + 10 * j for j in range(5)}
    for epoch, seen in enumerate(model.seen):
        expected = [(10 * i, b_of[j]) for i, j in sampler.pairs(epoch)]
        assert seen == expected
    assert model.seen[0] != model.seen[1]
