"""Image-to-image data modules: unpaired folders A and B (CycleGAN-style) and aligned pairs (pix2pix-style).

Every train/val/test/predict batch is a dict ``{"a": Tensor(B, C, H, W), "b": Tensor(B, C, H, W)}`` of float32
images in [-1, 1] (uint8 0 -> -1 and 255 -> 1 exactly, as in :mod:`lightning_gen.data.images`).

Preprocessing (both modules): each image is resized to a ``load_size x load_size`` square (aspect ratio not kept,
as in pix2pix/CycleGAN; skipped when it already has that size), then cropped to ``image_size x image_size`` - a
random window for training, the centre for val/test/predict - and, with ``flip``, flipped left-right at random for
training only. ``load_size=None`` means ``load_size = image_size`` (no crop). In :class:`PairedImageDataModule`
the A and B images of a pair get the *same* crop window and the *same* flip.

Splits: ``val_fraction`` of the training files (of each folder, or of the pairs) is a seeded random validation
split. ``test_root`` (paired) or ``test_root_a``/``test_root_b`` (unpaired) name held-out folders for the test
loader; validation falls back to them when ``val_fraction`` is 0, and the test loader falls back to the val split.

Folders: ``root_a``/``root_b`` (unpaired) and ``root`` (paired) left out default to ``trainA``/``trainB`` and
``train`` under ``$LIGHTNING_GEN_DATA`` when that environment variable is set, else under ``data``
(:mod:`lightning_gen.data.root`); a folder given explicitly is used as given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Optional, Union

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from lightning_gen.data.images import IMAGE_EXTENSIONS, _is_image, _random_split, _to_unit_range
from lightning_gen.data.resumable import ResumableDataLoader, SeededAugmentation
from lightning_gen.data.root import DATA_ENV, describe_data_root, resolve_data_root

__all__ = ["UnpairedImageDataModule", "PairedImageDataModule", "UnpairedSampler"]

PairedMode = Literal["concatenated", "folders"]
Direction = Literal["AtoB", "BtoA"]

_EXPECTED = "/".join(IMAGE_EXTENSIONS)


def _root_note(root: Optional[str], argument: str) -> str:
    """For missing-folder errors: how the folder was chosen, and that ``LIGHTNING_GEN_DATA`` moves the defaults."""
    return (f" ({describe_data_root(root, argument)}; `--data.{argument} <folder>` sets it, and {DATA_ENV} moves "
            f"the default folder of every argument left out)")


def _list_images(folder: Path, what: str, note: str = "") -> list[str]:
    """Sorted image paths directly inside ``folder``; raises naming the folder when it is missing or has none."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} folder {str(folder)!r} ({folder.resolve()}) does not exist. Create it and put {_EXPECTED} "
            f"images in it, or point the argument at the folder that holds them{note}."
        )
    paths = sorted(e.path for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
    if not paths:
        raise FileNotFoundError(
            f"{what} folder {str(folder)!r} ({folder.resolve()}) holds no images: expected files ending in "
            f"{_EXPECTED} directly inside it (subfolders are not searched)."
        )
    return paths


def _load_uint8(path: str, mode: str) -> Tensor:
    """Decode one image file to a uint8 ``(C, H, W)`` tensor in PIL ``mode`` (``RGB`` or ``L``)."""
    try:
        with Image.open(path) as img:
            return TF.pil_to_tensor(img.convert(mode))
    except OSError as err:
        raise OSError(f"Could not read image {path}: {err}. Remove or replace the file.") from err


def _resize_square(image: Tensor, size: int) -> Tensor:
    """Resize a uint8 ``(C, H, W)`` image to ``size x size`` (bilinear, antialiased); no-op when already that size."""
    if image.shape[-2:] == (size, size):
        return image
    return TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


class _PairTransform:
    """Resize, crop (random when training, else centre) and maybe flip; identical for all images of one call."""

    def __init__(self, image_size: int, load_size: int, train: bool, flip: bool) -> None:
        self.image_size = image_size
        self.load_size = load_size
        self.train = train
        self.flip = flip and train

    def __call__(self, *images: Tensor) -> list[Tensor]:
        images_ = [_resize_square(im, self.load_size) for im in images]
        margin = self.load_size - self.image_size
        if self.train and margin > 0:
            top, left = (int(v) for v in torch.randint(0, margin + 1, (2,)))
        else:
            top = left = margin // 2
        flip = self.flip and bool(torch.rand(()) < 0.5)
        out = []
        for im in images_:
            im = im[..., top : top + self.image_size, left : left + self.image_size]
            out.append(_to_unit_range(im.flip(-1) if flip else im))
        return out


class _UnpairedDataset(SeededAugmentation, Dataset):
    """Items ``(index_a, index_b)`` -> ``{"a": image, "b": image}``, each image transformed independently."""

    def __init__(self, paths_a: Sequence[str], paths_b: Sequence[str], transform: _PairTransform, mode: str) -> None:
        # numpy string arrays, not lists: workers would otherwise copy them page by page (refcount writes)
        self.paths_a = np.asarray(paths_a, dtype=np.str_)
        self.paths_b = np.asarray(paths_b, dtype=np.str_)
        self.transform = transform
        self.mode = mode
        self.init_augmentation()

    def __len__(self) -> int:
        return max(len(self.paths_a), len(self.paths_b))

    def __getitem__(self, index: Union[int, tuple[int, int]]) -> dict[str, Tensor]:
        # a plain int (val/test: fixed pairing) cycles both folders; the training sampler passes (i_a, i_b)
        if isinstance(index, tuple):
            i_a, i_b = index
        else:
            i_a, i_b = int(index) % len(self.paths_a), int(index) % len(self.paths_b)
        with self.augmentation_rng(("a", i_a, i_b)):
            (a,) = self.transform(_load_uint8(str(self.paths_a[i_a]), self.mode))
        with self.augmentation_rng(("b", i_a, i_b)):
            (b,) = self.transform(_load_uint8(str(self.paths_b[i_b]), self.mode))
        return {"a": a, "b": b}


class UnpairedSampler(Sampler):
    """Random A/B pairing for one epoch: yields ``(index_a, index_b)``, reproducible from ``(seed, epoch)``.

    An epoch has ``max(len_a, len_b)`` items; item ``k`` pairs ``A[k % len_a]`` with a uniformly drawn ``B`` index,
    and the items come in a shuffled order. Every A image appears at least once per epoch (exactly once when
    ``len_a >= len_b``). ``set_epoch`` (called by Lightning before each training epoch) picks the epoch; without
    it each iteration advances the epoch by one, so a plain loop also gets a new pairing every epoch.
    """

    deterministic_per_epoch = True  # a resumed ResumableDataLoader can replay an epoch from its position

    def __init__(self, len_a: int, len_b: int, seed: int = 0) -> None:
        self.len_a = len_a
        self.len_b = len_b
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return max(self.len_a, self.len_b)

    def set_epoch(self, epoch: int) -> None:
        """Use the pairing of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def pairs(self, epoch: int) -> list[tuple[int, int]]:
        """The ``(index_a, index_b)`` items of ``epoch``, in iteration order."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self)
        index_a = torch.arange(n) % self.len_a
        index_b = torch.randint(0, self.len_b, (n,), generator=gen)
        order = torch.randperm(n, generator=gen)
        return list(zip(index_a[order].tolist(), index_b[order].tolist()))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pairs = self.pairs(self.epoch)
        self.epoch += 1
        return iter(pairs)


class _PairedDataset(SeededAugmentation, Dataset):
    """Aligned pairs -> ``{"a": image, "b": image}`` with one shared crop window and flip per pair."""

    def __init__(
        self,
        items: Sequence[Union[str, tuple[str, str]]],
        transform: _PairTransform,
        mode: str,
        swap: bool,
    ) -> None:
        # concatenated: items are paths; folders: (path_a, path_b)
        self.concatenated = bool(items) and isinstance(items[0], str)
        self.items = np.asarray(items, dtype=np.str_)
        self.transform = transform
        self.mode = mode
        self.swap = swap
        self.init_augmentation()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if self.concatenated:
            path = str(self.items[index])
            image = _load_uint8(path, self.mode)
            width = image.shape[-1]
            if width % 2:
                raise ValueError(
                    f"{path} is {width} px wide, an odd width: mode='concatenated' expects A and B side by side "
                    f"(A|B) with equal halves. Fix the image, or use mode='folders' with separate A/ and B/ folders."
                )
            a, b = image[..., : width // 2], image[..., width // 2 :]
        else:
            path_a, path_b = (str(p) for p in self.items[index])
            a, b = _load_uint8(path_a, self.mode), _load_uint8(path_b, self.mode)
        if self.swap:
            a, b = b, a
        with self.augmentation_rng(int(index)):
            a, b = self.transform(a, b)
        return {"a": a, "b": b}


class _ImageToImageDataModule(L.LightningDataModule):
    """Shared argument checks, transforms and loaders of the image-to-image data modules."""

    def __init__(
        self,
        image_size: int,
        load_size: Optional[int],
        flip: bool,
        channels: int,
        batch_size: int,
        val_fraction: float,
        num_workers: int,
        pin_memory: Optional[bool],
        seed: int,
        predict_size: int,
    ) -> None:
        super().__init__()
        load_size = image_size if load_size is None else int(load_size)
        for name, value in (("image_size", image_size), ("load_size", load_size), ("batch_size", batch_size),
                            ("predict_size", predict_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if image_size > load_size:
            raise ValueError(
                f"image_size={image_size} is larger than load_size={load_size}: images are resized to load_size and "
                f"then cropped to image_size, so the crop cannot be larger. Set load_size >= image_size (or null)."
            )
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.image_size = int(image_size)
        self.load_size = load_size
        self.flip = flip
        self.channels = channels
        self.batch_size = batch_size
        self.val_fraction = float(val_fraction)
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.seed = seed
        self.predict_size = predict_size
        self.image_shape: tuple[int, int, int] = (channels, self.image_size, self.image_size)
        self._mode = "RGB" if channels == 3 else "L"
        self._sets: dict[str, Dataset] = {}

    def _transform(self, train: bool) -> _PairTransform:
        return _PairTransform(self.image_size, self.load_size, train=train, flip=self.flip)

    def _build_splits(self) -> dict[str, Dataset]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the train/val/test datasets (the same on every rank for the same ``seed``)."""
        if not self._sets:
            self._sets = {name: ds for name, ds in self._build_splits().items() if len(ds) > 0}

    def _loader(self, dataset: Dataset, shuffle: bool, sampler: Optional[Sampler] = None) -> DataLoader:
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            # a training set smaller than one batch still gives one (partial) batch per epoch, not none
            drop_last=shuffle and len(dataset) >= self.batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> Union[DataLoader, list]:
        """Held-out ``{"a", "b"}`` batches: the val split, else the test folders, else none (``[]``)."""
        self.setup()
        dataset = self._sets.get("val", self._sets.get("test"))
        return [] if dataset is None else self._loader(dataset, shuffle=False)

    def _held_out(self) -> Dataset:
        dataset = self._sets.get("test", self._sets.get("val"))
        if dataset is None:
            raise ValueError(
                f"{type(self).__name__} has no held-out images: no test folder was given and val_fraction is 0. "
                f"Set the test folder argument, or val_fraction > 0 (e.g. 0.05)."
            )
        return dataset

    def test_dataloader(self) -> DataLoader:
        """``{"a", "b"}`` batches of the test folders, or of the val split when there are none."""
        self.setup()
        return self._loader(self._held_out(), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The first ``predict_size`` held-out items (test, else val) as ``{"a", "b"}`` batches, eval transforms."""
        self.setup()
        dataset = self._held_out()
        n = min(self.predict_size, len(dataset))  # type: ignore[arg-type]
        return self._loader(torch.utils.data.Subset(dataset, range(n)), shuffle=False)


class UnpairedImageDataModule(_ImageToImageDataModule):
    """Two unaligned image folders A and B (CycleGAN-style), randomly re-paired each training epoch.

    Batches are ``{"a": (B, C, H, W), "b": (B, C, H, W)}`` in [-1, 1]. Training pairs come from
    :class:`UnpairedSampler` (``max(len_a, len_b)`` items per epoch, a fresh seeded pairing per epoch; Lightning
    calls its ``set_epoch``); A and B images are cropped and flipped independently. Val/test pair ``A[i % len_a]``
    with ``B[i % len_b]`` (fixed). ``val_fraction`` splits each folder separately; ``test_root_a``/``test_root_b``
    (e.g. CycleGAN's ``testA``/``testB``) are the test folders. Images sit directly in each folder.
    """

    def __init__(
        self,
        root_a: Optional[str] = None,
        root_b: Optional[str] = None,
        image_size: int = 256,
        load_size: Optional[int] = None,
        flip: bool = True,
        channels: int = 3,
        batch_size: int = 1,
        val_fraction: float = 0.0,
        test_root_a: Optional[str] = None,
        test_root_b: Optional[str] = None,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
        seed: int = 0,
        predict_size: int = 10_000,
    ) -> None:
        super().__init__(image_size, load_size, flip, channels, batch_size, val_fraction, num_workers, pin_memory,
                         seed, predict_size)
        if (test_root_a is None) != (test_root_b is None):
            raise ValueError("Give both test_root_a and test_root_b, or neither.")
        self.save_hyperparameters()
        self.root_a = resolve_data_root(root_a, "trainA")
        self.root_b = resolve_data_root(root_b, "trainB")
        # scanned now so that missing or empty folders fail at construction, not mid-fit
        self._paths_a = _list_images(self.root_a, "UnpairedImageDataModule root_a (domain A)",
                                     _root_note(root_a, "root_a"))
        self._paths_b = _list_images(self.root_b, "UnpairedImageDataModule root_b (domain B)",
                                     _root_note(root_b, "root_b"))
        self._test_paths: Optional[tuple[list[str], list[str]]] = None
        if test_root_a is not None and test_root_b is not None:
            self._test_paths = (
                _list_images(Path(test_root_a).expanduser(), "UnpairedImageDataModule test_root_a (domain A)"),
                _list_images(Path(test_root_b).expanduser(), "UnpairedImageDataModule test_root_b (domain B)"),
            )

    def _build_splits(self) -> dict[str, Dataset]:
        tr_a, va_a = _random_split(len(self._paths_a), self.val_fraction, self.seed)
        tr_b, va_b = _random_split(len(self._paths_b), self.val_fraction, self.seed + 1)
        pick = lambda paths, idx: [paths[i] for i in idx.tolist()]  # noqa: E731
        sets: dict[str, Dataset] = {
            "train": _UnpairedDataset(pick(self._paths_a, tr_a), pick(self._paths_b, tr_b),
                                      self._transform(True), self._mode)
        }
        if len(va_a) and len(va_b):
            sets["val"] = _UnpairedDataset(pick(self._paths_a, va_a), pick(self._paths_b, va_b),
                                           self._transform(False), self._mode)
        if self._test_paths is not None:
            sets["test"] = _UnpairedDataset(*self._test_paths, self._transform(False), self._mode)
        return sets

    def train_dataloader(self) -> DataLoader:
        """``{"a", "b"}`` batches with a new random A/B pairing each epoch (see :class:`UnpairedSampler`)."""
        self.setup()
        train: _UnpairedDataset = self._sets["train"]  # type: ignore[assignment]
        sampler = UnpairedSampler(len(train.paths_a), len(train.paths_b), seed=self.seed)
        return self._loader(train, shuffle=True, sampler=sampler)


class PairedImageDataModule(_ImageToImageDataModule):
    """Aligned image pairs (pix2pix-style): A|B side-by-side files, or folders ``A/`` and ``B/`` with matching names.

    ``mode="concatenated"``: every image directly in ``root`` holds A on the left half and B on the right half
    (the width must be even). ``mode="folders"``: ``root/A/x.png`` pairs with ``root/B/x.<any ext>`` (matched by
    file name without extension; every name must be in both). ``direction="BtoA"`` swaps the two, so ``"a"`` is
    always the model's input. A and B of one pair get the same resize, crop window and flip. Batches are
    ``{"a": (B, C, H, W), "b": (B, C, H, W)}`` in [-1, 1]. ``test_root`` is a held-out folder of the same layout.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        mode: PairedMode = "concatenated",
        direction: Direction = "AtoB",
        image_size: int = 256,
        load_size: Optional[int] = None,
        flip: bool = True,
        channels: int = 3,
        batch_size: int = 1,
        val_fraction: float = 0.0,
        test_root: Optional[str] = None,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
        seed: int = 0,
        predict_size: int = 10_000,
    ) -> None:
        super().__init__(image_size, load_size, flip, channels, batch_size, val_fraction, num_workers, pin_memory,
                         seed, predict_size)
        if mode not in ("concatenated", "folders"):
            raise ValueError(
                f"mode must be 'concatenated' (A|B side by side) or 'folders' (root/A, root/B), got {mode!r}"
            )
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
        self.save_hyperparameters()
        self.root = resolve_data_root(root, "train")
        self.mode = mode
        self.direction = direction
        self._items = self._scan(self.root, "root", _root_note(root, "root"))
        self._test_items = None if test_root is None else self._scan(Path(test_root).expanduser(), "test_root")

    def _scan(self, root: Path, arg: str, note: str = "") -> list[Union[str, tuple[str, str]]]:
        """Concatenated: image paths; folders: ``(path_a, path_b)`` matched by name. Raises on missing/mismatched."""
        if self.mode == "concatenated":
            return list(_list_images(root, f"PairedImageDataModule {arg} (A|B side-by-side images)", note))
        if not root.is_dir():
            raise FileNotFoundError(
                f"PairedImageDataModule {arg} folder {str(root)!r} ({root.resolve()}) does not exist: "
                f"mode='folders' expects {root}/A/ and {root}/B/ holding {_EXPECTED} images with matching names{note}."
            )
        by_stem: dict[str, dict[str, str]] = {}
        for side in ("A", "B"):
            paths = _list_images(root / side, f"PairedImageDataModule {arg}/{side} (mode='folders', side {side})")
            stems: dict[str, str] = {}
            for p in paths:
                stem = Path(p).stem
                if stem in stems:
                    raise ValueError(f"{root / side} holds two images named {stem!r}: {stems[stem]} and {p}.")
                stems[stem] = p
            by_stem[side] = stems
        only_a = sorted(set(by_stem["A"]) - set(by_stem["B"]))
        only_b = sorted(set(by_stem["B"]) - set(by_stem["A"]))
        if only_a or only_b:
            few = lambda names: ", ".join(names[:5]) + (f" ... ({len(names)} in all)" if len(names) > 5 else "")  # noqa: E731
            raise ValueError(
                f"PairedImageDataModule mode='folders': the names in {root / 'A'} and {root / 'B'} do not match "
                f"(pairs are matched by file name without extension). "
                f"In A but not in B: {few(only_a) or 'none'}. In B but not in A: {few(only_b) or 'none'}. "
                f"Add or remove files so that every image has its partner."
            )
        return [(by_stem["A"][s], by_stem["B"][s]) for s in sorted(by_stem["A"])]

    def _build_splits(self) -> dict[str, Dataset]:
        swap = self.direction == "BtoA"
        tr, va = _random_split(len(self._items), self.val_fraction, self.seed)
        pick = lambda idx: [self._items[i] for i in idx.tolist()]  # noqa: E731
        sets: dict[str, Dataset] = {"train": _PairedDataset(pick(tr), self._transform(True), self._mode, swap)}
        if len(va):
            sets["val"] = _PairedDataset(pick(va), self._transform(False), self._mode, swap)
        if self._test_items is not None:
            sets["test"] = _PairedDataset(self._test_items, self._transform(False), self._mode, swap)
        return sets

    def train_dataloader(self) -> DataLoader:
        """Shuffled ``{"a", "b"}`` batches; full batches only (``drop_last``) unless the set is smaller."""
        self.setup()
        return self._loader(self._sets["train"], shuffle=True)
