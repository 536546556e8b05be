"""Image data modules: MNIST, Fashion-MNIST, CIFAR-10, CelebA and a folder of your own images, scaled to [-1, 1].

Every train/val/test batch is ``(images, labels)``: images float32 ``(B, C, H, W)`` with uint8 0 -> -1 and
255 -> 1 exactly (``x / 127.5 - 1``), labels int64 (float32 rows of 0./1. for CelebA with ``attributes``). The
small data sets (MNIST-like, CIFAR-10) live in memory as one uint8 tensor and are converted per batch; CelebA and
image folders are decoded per item by the DataLoader's workers (set ``num_workers``).

Splits: ``val_fraction`` of the training files (a random split, fixed by ``seed``) is the validation set. With
``val_fraction: 0`` the validation loader uses the data set's test split instead (MNIST, Fashion-MNIST, CIFAR-10,
CelebA with its partition file) and is empty where there is none. ``test_dataloader`` uses the official test split
where there is one and otherwise the validation split. CelebA with ``list_eval_partition.txt`` uses the official
train/val/test partition and ignores ``val_fraction``.
"""

from __future__ import annotations

import difflib
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from lightning_gen.data.resumable import ResumableDataLoader, SeededAugmentation
from lightning_gen.data.root import DATA_ENV, describe_data_root, resolve_data_root
from lightning_gen.data.toy import _already_batched, _BatchedTensorDataset

__all__ = [
    "ImageDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "CIFAR10DataModule",
    "CelebADataModule",
    "ImageFolderDataModule",
    "IMAGE_EXTENSIONS",
    "CELEBA_ATTRIBUTES",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# the 40 columns of CelebA's list_attr_celeba.txt, in the file's order
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)


