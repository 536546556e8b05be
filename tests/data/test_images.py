"""Tests for lightning_gen/data/images.py: real MNIST digits when present, tiny fake layouts for the other data sets."""

from __future__ import annotations

import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets
from jsonargparse import ArgumentParser
from PIL import Image
from torch.testing import assert_close
from torch.utils.data import DataLoader, DistributedSampler

from lightning_gen.data import (
    CelebADataModule,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from lightning_gen.data.images import CELEBA_ATTRIBUTES
from lightning_gen.data.root import DATA_ENV, default_data_root

LEVEL = 1 / 127.5  # one uint8 step in [-1, 1] units


def unit(v: float) -> float:
    """The [-1, 1] value of uint8 ``v``."""
    return v / 127.5 - 1


def all_batches(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[(b[0], b[1]) for b in loader])
    return torch.cat(xs), torch.cat(ys)


# -- real MNIST -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_root() -> Path:
    """The real digits' root, ``$LIGHTNING_GEN_DATA`` (set by tests/conftest.py and .ci/run); skip without them."""
    root = default_data_root()
    if not os.environ.get(DATA_ENV) or not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"real MNIST digits not found: set {DATA_ENV} to a folder holding MNIST/raw/")
    return root


@pytest.fixture(scope="module")
def mnist(mnist_root) -> MNISTDataModule:
    dm = MNISTDataModule(root=str(mnist_root), batch_size=128)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_mnist_attributes_before_setup(tmp_path):
    """num_classes and image_shape are known right after __init__, without files."""
    dm = MNISTDataModule(root=str(tmp_path))
    assert dm.num_classes == 10 and dm.image_shape == (1, 28, 28)
    assert dm.domain_names == [] and dm.multi_label is False  # digit classes are not translation domains
    assert MNISTDataModule(root=str(tmp_path), image_size=32).image_shape == (1, 32, 32)


def test_mnist_batches_shape_range_and_labels(mnist):
    """Train batches: float32 (128, 1, 28, 28) with min -1 and max 1 exactly; int64 labels; all digits present."""
    loader = mnist.train_dataloader()
    assert loader.drop_last
    x, y = next(iter(loader))
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert y.dtype == torch.int64 and y.shape == (128,)
    _, val_y = all_batches(mnist.val_dataloader())
    assert set(val_y.tolist()) == set(range(10))
    item_x, item_y = loader.dataset[0]
    assert item_x.shape == (1, 28, 28) and item_x.dtype == torch.float32 and item_y.dtype == torch.int64


def test_mnist_split_partitions_the_train_file_and_is_seeded(mnist, mnist_root):
    """train + val hold exactly the images of the train file (as a multiset), 5 % in val, the same for the same seed."""
    full = torchvision.datasets.MNIST(str(mnist_root), train=True, download=False)
    train = mnist.train_dataloader().dataset
    val = mnist.val_dataloader().dataset
    n = len(full)
    assert len(val) == round(0.05 * n) and len(train) + len(val) == n

    def keys(images: torch.Tensor, labels: torch.Tensor) -> Counter:
        return Counter((img.numpy().tobytes(), int(lab)) for img, lab in zip(images, labels))

    assert keys(*train.tensors) + keys(*val.tensors) == keys(full.data.unsqueeze(1), full.targets)
    again = MNISTDataModule(root=str(mnist_root), seed=0)
    again.setup()
    assert torch.equal(again.val_dataloader().dataset.tensors[0], val.tensors[0])
    other = MNISTDataModule(root=str(mnist_root), seed=1)
    other.setup()
    assert not torch.equal(other.val_dataloader().dataset.tensors[0], val.tensors[0])


def test_mnist_test_loader_reads_the_t10k_file(mnist, mnist_root):
    """test_dataloader yields the t10k images in order, mapped by x / 127.5 - 1; val_fraction 0 validates on them."""
    t10k = torchvision.datasets.MNIST(str(mnist_root), train=False, download=False)
    x, y = all_batches(mnist.test_dataloader())
    assert len(x) == len(t10k)
    assert torch.equal(x, t10k.data.unsqueeze(1).float() / 127.5 - 1)
    assert torch.equal(y, t10k.targets)
    no_val = MNISTDataModule(root=str(mnist_root), val_fraction=0)
    no_val.setup()
    assert len(no_val.train_dataloader().dataset) == len(torchvision.datasets.MNIST(str(mnist_root), train=True))
    assert len(no_val.val_dataloader().dataset) == len(t10k)


