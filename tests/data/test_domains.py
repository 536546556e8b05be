"""Tests for lightning_gen/data/domains.py: the domain transforms on hand-made images, and MNISTDomainsDataModule on
tiny fake idx files (plus one check on the real digits when they are present)."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from torch.testing import assert_close
from torch.utils.data import DataLoader

from lightning_gen.data import DOMAIN_TRANSFORMS, MNISTDomainsDataModule, ResumableDataLoader, domain_transform
from lightning_gen.data.images import _to_unit_range

THREE = ("identity", "rot90", "invert")


def write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 array in the idx format: 0, 0, type 0x08, ndim, big-endian int32 dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


TRAIN_LABELS = np.arange(60) % 10  # 6 per class
TEST_LABELS = np.sort(np.arange(40) % 10)  # 4 per class, sorted by class like the real t10k file


@pytest.fixture
def digits_root(tmp_path) -> Path:
    """Fake MNIST idx files: 60 train and 40 test images of seeded uint8 noise (no symmetry, so every domain
    transform changes them)."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, labels in (("train", TRAIN_LABELS), ("t10k", TEST_LABELS)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return tmp_path


def in_order(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a split's (images, domains), in the data set's order."""
    loader = DataLoader(dataset, batch_size=len(dataset), collate_fn=lambda batch: batch)
    images, domains = next(iter(loader))
    return images, domains


# -- the transforms -------------------------------------------------------------------------------------------------
IMAGE = torch.tensor([[1.0, -1.0, -1.0, -1.0],
                      [-1.0, -1.0, -1.0, -1.0],
                      [-1.0, -1.0, -1.0, -1.0],
                      [-1.0, -1.0, -0.5, -1.0]]).view(1, 1, 4, 4)
EXPECTED = {
    "identity": IMAGE[0, 0].tolist(),
    "rot90": [[-1.0, -1.0, -1.0, -1.0],  # counter-clockwise: the top-left pixel ends bottom-left
              [-1.0, -1.0, -1.0, -0.5],
              [-1.0, -1.0, -1.0, -1.0],
              [1.0, -1.0, -1.0, -1.0]],
    "flip": [[-1.0, -1.0, -1.0, 1.0],
             [-1.0, -1.0, -1.0, -1.0],
             [-1.0, -1.0, -1.0, -1.0],
             [-1.0, -1.0, -0.5, -1.0][::-1]],
    "invert": (-IMAGE[0, 0]).tolist(),
    "thicken": [[1.0, 1.0, -1.0, -1.0],  # the 3 x 3 maximum; the border stays -1 where no bright pixel is near
                [1.0, 1.0, -1.0, -1.0],
                [-1.0, -0.5, -0.5, -0.5],
                [-1.0, -0.5, -0.5, -0.5]],
}


@pytest.mark.parametrize("name", sorted(DOMAIN_TRANSFORMS))
def test_transform_of_a_hand_made_image(name):
    """Each transform gives exactly the hand-computed 4 x 4 image, for a batch of one and of two, and leaves its
    input alone."""
    assert sorted(EXPECTED) == sorted(DOMAIN_TRANSFORMS)
    before = IMAGE.clone()
    out = domain_transform(IMAGE, name)
    assert out.shape == (1, 1, 4, 4) and out.dtype == torch.float32
    assert out[0, 0].tolist() == EXPECTED[name]
    pair = domain_transform(torch.cat([IMAGE, -IMAGE]), name)
    assert torch.equal(pair[0], out[0]) and torch.equal(IMAGE, before)


@pytest.mark.parametrize("name", sorted(DOMAIN_TRANSFORMS))
def test_uint8_and_float_transforms_agree(name):
    """On uint8 images, every transform maps to the float one under x / 127.5 - 1: exactly, except invert
    (255 - x against -x), which can differ by one float32 rounding (2^-24); that is why the data module applies
    the float transform to every batch, so batches and held_out() + transform() agree bit for bit."""
    u = torch.randint(0, 256, (3, 1, 9, 9), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    u[0, 0, 0] = torch.arange(9, dtype=torch.uint8) * 31  # both extremes 0 and 248, at the border
    u[1] = torch.arange(81).view(1, 9, 9).to(torch.uint8) * 3  # 0 ... 240
    u[2, 0, -1, -1] = 255
    via_uint8 = domain_transform(u, name)
    assert via_uint8.dtype == torch.uint8
    expected = domain_transform(_to_unit_range(u), name)
    if name == "invert":
        assert torch.equal(via_uint8, 255 - u)
        assert_close(_to_unit_range(via_uint8), expected, atol=2.0**-24, rtol=0)
    else:
        assert torch.equal(_to_unit_range(via_uint8), expected)


def test_unknown_transform_lists_the_names():
    with pytest.raises(ValueError, match=r"'rot45'.*\['flip', 'identity', 'invert', 'rot90', 'thicken'\]"):
        domain_transform(IMAGE, "rot45")


# -- the data module ------------------------------------------------------------------------------------------------
def test_attributes_are_known_before_setup(tmp_path):
    """domain_names, multi_label, num_classes and image_shape right after __init__, with no files."""
    dm = MNISTDomainsDataModule(root=str(tmp_path / "absent"))
    assert dm.domain_names == ["identity", "rot90", "invert", "thicken"]
    assert dm.multi_label is False and dm.num_classes == 4 and dm.image_shape == (1, 28, 28)
    dm = MNISTDomainsDataModule(root=str(tmp_path / "absent"), domains=["thicken", "flip"], image_size=32)
    assert dm.domain_names == ["thicken", "flip"] and dm.num_classes == 2 and dm.image_shape == (1, 32, 32)
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw/train-images-idx3-ubyte[\s\S]*download"):
        dm.setup()


def test_one_balanced_domain_per_digit(digits_root):
    """Each digit of each split is in exactly one domain: train + val hold the file's 60 train digits once each;
    every domain gets the same number of digits overall and of each class, to within one."""
    dm = MNISTDomainsDataModule(root=str(digits_root), domains=THREE, val_fraction=0.1)
    dm.setup()
    raw = (digits_root / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()[16:]
    from_file = np.frombuffer(raw, np.uint8).reshape(60, 28, 28)
    seen: Counter = Counter()
    for split, size in (("train", 54), ("val", 6), ("test", 40)):
        digits, domains, classes = dm.held_out(split)
        assert digits.shape == (size, 1, 28, 28) and domains.shape == classes.shape == (size,)
        assert domains.dtype == classes.dtype == torch.int64
        counts = torch.bincount(domains, minlength=3)
        assert counts.sum() == size and counts.max() - counts.min() <= 1
        for c in range(10):
            per_class = torch.bincount(domains[classes == c], minlength=3)
            assert per_class.max() - per_class.min() <= 1
        if split != "test":
            seen.update(d.numpy().tobytes() for d in ((digits + 1) * 127.5).round().to(torch.uint8)[:, 0])
    assert seen == Counter(d.tobytes() for d in from_file)
    counts = torch.bincount(dm.held_out("test")[1], minlength=3)
    assert sorted(counts.tolist()) == [13, 13, 14]


def test_batches_are_the_held_out_digits_in_their_domain(digits_root):
    """Every split's images are exactly transform(held_out digits, assigned domain), the batch labels the assigned
    domains; transform takes one index, a name or one index per image; the domains are told apart."""
    dm = MNISTDomainsDataModule(root=str(digits_root), domains=THREE, val_fraction=0.1, batch_size=8)
    for split, loader in (("train", None), ("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        if loader is None:
            images, domains = in_order(dm.train_dataloader().dataset)
        else:
            batches = list(loader)
            images, domains = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        digits, assigned, _ = dm.held_out(split)
        assert torch.equal(domains, assigned)
        assert torch.equal(images, dm.transform(digits, assigned))
        for i in (0, len(digits) - 1):
            k = int(assigned[i])
            assert torch.equal(images[i : i + 1], dm.transform(digits[i : i + 1], k))
            assert torch.equal(images[i : i + 1], dm.transform(digits[i : i + 1], THREE[k]))
            for other in set(range(3)) - {k}:  # in one domain only
                assert not torch.equal(images[i : i + 1], dm.transform(digits[i : i + 1], other))
    rotated = dm.transform(digits, torch.ones_like(assigned))
    assert torch.equal(rotated, torch.rot90(digits, 1, (-2, -1)))
    assert torch.equal(dm.transform(digits, 2), -digits)


def test_batch_types_shapes_and_resize(digits_root):
    """Train batches: float32 (B, 1, S, S) in [-1, 1] and int64 (B,) domains from a ResumableDataLoader; at
    image_size 16 the truth still reproduces the batches exactly (digits are resized, then transformed)."""
    dm = MNISTDomainsDataModule(root=str(digits_root), domains=("rot90", "thicken"), image_size=16, batch_size=8)
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableDataLoader) and loader.drop_last
    x, y = next(iter(loader))
    assert x.shape == (8, 1, 16, 16) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert y.shape == (8,) and y.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    images, domains = next(iter(dm.test_dataloader()))
    digits, assigned, _ = dm.held_out("test")
    assert digits.shape == (40, 1, 16, 16)
    assert torch.equal(images, dm.transform(digits[:8], assigned[:8]))


def test_assignment_is_seeded(digits_root):
    """The same seed gives the same split and domains; another seed other domains (in every split)."""
    def assignment(seed: int) -> dict[str, torch.Tensor]:
        dm = MNISTDomainsDataModule(root=str(digits_root), domains=THREE, val_fraction=0.1, seed=seed)
        return {split: dm.held_out(split) for split in ("train", "val", "test")}

    first, again, other = assignment(0), assignment(0), assignment(1)
    for split in first:
        assert all(torch.equal(a, b) for a, b in zip(first[split], again[split]))
    assert not torch.equal(first["test"][1], other["test"][1])
    assert torch.equal(first["test"][0], other["test"][0])  # the same test digits, in other domains
    assert not torch.equal(first["train"][0], other["train"][0])  # another train/val split


def test_predict_yields_held_out_images_and_domains(digits_root):
    """predict_dataloader: the first predict_size test images in their domains, in order (all 40 when fewer)."""
    dm = MNISTDomainsDataModule(root=str(digits_root), domains=THREE, batch_size=4, predict_size=10)
    batches = list(dm.predict_dataloader())
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    images, domains = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    test_images, test_domains = next(iter(DataLoader(dm.test_dataloader().dataset, batch_size=10,
                                                     collate_fn=dm.test_dataloader().collate_fn)))
    assert torch.equal(images, test_images) and torch.equal(domains, test_domains)
    assert images.shape == (10, 1, 28, 28) and images.dtype == torch.float32
    dm = MNISTDomainsDataModule(root=str(digits_root), domains=THREE, batch_size=64, predict_size=1000)
    assert sum(len(b[0]) for b in dm.predict_dataloader()) == 40


def test_errors(digits_root):
    """Unknown, repeated or a single domain fail in __init__; a missing split and bad indices fail clearly."""
    with pytest.raises(ValueError, match=r"Unknown domain \['rot180'\].*'thicken'"):
        MNISTDomainsDataModule(domains=["identity", "rot180"])
    with pytest.raises(ValueError, match=r"\['rot90'\] more than once"):
        MNISTDomainsDataModule(domains=["rot90", "invert", "rot90"])
    for one in (["invert"], "invert"):
        with pytest.raises(ValueError, match="at least two domains"):
            MNISTDomainsDataModule(domains=one)
    dm = MNISTDomainsDataModule(root=str(digits_root), domains=THREE, val_fraction=0)
    with pytest.raises(ValueError, match=r"no 'val' split; it has \['test', 'train'\] \(val_fraction is 0"):
        dm.held_out("val")
    digits = dm.held_out("test")[0][:2]
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        dm.transform(digits, 3)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        dm.transform(digits, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        dm.transform(digits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="'thicken' is not one of"):
        dm.transform(digits, "thicken")


def test_builds_from_a_lightning_cli_style_config(tmp_path):
    """``class_path: lightning_gen.data.MNISTDomainsDataModule`` with a domains list parses and instantiates."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    init_args = {"root": str(tmp_path), "domains": ["identity", "flip", "thicken"], "seed": 3}
    cfg = parser.parse_object({"data": {"class_path": "lightning_gen.data.MNISTDomainsDataModule",
                                        "init_args": init_args}})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    assert isinstance(dm, MNISTDomainsDataModule) and dm.domain_names == ["identity", "flip", "thicken"]
    assert list(dm.hparams["domains"]) == init_args["domains"] and "hflip" not in dm.hparams


def test_real_digits_balanced_per_class_and_exact(mnist_root):
    """On the real digits (t10k sorted by class): four domains, each with the same share of every class to within
    one, and the test batches equal to transform(held_out digits, domains)."""
    dm = MNISTDomainsDataModule(root=str(mnist_root), batch_size=256)
    digits, assigned, classes = dm.held_out("test")
    for c in range(10):
        per_class = torch.bincount(assigned[classes == c], minlength=4)
        assert per_class.max() - per_class.min() <= 1
    images, domains = next(iter(dm.test_dataloader()))
    assert torch.equal(domains, assigned[:256]) and torch.equal(images, dm.transform(digits[:256], domains))
    assert images[domains == 2].mean() > 0.5 > -0.5 > images[domains == 0].mean()  # inverted: mostly white