def _to_unit_range(images: Tensor) -> Tensor:
    """uint8 images -> float32 in [-1, 1]; 0 -> -1 and 255 -> 1 exactly (127.5 and 2.0 are exact in float32)."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def _resize_uint8(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize a uint8 ``(N, C, H, W)`` stack to ``size x size`` (bilinear, antialiased), in chunks to bound memory."""
    if images.shape[-2:] == (size, size):
        return images
    out = [
        TF.resize(images[i : i + chunk], [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(out) if out else images.new_empty((0, images.shape[1], size, size))


def _random_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Disjoint sorted (train, val) indices of ``range(n)``: ``round(n * val_fraction)`` (at least 1) go to val."""
    if val_fraction <= 0 or n < 2:
        return torch.arange(n), torch.zeros(0, dtype=torch.long)
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _label_tensor(labels: Any) -> Tensor:
    """Class indices -> int64 ``(N,)``; multi-hot rows (float tensors or sequences of 0./1.) -> float32 ``(N, K)``."""
    if isinstance(labels, Tensor):
        return labels.to(torch.float32) if labels.is_floating_point() else labels.to(torch.long)
    if len(labels) and isinstance(labels[0], (Sequence, np.ndarray, Tensor)):
        return torch.as_tensor(np.asarray(labels, dtype=np.float32))
    return torch.as_tensor(labels, dtype=torch.long)


class _InMemoryImageDataset(SeededAugmentation, _BatchedTensorDataset):
    """uint8 images ``(N, C, H, W)`` and int64 labels, converted to [-1, 1] floats a whole batch at a time."""

    def __init__(self, images: Tensor, labels: Tensor, hflip: bool = False) -> None:
        super().__init__(images, labels)
        self.hflip = hflip
        self.init_augmentation()

    def _finish(self, images: Tensor, indices: list[int]) -> Tensor:
        if self.hflip:
            with self.augmentation_rng(tuple(indices)):
                flip = torch.rand(images.shape[0]) < 0.5
            images[flip] = images[flip].flip(-1)
        return _to_unit_range(images)

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        images, labels = super().__getitems__(indices)
        return [self._finish(images, indices), labels]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]


class _ImageFileDataset(SeededAugmentation, Dataset):
    """Image files decoded with PIL per item: ``(float image in [-1, 1], label)``; the label is an int64 class index,
    or a float32 row of 0./1. attributes when ``labels`` is a float ``(N, K)`` tensor."""

    def __init__(self, paths: Sequence[str], labels: Tensor, transform: v2.Transform, mode: str) -> None:
        # a numpy string array, not a list: workers would otherwise copy it page by page (refcount writes)
        self.paths = np.asarray(paths, dtype=np.str_)
        self.labels = _label_tensor(labels)
        self.transform = transform
        self.mode = mode
        self.init_augmentation()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = str(self.paths[index])
        try:
            with Image.open(path) as img, self.augmentation_rng(int(index)):
                image = self.transform(img.convert(self.mode))
        except OSError as err:
            raise OSError(f"Could not read image {path}: {err}. Remove or replace the file.") from err
        return _to_unit_range(image), self.labels[index]


class ImageDataModule(L.LightningDataModule):
    """Shared base of the image data modules: splits, loaders, prediction indices and clear missing-data errors.

    Args:
        root: folder that holds the data set (the layout each subclass names; created by ``download: true``).
            ``None`` (default): ``$LIGHTNING_GEN_DATA`` when that environment variable is set, else ``data``
            (see :mod:`lightning_gen.data.root`); an explicit value is used as given.
        image_size: side of the square images; ``None`` takes the data set's default (28 MNIST-like, 32 CIFAR-10,
            64 CelebA and image folders). Other sizes are resized once (in-memory sets) or per item (files).
        batch_size: images per batch (train, val, test and predict).
        val_fraction: fraction of the training files held out for validation, a random split fixed by ``seed``;
            0 -> validation uses the test split where the data set has one (see the module docstring).
        num_workers: DataLoader worker processes (use several for CelebA and image folders).
        pin_memory: pin batches in page-locked memory; ``None`` -> True when CUDA is available.
        download: fetch the data into ``root`` when it is missing (needs internet); never touches the network
            when False.
        seed: seed of the train/val split.
        predict_size: number of ``(index, label)`` items ``predict_dataloader`` yields (one sample is drawn per item).
        hflip: random horizontal flips of training images (never of val/test); leave off for digits.

    Attributes set in ``__init__``: ``num_classes`` (0: unconditional), ``image_shape`` ``(C, H, W)``, and for
    image-to-image translation between domains (StarGAN) ``domain_names`` (the name of each domain a label
    indexes; empty when the labels name no domains) and ``multi_label`` (False: a label is one domain index, int64
    ``(B,)``; True: a label is a float ``(B, len(domain_names))`` row of 0./1. attributes).
    """

    _default_image_size: ClassVar[int] = 64
    _channels: ClassVar[int] = 3
    _num_classes: ClassVar[int] = 0
    _hparams_ignore: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        root: Optional[str] = None,
        image_size: Optional[int] = None,
        batch_size: int = 128,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
        download: bool = False,
        seed: int = 0,
        predict_size: int = 10_000,
        hflip: bool = False,
    ) -> None:
        super().__init__()
        image_size = self._default_image_size if image_size is None else int(image_size)
        for name, value in (("image_size", image_size), ("batch_size", batch_size), ("predict_size", predict_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters(ignore=list(self._hparams_ignore))
        self.root = resolve_data_root(root)
        self._root_given = root
        self.image_size = image_size
        self.batch_size = batch_size
        self.val_fraction = float(val_fraction)
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.download = download
        self.seed = seed
        self.predict_size = predict_size
        self.hflip = hflip
        self.num_classes: int = self._num_classes
        self.image_shape: tuple[int, int, int] = (self._channels, image_size, image_size)
        self.domain_names: list[str] = []
        self.multi_label: bool = False
        self._sets: dict[str, Dataset] = {}

    # -- what a subclass provides ---------------------------------------------------------------------------------
    def _missing(self) -> list[str]:
        """Descriptions of the required files or folders that are absent (empty list: all there)."""
        raise NotImplementedError

    def _how_to_get(self) -> str:
        """Where the files must be and how to get them; must name ``download`` and ``root``."""
        raise NotImplementedError

    def _download(self) -> None:
        """Fetch the data into ``root`` (called only with ``download=True`` and missing files)."""
        raise NotImplementedError

    def _build_splits(self) -> dict[str, Dataset]:
        """Load the data: ``{"train": ..., "val": ... (optional), "test": ... (optional)}``."""
        raise NotImplementedError

    # -- shared machinery -----------------------------------------------------------------------------------------
    def _not_found(self, missing: list[str], problem: str = "", hint: str = "") -> FileNotFoundError:
        """The missing-data error: what is missing, where it must be, and how to get it."""
        listed = "\n".join(f"  {m}" for m in missing)
        where = f"root={str(self.root)!r} ({self.root.resolve()})"
        head = problem or f"{type(self).__name__} found no data under {where}{hint}."
        return FileNotFoundError(f"{head}\nMissing:\n{listed}\n{self._how_to_get()}\n{self._where_from()}")

    def _where_from(self) -> str:
        """How the root was chosen and the two ways to point it elsewhere (``--data.root``, ``LIGHTNING_GEN_DATA``)."""
        return (
            f"The root: {describe_data_root(self._root_given)}. To read a copy elsewhere, pass `--data.root <folder>` "
            f"(or `root:` under data.init_args in the YAML), or `export {DATA_ENV}=<folder>` to point every data module "
            f"whose `root` is left out at it."
        )

    def prepare_data(self) -> None:
        """Check the files are there; with ``download=True`` fetch missing ones first (once per node)."""
        missing = self._missing()
        if missing and self.download:
            try:
                self._download()
            except Exception as err:
                problem = f"{type(self).__name__} could not download its data into {self.root.resolve()} ({err!r})."
                raise self._not_found(missing, problem) from err
            missing = self._missing()
        if missing:
            raise self._not_found(missing)

    def setup(self, stage: Optional[str] = None) -> None:
        """Load the splits (identical on every rank for the same ``seed``); raise clearly when files are missing."""
        if self._sets:
            return
        missing = self._missing()
        if missing:
            hint = " (with download=True, call prepare_data() first; the Trainer does)" if self.download else ""
            raise self._not_found(missing, hint=hint)
        sets = self._build_splits()
        if len(sets["train"]) == 0:
            raise ValueError(f"{type(self).__name__}: the training split under {self.root.resolve()} is empty.")
        self._sets = {name: ds for name, ds in sets.items() if ds is not None and len(ds) > 0}

    def _in_memory_splits(
        self, train_x: Tensor, train_y: Tensor, test_x: Optional[Tensor] = None, test_y: Optional[Tensor] = None
    ) -> dict[str, Dataset]:
        """Resize uint8 ``(N, C, H, W)`` stacks once and split the training part into train/val."""
        train_x = _resize_uint8(train_x, self.image_size)
        train_y = _label_tensor(train_y)
        tr, va = _random_split(len(train_x), self.val_fraction, self.seed)
        sets: dict[str, Dataset] = {"train": _InMemoryImageDataset(train_x[tr], train_y[tr], hflip=self.hflip)}
        if len(va):
            sets["val"] = _InMemoryImageDataset(train_x[va], train_y[va])
        if test_x is not None and test_y is not None:
            sets["test"] = _InMemoryImageDataset(
                _resize_uint8(test_x, self.image_size), _label_tensor(test_y)
            )
        return sets

    def _file_transform(self, train: bool, crop_size: Optional[int] = None) -> v2.Transform:
        """PIL image -> uint8 tensor: [CenterCrop(crop_size)], Resize(short side), CenterCrop(square), [flip]."""
        steps: list[v2.Transform] = []
        if crop_size is not None:
            steps.append(v2.CenterCrop(crop_size))
        steps += [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]
        if train and self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.PILToTensor())
        return v2.Compose(steps)

    def _file_splits(
        self, splits: dict[str, tuple[list[str], list[Any]]], mode: str, crop_size: Optional[int] = None
    ) -> dict[str, Dataset]:
        """Datasets over image files, ``{split: (paths, labels)}``; only ``train`` gets random flips. A label is a
        class index (int64) or a row of 0./1. attributes (float32)."""
        return {
            name: _ImageFileDataset(
                paths, _label_tensor(labels), self._file_transform(name == "train", crop_size), mode)
            for name, (paths, labels) in splits.items()
        }

    def _split_files(self, paths: list[str], labels: list[Any]) -> dict[str, tuple[list[str], list[Any]]]:
        """Seeded random train/val split of a file list (labels travel with their files)."""
        tr, va = _random_split(len(paths), self.val_fraction, self.seed)

        def pick(idx: Tensor) -> tuple[list[str], list[Any]]:
            return [paths[i] for i in idx.tolist()], [labels[i] for i in idx.tolist()]

        return {"train": pick(tr), "val": pick(va)}

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # a Subset of a batched set fetches through the set's __getitems__ too
        batched = isinstance(dataset, _BatchedTensorDataset) or isinstance(
            getattr(dataset, "dataset", None), _BatchedTensorDataset)
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            # a training set smaller than one batch still gives one (partial) batch per epoch, not none
            drop_last=shuffle and len(dataset) >= self.batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=_already_batched if batched else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled ``(images, labels)`` batches; full batches only (``drop_last``) unless the set is smaller."""
        self.setup()
        return self._loader(self._sets["train"], shuffle=True)

    def val_dataloader(self) -> Union[DataLoader, list]:
        """Held-out ``(images, labels)`` batches: the val split, else the test split, else none (``[]``)."""
        self.setup()
        dataset = self._sets.get("val", self._sets.get("test"))
        return [] if dataset is None else self._loader(dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """``(images, labels)`` batches of the test split, or of the val split when the data set has no test split."""
        self.setup()
        dataset = self._sets.get("test", self._sets.get("val"))
        if dataset is None:
            raise ValueError(
                f"{type(self).__name__} has no held-out images to test on: this data set has no test split and "
                f"val_fraction is 0. Set val_fraction > 0 (e.g. 0.05)."
            )
        return self._loader(dataset, shuffle=False)

    def _held_out_images_loader(self) -> DataLoader:
        """The first ``predict_size`` held-out ``(images, labels)`` items, in order: the test split, else val.

        The predict loader of the translation data sets (images with domain labels), whose models translate images.
        """
        self.setup()
        dataset = self._sets.get("test", self._sets.get("val"))
        if dataset is None:
            raise ValueError(
                f"{type(self).__name__} has no held-out images to predict on: this data set has no test split and "
                f"val_fraction is 0. Set val_fraction > 0 (e.g. 0.05)."
            )
        n = min(self.predict_size, len(dataset))  # type: ignore[arg-type]
        return self._loader(Subset(dataset, range(n)) if n < len(dataset) else dataset, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """``predict_size`` items as ``(indices, labels)`` batches, labels ``index % num_classes`` (0 unconditional)."""
        indices = torch.arange(self.predict_size)
        labels = indices % self.num_classes if self.num_classes > 0 else torch.zeros_like(indices)
        return DataLoader(
            _BatchedTensorDataset(indices, labels), batch_size=self.batch_size, collate_fn=_already_batched
        )


class _IdxDigitsDataModule(ImageDataModule):
    """MNIST-style data in torchvision's layout ``<root>/<Name>/raw/*-idx?-ubyte``, read by torchvision."""

    _default_image_size = 28
    _channels = 1
    _num_classes = 10
    _folder: ClassVar[str] = "MNIST"
    _files: ClassVar[tuple[str, ...]] = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )

    @property
    def _raw(self) -> Path:
        return self.root / self._folder / "raw"

    def _missing(self) -> list[str]:
        return [str(self._raw / f) for f in self._files if not (self._raw / f).is_file()]

    def _how_to_get(self) -> str:
        return (
            f"{type(self).__name__} expects the four uncompressed idx files {', '.join(self._files)} in "
            f"{self._raw.resolve()} (torchvision's layout <root>/{self._folder}/raw/). To get them, set "
            f"`download: true` (--data.download true, or download=True) on a machine with internet access; offline, "
            f"run `python -c \"import torchvision; torchvision.datasets.{self._folder}('data', download=True)\"` on a "
            f"machine with internet and copy its data/{self._folder}/raw/ files into exactly that folder, or set "
            f"`root` to the folder that contains {self._folder}/raw/."
        )

    def _torchvision_class(self) -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, self._folder)

    def _download(self) -> None:
        cls = self._torchvision_class()
        for train in (True, False):
            cls(str(self.root), train=train, download=True)

    def _build_splits(self) -> dict[str, Dataset]:
        cls = self._torchvision_class()
        train = cls(str(self.root), train=True, download=False)
        test = cls(str(self.root), train=False, download=False)
        return self._in_memory_splits(train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets)


class MNISTDataModule(_IdxDigitsDataModule):
    """MNIST digits (10 classes, 1 x 28 x 28) from ``<root>/MNIST/raw/``, in memory; test split = the t10k files."""

    _folder = "MNIST"


class FashionMNISTDataModule(_IdxDigitsDataModule):
    """Fashion-MNIST (10 classes, 1 x 28 x 28) from ``<root>/FashionMNIST/raw/``, in memory; test = the t10k files."""

    _folder = "FashionMNIST"


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (10 classes, 3 x 32 x 32) from the python pickles in ``<root>/cifar-10-batches-py/``, in memory.

    The batches are read directly (torchvision's class insists on MD5 checksums); ``download: true`` uses
    torchvision to fetch and unpack them first. Test split = ``test_batch``.
    """

    _default_image_size = 32
    _channels = 3
    _num_classes = 10
    _files: ClassVar[tuple[str, ...]] = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

    @property
    def _folder(self) -> Path:
        return self.root / "cifar-10-batches-py"

    def _missing(self) -> list[str]:
        return [str(self._folder / f) for f in self._files if not (self._folder / f).is_file()]

    def _how_to_get(self) -> str:
        return (
            f"CIFAR10DataModule expects the python-version batches {', '.join(self._files)} in "
            f"{self._folder.resolve()}. To get them, set `download: true` (--data.download true, or download=True) on "
            f"a machine with internet access; offline, download cifar-10-python.tar.gz from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html elsewhere and run `tar -xzf cifar-10-python.tar.gz -C "
            f"{self.root.resolve()}`, or set `root` to the folder that contains cifar-10-batches-py/."
        )

    def _download(self) -> None:
        import torchvision.datasets

        torchvision.datasets.CIFAR10(str(self.root), train=True, download=True)

    @staticmethod
    def _read_batch(path: Path) -> tuple[Tensor, Tensor]:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = entry[b"labels"] if b"labels" in entry else entry[b"fine_labels"]
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(
                f"{path} is not a CIFAR-10 python batch: expected b'data' of shape (N, 3072) and N labels, got "
                f"{data.shape} and {len(labels)} labels. Replace it with the file from cifar-10-python.tar.gz."
            )
        return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.as_tensor(labels, dtype=torch.long)

    def _build_splits(self) -> dict[str, Dataset]:
        parts = [self._read_batch(self._folder / f) for f in self._files[:-1]]
        test_x, test_y = self._read_batch(self._folder / "test_batch")
        train_x = torch.cat([p[0] for p in parts])
        train_y = torch.cat([p[1] for p in parts])
        return self._in_memory_splits(train_x, train_y, test_x, test_y)


class CelebADataModule(ImageDataModule):
    """CelebA aligned faces (3 x 64 x 64) from ``<root>/celeba/img_align_celeba/*.jpg``, decoded per item; labels all
    0, or with ``attributes`` the chosen binary attributes of each face (multi-label domains, as in StarGAN).

    Preprocessing follows the PyTorch DCGAN example: Resize(image_size) on the short side, then
    CenterCrop(image_size) (the 178 x 218 faces lose 7 px top and bottom at 64 px). ``crop_size`` first takes a
    centre crop of that many pixels, for tighter faces (108 in DCGAN-tensorflow, 140 in several GAN papers).
    With ``<root>/celeba/list_eval_partition.txt`` the official train (0) / val (1) / test (2) partition is used
    and ``val_fraction`` is ignored; without it, a seeded random split by ``val_fraction`` (test = val).

    ``attributes``: names from :data:`CELEBA_ATTRIBUTES` (StarGAN's five: ``[Black_Hair, Blond_Hair, Brown_Hair,
    Male, Young]``), read from ``<root>/celeba/list_attr_celeba.txt`` (the official file: the image count, the 40
    names, then ``000001.jpg -1 1 ...``). Each label is then a float32 row of 0./1. (the file's -1 -> 0, 1 -> 1) in
    the order given, ``domain_names`` is that list and ``multi_label`` is True (``num_classes`` stays 0). Images the
    file does not list are left out, with a warning. ``predict_dataloader`` then yields held-out ``(images,
    attributes)`` batches (the first ``predict_size`` of test, else val), the images a translation model translates.
    """

    _default_image_size = 64
    _channels = 3
    _num_classes = 0

    def __init__(
        self,
        root: Optional[str] = None,
        image_size: Optional[int] = None,
        crop_size: Optional[int] = None,
        batch_size: int = 128,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
        download: bool = False,
        seed: int = 0,
        predict_size: int = 10_000,
        hflip: bool = False,
        attributes: Optional[list[str]] = None,
    ) -> None:
        if crop_size is not None and crop_size < 1:
            raise ValueError(f"crop_size must be >= 1 or None, got {crop_size}")
        chosen = self._check_attributes(attributes)
        super().__init__(root, image_size, batch_size, val_fraction, num_workers, pin_memory, download, seed,
                         predict_size, hflip)
        self.crop_size = crop_size
        self.attributes = chosen
        if chosen is not None:
            self.domain_names = list(chosen)
            self.multi_label = True

    @staticmethod
    def _check_attributes(attributes: Optional[Sequence[str]]) -> Optional[list[str]]:
        """The attribute names as a list; a clear error for an empty list, repeats and unknown names."""
        if attributes is None:
            return None
        chosen = [attributes] if isinstance(attributes, str) else [str(a) for a in attributes]
        if not chosen:
            raise ValueError(
                "attributes is empty: name at least one CelebA attribute (e.g. [Black_Hair, Blond_Hair, Brown_Hair, "
                "Male, Young]), or leave it out for unlabelled faces."
            )
        repeated = sorted({a for a in chosen if chosen.count(a) > 1})
        if repeated:
            raise ValueError(f"attributes names {repeated} more than once; name each attribute once.")
        unknown = [a for a in chosen if a not in CELEBA_ATTRIBUTES]
        if unknown:
            lower = {a.lower(): a for a in CELEBA_ATTRIBUTES}

            def hint(name: str) -> str:
                key = name.lower()
                close = ([lower[key]] if key in lower else [a for a in CELEBA_ATTRIBUTES if key in a.lower()][:3]
                         or difflib.get_close_matches(name, CELEBA_ATTRIBUTES, n=3, cutoff=0.6))
                return f"{name!r} (did you mean {' or '.join(map(repr, close))}?)" if close else repr(name)

            raise ValueError(
                f"Unknown CelebA attribute{'s' if len(unknown) > 1 else ''} {', '.join(map(hint, unknown))}. The 40 "
                f"attributes of list_attr_celeba.txt (case matters) are: {', '.join(CELEBA_ATTRIBUTES)}."
            )
        return chosen

    @property
    def _folder(self) -> Path:
        return self.root / "celeba"

    @property
    def _attribute_file(self) -> Path:
        return self._folder / "list_attr_celeba.txt"

    def _images(self) -> list[str]:
        folder = self._folder / "img_align_celeba"
        if not folder.is_dir():
            return []
        return sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name))

    def _missing(self) -> list[str]:
        folder = self._folder / "img_align_celeba"
        if not folder.is_dir():
            return [f"{folder.resolve()}/ (folder of 000001.jpg ... 202599.jpg)"]
        if not any(_is_image(e.name) for e in os.scandir(folder)):
            return [f"{folder.resolve()}/*.jpg (the folder exists but holds no images)"]
        if self.attributes is not None and not self._attribute_file.is_file():
            return [f"{self._attribute_file.resolve()} (the attribute file, needed for attributes={self.attributes})"]
        return []

    def _not_found(self, missing: list[str], problem: str = "", hint: str = "") -> FileNotFoundError:
        if not problem and self.attributes is not None and self._images() and not self._attribute_file.is_file():
            problem = (f"CelebADataModule found the images but not the attribute file "
                       f"{self._attribute_file.resolve()}, which attributes={self.attributes} needs{hint}.")
        return super()._not_found(missing, problem, hint)

    def _how_to_get(self) -> str:
        celeba = self._folder.resolve()
        return (
            f"CelebADataModule expects the aligned-and-cropped JPEGs in {celeba / 'img_align_celeba'} "
            f"(000001.jpg ... 202599.jpg), optionally the official split file "
            f"{celeba / 'list_eval_partition.txt'} and, with `attributes`, the attribute file "
            f"{celeba / 'list_attr_celeba.txt'}. "
            f"`download: true` (--data.download true, or download=True) tries torchvision's Google-Drive download "
            f"(needs internet and the `gdown` package; Google Drive's daily quota often refuses it). To download "
            f"manually: get img_align_celeba.zip, list_eval_partition.txt and list_attr_celeba.txt from "
            f"https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive or Baidu links, folders 'Img', 'Eval' "
            f"and 'Anno'), run `unzip img_align_celeba.zip -d {celeba}` so that "
            f"{celeba / 'img_align_celeba' / '000001.jpg'} exists, and put list_eval_partition.txt and "
            f"list_attr_celeba.txt next to it; or set `root` to the folder that contains celeba/."
        )

    def _download(self) -> None:
        import torchvision.datasets

        torchvision.datasets.CelebA(str(self.root), split="all", target_type=[], download=True)

    def _read_attributes(self) -> dict[str, tuple[float, ...]]:
        """``{file name: (0. or 1. per chosen attribute, in the given order)}`` from list_attr_celeba.txt."""
        path, chosen = self._attribute_file, self.attributes or []
        official = ("Replace it with the official list_attr_celeba.txt (folder 'Anno' of "
                    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html).")
        lines = path.read_text().splitlines()
        start = 1 if lines and lines[0].strip().isdigit() else 0  # line 1 is the image count, line 2 the names
        header = lines[start].split() if len(lines) > start else []
        absent = [a for a in chosen if a not in header]
        if absent:
            raise ValueError(f"{path} has no column {', '.join(absent)}: its header line (line {start + 1}) names "
                             f"{header or 'nothing'}. {official}")
        columns = [header.index(a) + 1 for a in chosen]
        value = {"1": 1.0, "-1": 0.0, "0": 0.0}
        labels: dict[str, tuple[float, ...]] = {}
        for number, line in enumerate(lines[start + 1:], start=start + 2):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(header) + 1:
                raise ValueError(f"{path}, line {number}: expected a file name and {len(header)} values, got "
                                 f"{len(parts) - 1} values. {official}")
            try:
                labels[parts[0]] = tuple(value[parts[c]] for c in columns)
            except KeyError as err:
                raise ValueError(f"{path}, line {number}: attribute values must be -1 or 1, got {err.args[0]!r}. "
                                 f"{official}") from None
        return labels

    def _build_splits(self) -> dict[str, Dataset]:
        folder = self._folder / "img_align_celeba"
        names = self._images()
        attributes_of: Optional[dict[str, tuple[float, ...]]] = None
        if self.attributes is not None:
            attributes_of = self._read_attributes()
            listed = [n for n in names if n in attributes_of]
            if len(listed) < len(names):
                first = next(n for n in names if n not in attributes_of)
                warnings.warn(
                    f"{len(names) - len(listed)} of the {len(names)} images in {folder} are not in "
                    f"{self._attribute_file} (e.g. {first}) and are not used.",
                    stacklevel=2,
                )
            if not listed:
                raise ValueError(
                    f"None of the images in {folder} is in {self._attribute_file}: its lines must start with the "
                    f"images' file names (000001.jpg ...). Use the attribute file that belongs to these images."
                )
            names = listed

        def label(name: str) -> Union[int, tuple[float, ...]]:
            return 0 if attributes_of is None else attributes_of[name]

        partition_file = self._folder / "list_eval_partition.txt"
        if not partition_file.is_file():
            paths = [str(folder / n) for n in names]
            splits = self._split_files(paths, [label(n) for n in names])
        else:
            split_of: dict[str, int] = {}
            for line in partition_file.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    split_of[parts[0]] = int(parts[1])
            unlisted = sum(n not in split_of for n in names)
            if unlisted:
                warnings.warn(
                    f"{unlisted} of the {len(names)} images in {folder} are not in {partition_file} and are not used.",
                    stacklevel=2,
                )
            splits = {}
            for split, code in (("train", 0), ("val", 1), ("test", 2)):
                chosen = [n for n in names if split_of.get(n) == code]
                splits[split] = ([str(folder / n) for n in chosen], [label(n) for n in chosen])
            if not splits["train"][0]:
                raise ValueError(
                    f"None of the images in {folder} is in the train partition (0) of {partition_file}. Fix or delete "
                    f"the partition file (without it, val_fraction splits the images at random)."
                )
        return self._file_splits(splits, mode="RGB", crop_size=self.crop_size)

    def predict_dataloader(self) -> DataLoader:
        """With ``attributes``: the first ``predict_size`` held-out ``(images, attributes)`` (test, else val), to
        translate; without: ``(indices, labels)`` batches as every image data module."""
        if self.attributes is None:
            return super().predict_dataloader()
        return self._held_out_images_loader()


class ImageFolderDataModule(ImageDataModule):
    """Your own images under ``root`` (jpg, jpeg, png, bmp, webp; searched recursively), resized and centre-cropped.

    Labels: with ``class_folders`` (default ``None``: when every image sits in a subfolder of ``root``) each
    top-level subfolder is a class, numbered in sorted name order (``classes`` holds the names; so does
    ``domain_names``: one folder per domain for image-to-image translation between domains, as in StarGAN); otherwise
    all labels are 0 and ``num_classes`` is 0. Images are converted to RGB (``channels: 3``) or grayscale
    (``channels: 1``), resized on the short side to ``image_size`` and centre-cropped to a square. The folder is
    scanned in ``__init__`` (so ``num_classes`` is known before ``setup``); val is a seeded random split of the
    files, and the test loader uses the val split.
    """

    _default_image_size = 64
    _hparams_ignore = ("download",)

    def __init__(
        self,
        root: Optional[str] = None,
        image_size: Optional[int] = None,
        channels: int = 3,
        class_folders: Optional[bool] = None,
        batch_size: int = 128,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
        seed: int = 0,
        predict_size: int = 10_000,
        hflip: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        super().__init__(root, image_size, batch_size, val_fraction, num_workers, pin_memory, False, seed,
                         predict_size, hflip)
        self.channels = channels
        self.image_shape = (channels, self.image_size, self.image_size)
        self.classes, self._files = self._scan(class_folders)
        self.num_classes = len(self.classes)
        self.domain_names = list(self.classes)  # one class folder per domain (single-label), empty without classes

    def _scan(self, class_folders: Optional[bool]) -> tuple[list[str], list[tuple[str, int]]]:
        """``(class names, [(path, label)])``; raises clearly when the folder is missing, empty or ambiguous."""
        if not self.root.is_dir():
            raise self._not_found([f"{self.root.resolve()}/ (folder)"])
        entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        top_images = [e.path for e in entries if e.is_file() and _is_image(e.name)]
        subdirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        per_dir = {d.name: self._walk(d.path) for d in subdirs}
        if class_folders is None:
            class_folders = not top_images and any(per_dir.values())
        if class_folders:
            if top_images:
                raise ValueError(
                    f"class_folders=True but {len(top_images)} images sit directly in {self.root.resolve()} (e.g. "
                    f"{top_images[0]}): move them into a class subfolder, or set class_folders to null/false."
                )
            classes = [name for name, files in per_dir.items() if files]
            files = [(p, label) for label, name in enumerate(classes) for p in per_dir[name]]
        else:
            classes = []
            files = [(p, 0) for p in top_images + [p for name in per_dir for p in per_dir[name]]]
        if not files:
            raise self._not_found([f"{self.root.resolve()}/**/*{{{','.join(IMAGE_EXTENSIONS)}}} (no image files)"])
        return classes, files

    @staticmethod
    def _walk(folder: str) -> list[str]:
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
        return found

    def _missing(self) -> list[str]:
        return [] if self.root.is_dir() else [f"{self.root.resolve()}/ (folder)"]

    def _how_to_get(self) -> str:
        return (
            f"ImageFolderDataModule reads your own images ({', '.join(IMAGE_EXTENSIONS)}, searched recursively) under "
            f"{self.root.resolve()}, optionally in one subfolder per class. It cannot download anything (there is no "
            f"download option): copy the images there, or set `root` to the folder that holds them."
        )

    def _build_splits(self) -> dict[str, Dataset]:
        paths = [p for p, _ in self._files]
        labels = [label for _, label in self._files]
        return self._file_splits(self._split_files(paths, labels), mode="RGB" if self.channels == 3 else "L")