def test_mnist_image_size_32_resizes_with_antialiasing(mnist, mnist_root):
    """image_size=32 gives (B, 1, 32, 32), equal to bilinear resizing of the 28 px digits to within one uint8 level."""
    dm = MNISTDataModule(root=str(mnist_root), image_size=32, batch_size=64)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (64, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    x28, y28 = next(iter(mnist.test_dataloader()))
    expected = F.interpolate(x28[:64], size=32, mode="bilinear", antialias=True, align_corners=False)
    assert_close(x, expected, atol=LEVEL + 1e-6, rtol=0)
    assert torch.equal(y, y28[:64])
    assert abs(x.mean().item() - x28[:64].mean().item()) < 0.005


# -- fake Fashion-MNIST (idx files) ---------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the idx format: 0, 0, type 0x08, ndim, big-endian int32 dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


TRAIN_VALUES = [(7 * i) % 256 for i in range(40)]
TEST_VALUES = [0, 128, 255] + [(11 * i) % 256 for i in range(17)]


@pytest.fixture
def fashion_root(tmp_path) -> Path:
    raw = tmp_path / "FashionMNIST" / "raw"
    for prefix, values in (("train", TRAIN_VALUES), ("t10k", TEST_VALUES)):
        images = np.stack([np.full((28, 28), v, np.uint8) for v in values])
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(len(values)) % 10)
    return tmp_path


def test_fashion_mnist_pixel_values_and_splits(fashion_root):
    """Constant images keep their value (0 -> -1, 128 -> 128/127.5 - 1, 255 -> 1); 40 train files split 38 + 2."""
    dm = FashionMNISTDataModule(root=str(fashion_root), batch_size=8, val_fraction=0.05)
    assert dm.num_classes == 10 and dm.image_shape == (1, 28, 28)
    dm.prepare_data()
    x, y = all_batches(dm.test_dataloader())
    assert x.shape == (20, 1, 28, 28)
    expected = torch.tensor([unit(v) for v in TEST_VALUES]).view(-1, 1, 1, 1).expand_as(x)
    assert_close(x, expected, atol=1e-6, rtol=0)
    assert x[0].unique().item() == -1.0 and x[2].unique().item() == 1.0
    assert_close(x[1].unique(), torch.tensor([128 / 127.5 - 1]), atol=1e-7, rtol=0)
    assert torch.equal(y, torch.arange(20) % 10)

    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert len(train.dataset) == 38 and len(val.dataset) == 2
    tx, ty = all_batches(train)
    assert tx.shape == (32, 1, 28, 28)  # 38 images, drop_last with batch 8
    vx, vy = all_batches(val)
    stored = torch.cat([train.dataset.tensors[0], val.dataset.tensors[0]])  # uint8, as read from the file
    assert stored.dtype == torch.uint8 and sorted(stored[:, 0, 0, 0].tolist()) == sorted(TRAIN_VALUES)
    for img, lab in zip(vx, vy):  # label i % 10 belongs to value 7 i mod 256
        i = TRAIN_VALUES.index(round((img[0, 0, 0].item() + 1) * 127.5))
        assert lab.item() == i % 10


def test_fashion_mnist_resize_keeps_constant_images(fashion_root):
    """image_size=14 downsizes once at setup; a constant image stays that constant."""
    dm = FashionMNISTDataModule(root=str(fashion_root), image_size=14, batch_size=20)
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (20, 1, 14, 14)
    expected = torch.tensor([unit(v) for v in TEST_VALUES]).view(-1, 1, 1, 1).expand_as(x)
    assert_close(x, expected, atol=LEVEL + 1e-6, rtol=0)


