"""SuperResolutionDataModule (lightning_gen/data/super_resolution.py): bicubic pairs from any image data module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightning_gen.data import MNISTDataModule, ResumableDataLoader, SuperResolutionDataModule


def bicubic(high: torch.Tensor, scale: int) -> torch.Tensor:
    """The reference: torch's antialiased bicubic downsampling, clamped to [-1, 1]."""
    size = (high.shape[-2] // scale, high.shape[-1] // scale)
    return F.interpolate(high, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def image_folder(folder: Path, n: int = 8, size: int = 16) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_pairs_are_the_wrapped_images_and_their_bicubic_downsampling(mnist_root):
    inner = MNISTDataModule(batch_size=8, val_fraction=0.05)
    data = SuperResolutionDataModule(MNISTDataModule(batch_size=8, val_fraction=0.05), scale=4)
    assert data.image_shape == (1, 28, 28) and data.low_res_shape == (1, 7, 7) and data.batch_size == 8
    data.prepare_data()
    data.setup("fit")
    inner.setup("fit")
    torch.manual_seed(3)
    images, _ = next(iter(inner.train_dataloader()))
    torch.manual_seed(3)
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"a", "b"} and batch["a"].shape == (8, 1, 7, 7)
    torch.testing.assert_close(batch["b"], images, rtol=0, atol=0)  # the same shuffled order as the wrapped loader
    torch.testing.assert_close(batch["a"], bicubic(images, 4), rtol=0, atol=0)
    assert float(batch["a"].min()) >= -1 and float(batch["a"].max()) <= 1
    test = next(iter(data.test_dataloader()))
    test_images, _ = next(iter(inner.test_dataloader()))
    torch.testing.assert_close(test["b"], test_images, rtol=0, atol=0)
    torch.testing.assert_close(test["a"], bicubic(test_images, 4), rtol=0, atol=0)
    assert len(data.val_dataloader()) == len(inner.val_dataloader())


def test_training_loader_resumes_mid_epoch_exactly(mnist_root):
    data = SuperResolutionDataModule(MNISTDataModule(batch_size=16), scale=4)
    data.setup("fit")
    torch.manual_seed(0)
    loader = data.train_dataloader()
    assert isinstance(loader, ResumableDataLoader)
    it = iter(loader)
    batches = [next(it) for _ in range(5)]
    torch.manual_seed(0)
    first = data.train_dataloader()
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    assert state["batches"] == 3 and state["exact"]
    torch.manual_seed(123)  # a resumed process: another RNG state
    resumed = data.train_dataloader()
    resumed.load_state_dict(state)
    nxt = next(iter(resumed))
    torch.testing.assert_close(nxt["b"], batches[3]["b"], rtol=0, atol=0)
    torch.testing.assert_close(nxt["a"], batches[3]["a"], rtol=0, atol=0)


def test_a_folder_of_images_at_scale_two(tmp_path):
    root = image_folder(tmp_path / "images", n=8, size=16)
    data = SuperResolutionDataModule(root=str(root), image_size=16, channels=1, batch_size=4, val_fraction=0.25,
                                     scale=2, predict_size=1)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["a"].shape == (4, 1, 8, 8) and batch["b"].shape == (4, 1, 16, 16)
    torch.testing.assert_close(batch["a"], bicubic(batch["b"], 2), rtol=0, atol=0)
    val = list(data.val_dataloader())
    assert sum(b["b"].shape[0] for b in val) == 2
    predict = list(data.predict_dataloader())
    assert [b["a"].shape[0] for b in predict] == [1]


def test_sizes_not_divisible_by_the_scale_are_refused(tmp_path):
    root = image_folder(tmp_path / "images", n=2, size=18)
    with pytest.raises(ValueError, match="multiple of 4"):
        SuperResolutionDataModule(root=str(root), image_size=18, channels=1, scale=4)
    with pytest.raises(ValueError, match="scale must be >= 2"):
        SuperResolutionDataModule(root=str(root), image_size=18, scale=1)