def test_in_memory_loader_works_with_distributed_sampler(fashion_root):
    """The batched __getitems__ fetch works under DistributedSampler (what Lightning installs for DDP)."""
    loader = FashionMNISTDataModule(root=str(fashion_root), batch_size=4, val_fraction=0).train_dataloader()
    values = []
    for rank in range(2):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        ddp = DataLoader(loader.dataset, batch_size=4, sampler=sampler, collate_fn=loader.collate_fn, drop_last=True)
        for x, y in ddp:
            assert x.shape == (4, 1, 28, 28) and y.shape == (4,)
            values += [round((v + 1) * 127.5) for v in x[:, 0, 0, 0].tolist()]
    assert sorted(values) == sorted(TRAIN_VALUES)  # the two ranks' shards partition the 40 images


# -- fake CIFAR-10 --------------------------------------------------------------------------------------------------
def cifar_image(i: int) -> np.ndarray:
    """Image i: red plane i, green plane 128, blue plane 255 - i, with one brighter left column (to see flips)."""
    img = np.stack([np.full((32, 32), i), np.full((32, 32), 128), np.full((32, 32), 255 - i)]).astype(np.uint8)
    img[0, :, 0] = 250
    return img


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for b in range(6):
        ids = list(range(4 * b, 4 * b + 4))
        entry = {b"data": np.stack([cifar_image(i).reshape(-1) for i in ids]), b"labels": [i % 10 for i in ids],
                 b"batch_label": b"fake"}
        name = f"data_batch_{b + 1}" if b < 5 else "test_batch"
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    return tmp_path


def test_cifar10_reads_pickled_batches(cifar_root):
    """Channels come out in R, G, B order with exact values; 20 train images split 19 + 1; test = test_batch."""
    dm = CIFAR10DataModule(root=str(cifar_root), batch_size=4)
    assert dm.num_classes == 10 and dm.image_shape == (3, 32, 32)
    dm.prepare_data()
    x, y = all_batches(dm.test_dataloader())
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    for k, i in enumerate(range(20, 24)):
        assert_close(x[k], torch.from_numpy(cifar_image(i)).float() / 127.5 - 1, atol=0, rtol=0)
        assert x[k, 1, 5, 5].item() == pytest.approx(unit(128), abs=1e-7)
    assert torch.equal(y, torch.arange(20, 24) % 10)
    assert len(dm.train_dataloader().dataset) == 19 and len(dm.val_dataloader().dataset) == 1


def test_cifar10_hflip_only_in_training(cifar_root):
    """hflip flips about half of the training draws (75 draws: 0.5 +- 0.2 is 3.5 sd) and never a val/test image."""
    torch.manual_seed(0)
    dm = CIFAR10DataModule(root=str(cifar_root), batch_size=1, hflip=True, val_fraction=0.25)
    flipped = total = 0
    for _ in range(5):
        for x, _ in dm.train_dataloader():
            total += 1
            flipped += int(abs(x[0, 0, 5, -1].item() - unit(250)) < 1e-6)
    assert total == 75  # 15 training images (5 held out) x 5 epochs
    assert 0.3 < flipped / total < 0.7
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        x, _ = all_batches(loader)
        bright = (x[:, 0] - unit(250)).abs() < 1e-6
        assert bright[:, :, 0].all() and not bright[:, :, -1].any()


# -- fake CelebA ----------------------------------------------------------------------------------------------------
def write_celeba(root: Path, values: list[int], partition: list[int] | None) -> Path:
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        Image.fromarray(np.full((218, 178, 3), v, np.uint8)).save(folder / f"{i + 1:06d}.jpg", quality=95)
    if partition is not None:
        lines = [f"{i + 1:06d}.jpg {p}" for i, p in enumerate(partition)]
        (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


CELEBA_VALUES = [5, 35, 65, 95, 128, 160, 200, 255]


def batch_values(x: torch.Tensor) -> list[int]:
    """uint8 value of each constant image of a batch (asserting they are constant)."""
    flat = x.flatten(1)
    assert torch.equal(flat.min(1).values, flat.max(1).values)
    return [round((v + 1) * 127.5) for v in flat[:, 0].tolist()]


def test_celeba_partition_file_gives_the_official_splits(tmp_path):
    """list_eval_partition.txt: 0 -> train, 1 -> val, 2 -> test; 64 x 64 RGB, constant images keep their value."""
    root = write_celeba(tmp_path, CELEBA_VALUES + [77], [0, 0, 0, 0, 0, 1, 1, 2])  # the 9th image is not listed
    dm = CelebADataModule(root=str(root), batch_size=2, val_fraction=0.5)  # val_fraction is ignored here
    assert dm.num_classes == 0 and dm.image_shape == (3, 64, 64)
    dm.prepare_data()
    with pytest.warns(UserWarning, match="1 of the 9 images"):
        dm.setup()
    x, y = all_batches(dm.val_dataloader())
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert batch_values(x) == [160, 200] and torch.equal(y, torch.zeros(2, dtype=torch.long))
    x, _ = all_batches(dm.test_dataloader())
    assert batch_values(x) == [255] and x.max().item() == 1.0
    assert len(dm.train_dataloader().dataset) == 5
    x, y = all_batches(dm.train_dataloader())
    assert x.shape == (4, 3, 64, 64) and sorted(batch_values(x)) == sorted(set(batch_values(x)))
    assert set(batch_values(x)) <= {5, 35, 65, 95, 128} and y.dtype == torch.int64
    assert_close(dm.train_dataloader().dataset[4][0], torch.full((3, 64, 64), unit(128)), atol=1e-7, rtol=0)


def test_celeba_without_partition_uses_a_seeded_random_split(tmp_path):
    """No partition file: val_fraction 0.25 of 8 images -> 6 + 2, disjoint, fixed by seed; test = val."""
    root = write_celeba(tmp_path, CELEBA_VALUES, None)

    def splits(seed: int) -> tuple[list[int], list[int], list[int]]:
        dm = CelebADataModule(root=str(root), image_size=16, batch_size=8, val_fraction=0.25, seed=seed)
        train = batch_values(next(iter(DataLoader(dm.train_dataloader().dataset, batch_size=8)))[0])
        val = batch_values(all_batches(dm.val_dataloader())[0])
        test = batch_values(all_batches(dm.test_dataloader())[0])
        return train, val, test

    train, val, test = splits(0)
    assert len(train) == 6 and len(val) == 2 and sorted(train + val) == CELEBA_VALUES and test == val
    assert splits(0) == (train, val, test)
    assert any(splits(s)[1] != val for s in (1, 2, 3))


def test_celeba_crop_order_and_workers(tmp_path):
    """Default: Resize(64) then CenterCrop(64) keeps part of a 59-px white top/bottom border; crop_size=100 first
    cuts it away (all -1). PNG images avoid JPEG ringing; one worker process decodes them."""
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    img = np.full((218, 178, 3), 255, np.uint8)
    img[59:159, 39:139] = 0  # central 100 x 100 black square
    for i in range(2):
        Image.fromarray(img).save(folder / f"{i + 1:06d}.png")
    plain = CelebADataModule(root=str(tmp_path), batch_size=2, val_fraction=0)
    x, _ = next(iter(plain.train_dataloader()))
    assert x.shape == (2, 3, 64, 64)
    assert x[:, :, :10].min().item() == 1.0 and x[:, :, 32].min().item() == -1.0
    cropped = CelebADataModule(root=str(tmp_path), batch_size=2, val_fraction=0, crop_size=100, num_workers=1)
    x, _ = next(iter(cropped.train_dataloader()))
    assert x.shape == (2, 3, 64, 64) and x.max().item() == -1.0


# CelebA attributes: the official list_attr_celeba.txt layout
STARGAN = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
# the attributes set (1) per image of CELEBA_VALUES; every other entry of the file is -1
SET = {
    "000001.jpg": {"Black_Hair", "Male"},
    "000002.jpg": {"Blond_Hair", "Young"},
    "000003.jpg": set(),
    "000004.jpg": {"Brown_Hair", "Male", "Young", "Smiling"},
    "000005.jpg": {"Black_Hair", "Young", "Eyeglasses"},
    "000006.jpg": {"Blond_Hair", "Male"},
    "000007.jpg": {"Brown_Hair"},
    "000008.jpg": {"Male", "Young", "Black_Hair"},
}


def write_attributes(root: Path, rows: dict[str, set[str]], names: tuple[str, ...] = CELEBA_ATTRIBUTES) -> Path:
    """``<root>/celeba/list_attr_celeba.txt`` as CelebA ships it: the image count, the names, then one line per image
    with the values -1/1 right-aligned in two characters (so values are separated by one or two spaces)."""
    lines = [str(len(rows)), " ".join(names)]
    lines += [f"{file} " + " ".join(f"{1 if n in on else -1:2d}" for n in names) for file, on in rows.items()]
    path = root / "celeba" / "list_attr_celeba.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_labels(values: list[int], attributes: list[str]) -> torch.Tensor:
    """The attribute rows of the images whose constant uint8 values are ``values`` (image i has CELEBA_VALUES[i])."""
    files = [f"{CELEBA_VALUES.index(v) + 1:06d}.jpg" for v in values]
    return torch.tensor([[float(a in SET[f]) for a in attributes] for f in files])


def test_celeba_attributes_give_multi_hot_labels_in_the_order_given(tmp_path):
    """attributes=[...]: labels are float32 rows of 0./1. from list_attr_celeba.txt (-1 -> 0), ordered as given;
    domain_names and multi_label are set in __init__ and num_classes stays 0."""
    root = write_celeba(tmp_path, CELEBA_VALUES, None)
    write_attributes(root, SET)
    chosen = ["Young", "Black_Hair", "Male", "Smiling"]  # not the file's column order
    dm = CelebADataModule(root=str(root), image_size=8, batch_size=8, val_fraction=0, attributes=chosen)
    assert dm.domain_names == chosen and dm.multi_label is True and dm.num_classes == 0
    x, y = all_batches(DataLoader(dm.train_dataloader().dataset, batch_size=8))
    assert y.dtype == torch.float32 and y.shape == (8, 4)
    assert batch_values(x) == CELEBA_VALUES  # no split: the files in name order
    assert torch.equal(y, torch.tensor([[0., 1., 1., 0.], [1., 0., 0., 0.], [0., 0., 0., 0.], [1., 0., 1., 1.],
                                        [1., 1., 0., 0.], [0., 0., 1., 0.], [0., 0., 0., 0.], [1., 1., 1., 0.]]))
    plain = CelebADataModule(root=str(root), image_size=8, batch_size=8, val_fraction=0)
    assert plain.domain_names == [] and plain.multi_label is False
    assert torch.equal(all_batches(plain.train_dataloader())[1], torch.zeros(8, dtype=torch.long))


def test_celeba_attributes_survive_the_splits_and_feed_predict(tmp_path):
    """Labels travel with their images through the official partition and the seeded random split; images missing
    from the attribute file are dropped with a warning; predict yields the held-out (images, attributes)."""
    root = write_celeba(tmp_path, CELEBA_VALUES + [77], [0, 0, 0, 0, 0, 1, 1, 2, 0])
    write_attributes(root, SET)  # 000009.jpg (value 77) is not in it
    dm = CelebADataModule(root=str(root), image_size=8, batch_size=2, attributes=STARGAN, predict_size=5)
    with pytest.warns(UserWarning, match=r"1 of the 9 images .* not in .*list_attr_celeba.txt \(e.g. 000009.jpg\)"):
        dm.setup()
    for loader, values in ((dm.val_dataloader(), [160, 200]), (dm.test_dataloader(), [255])):
        x, y = all_batches(loader)
        assert batch_values(x) == values and torch.equal(y, expected_labels(values, STARGAN))
    x, y = all_batches(DataLoader(dm.train_dataloader().dataset, batch_size=8))
    assert sorted(batch_values(x)) == [5, 35, 65, 95, 128]
    assert torch.equal(y, expected_labels(batch_values(x), STARGAN))
    x, y = all_batches(dm.predict_dataloader())
    assert batch_values(x) == [255] and torch.equal(y, expected_labels([255], STARGAN))

    (root / "celeba" / "list_eval_partition.txt").unlink()
    for seed in (0, 1):
        dm = CelebADataModule(root=str(root), image_size=8, batch_size=8, val_fraction=0.25, seed=seed,
                              attributes=STARGAN[::-1])
        with pytest.warns(UserWarning, match="1 of the 9 images"):
            dm.setup()
        train = all_batches(DataLoader(dm.train_dataloader().dataset, batch_size=8))
        val = all_batches(dm.val_dataloader())
        assert sorted(batch_values(train[0]) + batch_values(val[0])) == sorted(CELEBA_VALUES)
        assert len(val[0]) == 2
        for x, y in (train, val):
            assert torch.equal(y, expected_labels(batch_values(x), STARGAN[::-1]))
        x, y = next(iter(dm.predict_dataloader()))  # no test split: the val images
        assert batch_values(x) == batch_values(val[0]) and torch.equal(y, val[1])


def test_celeba_attribute_errors(tmp_path):
    """Unknown names (with suggestions), repeats and an empty list fail in __init__; a missing attribute file says
    where it goes and where to get it; a file without a column or with other values fails naming the line."""
    with pytest.raises(ValueError, match=r"'blond_hair' \(did you mean 'Blond_Hair'\?\).*'Smile' \(did you mean "
                                         r"'Smiling'\?\).*5_o_Clock_Shadow, Arched_Eyebrows.*Young\."):
        CelebADataModule(root=str(tmp_path), attributes=["Male", "blond_hair", "Smile"])
    with pytest.raises(ValueError, match=r"'hat' \(did you mean 'Wearing_Hat'\?\)"):
        CelebADataModule(root=str(tmp_path), attributes=["hat"])
    with pytest.raises(ValueError, match=r"\['Male'\] more than once"):
        CelebADataModule(root=str(tmp_path), attributes=["Male", "Young", "Male"])
    with pytest.raises(ValueError, match="empty"):
        CelebADataModule(root=str(tmp_path), attributes=[])

    root = write_celeba(tmp_path, CELEBA_VALUES[:2], None)
    dm = CelebADataModule(root=str(root), attributes=STARGAN)
    attribute_file = (root / "celeba" / "list_attr_celeba.txt").resolve()
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(FileNotFoundError) as info:
            step()
        message = str(info.value)
        assert f"found the images but not the attribute file {attribute_file}" in message
        assert "'Anno'" in message and "mmlab.ie.cuhk.edu.hk" in message and "`root`" in message
    CelebADataModule(root=str(root)).prepare_data()  # without attributes the file is not needed

    write_attributes(root, {"000001.jpg": set(), "000002.jpg": set()}, names=CELEBA_ATTRIBUTES[:-1])
    with pytest.raises(ValueError, match="has no column Young: its header line"):
        CelebADataModule(root=str(root), attributes=STARGAN).setup()
    path = write_attributes(root, {"000001.jpg": set(), "000002.jpg": {"Male"}})
    path.write_text(path.read_text().replace(" 1", " 2"))
    with pytest.raises(ValueError, match=r"line 4: attribute values must be -1 or 1, got '2'"):
        CelebADataModule(root=str(root), attributes=STARGAN).setup()


def test_celeba_download_failure_explains_manual_download(tmp_path, monkeypatch):
    """A failed download (offline, Drive quota) re-raises with the manual steps, chained to the cause."""
    cause = RuntimeError("Google Drive quota exceeded")

    def fail(*args, **kwargs):
        raise cause

    monkeypatch.setattr(torchvision.datasets, "CelebA", fail)
    dm = CelebADataModule(root=str(tmp_path), download=True)
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert info.value.__cause__ is cause
    assert str((tmp_path / "celeba" / "img_align_celeba").resolve()) in message
    assert "list_eval_partition.txt" in message and "img_align_celeba.zip" in message
    assert "download" in message and "`root`" in message and "Google Drive" in message


def test_download_true_skips_the_network_when_files_exist(fashion_root, monkeypatch):
    """With the files in place, download=True never calls torchvision's downloader."""
    def boom(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", boom)
    dm = FashionMNISTDataModule(root=str(fashion_root), download=True, batch_size=4)
    dm.prepare_data()
    assert len(next(iter(dm.train_dataloader()))[0]) == 4


def test_mnist_download_failure_is_chained(tmp_path, monkeypatch):
    """An offline download error becomes the clear missing-data error, with the original as __cause__."""
    cause = OSError("Network is unreachable")

    def fail(*args, **kwargs):
        raise cause

    monkeypatch.setattr(torchvision.datasets, "MNIST", fail)
    with pytest.raises(FileNotFoundError, match="could not download") as info:
        MNISTDataModule(root=str(tmp_path), download=True).prepare_data()
    assert info.value.__cause__ is cause and "`root`" in str(info.value)


# -- missing data ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, expected",
    [
        (MNISTDataModule, "MNIST/raw/train-images-idx3-ubyte"),
        (FashionMNISTDataModule, "FashionMNIST/raw/t10k-labels-idx1-ubyte"),
        (CIFAR10DataModule, "cifar-10-batches-py/data_batch_1"),
        (CelebADataModule, "celeba/img_align_celeba"),
    ],
)
def test_missing_data_raises_with_path_download_and_root(cls, expected, tmp_path, monkeypatch):
    """download=False and no files: prepare_data and setup raise, naming the path, `download` and `root`; no network."""
    for name in ("MNIST", "FashionMNIST", "CIFAR10", "CelebA"):
        monkeypatch.setattr(torchvision.datasets, name, lambda *a, **k: pytest.fail("network access attempted"))
    dm = cls(root=str(tmp_path / "nowhere"))
    for step in (dm.prepare_data, dm.setup, dm.train_dataloader):
        with pytest.raises(FileNotFoundError) as info:
            step()
        message = str(info.value)
        assert str((tmp_path / "nowhere" / expected).resolve()) in message
        assert "download" in message and "root" in message


def test_image_folder_missing_or_empty_raises(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ImageFolderDataModule(root=str(tmp_path / "mine"))
    message = str(info.value)
    assert str((tmp_path / "mine").resolve()) in message and "download" in message and "root" in message
    (tmp_path / "mine" / "sub").mkdir(parents=True)
    (tmp_path / "mine" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderDataModule(root=str(tmp_path / "mine"))


# -- image folders --------------------------------------------------------------------------------------------------
def save(path: Path, value, size: tuple[int, int] = (12, 10)) -> None:
    """A constant RGB image of ``size`` (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_image_folder_class_subfolders(tmp_path):
    """Subfolders are classes in sorted order (searched recursively, any listed extension); hidden folders skipped."""
    for i in range(3):
        save(tmp_path / "dogs" / "deep" / f"{i}.png", 200)
    save(tmp_path / "dogs" / "x.webp", 200)
    for i, ext in enumerate(["png", "bmp", "jpeg"]):
        save(tmp_path / "cats" / f"{i}.{ext}", 40)
    save(tmp_path / ".cache" / "thumb.png", 99)
    (tmp_path / "cats" / "readme.txt").write_text("not an image")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, batch_size=7, val_fraction=0)
    assert dm.classes == ["cats", "dogs"] and dm.num_classes == 2 and dm.image_shape == (3, 8, 8)
    assert dm.domain_names == ["cats", "dogs"] and dm.multi_label is False  # one folder per domain
    assert "download" not in dm.hparams
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (7, 3, 8, 8)
    assert [{40: 0, 200: 1}[v] for v in batch_values(x)] == y.tolist()
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert dm.val_dataloader() == []
    with pytest.raises(ValueError, match="val_fraction"):
        dm.test_dataloader()


def test_image_folder_flat_grayscale_and_centre_crop(tmp_path):
    """A flat folder has label 0; channels=1 converts with PIL's luma; wide images are centre-cropped to squares."""
    for i in range(4):
        save(tmp_path / f"{i}.png", (200, 100, 50))
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 20:] = 255  # left half black, right half white
    Image.fromarray(wide).save(tmp_path / "wide.png")
    save(tmp_path / "nested" / "more.png", (200, 100, 50))  # images at the top level: the whole tree is one class
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=10, channels=1, batch_size=6, val_fraction=0)
    assert dm.num_classes == 0 and dm.classes == [] and dm.image_shape == (1, 10, 10)
    assert dm.domain_names == [] and dm.multi_label is False
    x, y = all_batches(DataLoader(dm.train_dataloader().dataset, batch_size=6))
    assert x.shape == (6, 1, 10, 10) and torch.equal(y, torch.zeros(6, dtype=torch.long))
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # 124.2 -> PIL rounds to 124
    for k in [0, 1, 2, 3, 5]:  # top-level files in name order, then subfolders
        assert_close(x[k], torch.full((1, 10, 10), unit(luma)), atol=LEVEL, rtol=0)
    crop = x[4, 0]  # wide.png: 20 x 40 -> 10 x 20 -> the middle 10 columns
    assert (crop[:, 0] == -1).all() and (crop[:, -1] == 1).all()
    with pytest.raises(ValueError, match="class_folders"):
        ImageFolderDataModule(root=str(tmp_path), class_folders=True)


def test_image_folder_seeded_split_and_test_uses_val(tmp_path):
    for i in range(10):
        save(tmp_path / "a" / f"{i}.png", 10 * i)
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=4, val_fraction=0.2, seed=3, batch_size=5)
    val = batch_values(all_batches(dm.val_dataloader())[0])
    test = batch_values(all_batches(dm.test_dataloader())[0])
    train = batch_values(all_batches(DataLoader(dm.train_dataloader().dataset, batch_size=10))[0])
    assert len(val) == 2 and test == val and sorted(train + val) == [10 * i for i in range(10)]
    again = ImageFolderDataModule(root=str(tmp_path), image_size=4, val_fraction=0.2, seed=3, batch_size=5)
    assert batch_values(all_batches(again.val_dataloader())[0]) == val


# -- prediction, configs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [10, 0])
def test_predict_dataloader_balanced_labels_without_files(num_classes, tmp_path):
    """predict_size items as (indices, labels), labels index % num_classes (zeros when unconditional); no data read."""
    cls = MNISTDataModule if num_classes else CelebADataModule
    dm = cls(root=str(tmp_path / "absent"), predict_size=1005, batch_size=100)
    batches = list(dm.predict_dataloader())
    assert len(batches) == 11 and len(batches[-1][0]) == 5
    idx, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert torch.equal(idx, torch.arange(1005))
    if num_classes:
        counts = torch.bincount(labels, minlength=10)
        assert torch.equal(labels, idx % 10) and counts.min() == 100 and counts.max() == 101
    else:
        assert torch.equal(labels, torch.zeros(1005, dtype=torch.long))


def test_modules_build_from_lightning_cli_style_config(tmp_path, fashion_root):
    """``class_path: lightning_gen.data.<Name>`` with init_args parses and instantiates (what LightningCLI does)."""
    save(tmp_path / "imgs" / "a" / "0.png", 1)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    cases = [
        ("MNISTDataModule", {"root": str(tmp_path), "image_size": 32, "batch_size": 64}),
        ("FashionMNISTDataModule", {"root": str(fashion_root), "val_fraction": 0.0}),
        ("CIFAR10DataModule", {"root": str(tmp_path), "hflip": True, "pin_memory": False}),
        ("CelebADataModule", {"root": str(tmp_path), "crop_size": 108, "num_workers": 2}),
        ("CelebADataModule", {"root": str(tmp_path), "attributes": ["Blond_Hair", "Male"]}),
        ("ImageFolderDataModule", {"root": str(tmp_path / "imgs"), "channels": 1, "image_size": 32}),
    ]
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    for name, init_args in cases:
        cfg = parser.parse_object({"data": {"class_path": f"lightning_gen.data.{name}", "init_args": init_args}})
        dm = instantiate(cfg).data
        assert type(dm).__name__ == name
        for key, value in init_args.items():
            assert dm.hparams[key] == value
    assert dm.image_shape == (1, 32, 32) and dm.num_classes == 1


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="val_fraction"):
        MNISTDataModule(val_fraction=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        CIFAR10DataModule(batch_size=0)
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataModule(channels=4)
