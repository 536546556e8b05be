"""Super-resolution pairs from any image data module: ``{"a": low-resolution, "b": high-resolution}`` batches.

The high-resolution images are the wrapped data module's images (MNIST, CIFAR-10, CelebA, an image folder...); the
low-resolution ones are their antialiased bicubic downsampling by ``scale``, clamped to [-1, 1] (how SRGAN makes its
inputs). The pairs are made per batch, in the loader's workers, and the loaders are
:class:`~lightning_gen.data.ResumableDataLoader` over the wrapped module's own data sets, so the order, the
augmentation and an exact mid-epoch resume are those of the wrapped module.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import lightning as L
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from lightning_gen.data.images import ImageFolderDataModule
from lightning_gen.data.resumable import ResumableDataLoader
from lightning_gen.nets.super_resolution import bicubic_downsample

__all__ = ["SuperResolutionDataModule"]


class _SuperResolutionCollate:
    """Collate with the wrapped loader's function, then turn ``images`` (or ``(images, labels)``) into a pair."""

    def __init__(self, collate: Callable[[Any], Any], scale: int) -> None:
        self.collate = collate
        self.scale = scale

    def __call__(self, items: Any) -> dict[str, Tensor]:
        batch = self.collate(items)
        high = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(high, dict) or not isinstance(high, Tensor) or high.dim() != 4:
            raise TypeError(
                "SuperResolutionDataModule wraps data modules whose batches are images (B, C, H, W) or (images, "
                f"labels), got {type(high).__name__}"
            )
        return {"a": bicubic_downsample(high, self.scale), "b": high}


class SuperResolutionDataModule(L.LightningDataModule):
    """(low-resolution, high-resolution) pairs ``{"a": (B, C, H/scale, W/scale), "b": (B, C, H, W)}`` in [-1, 1].

    ``data`` is any image data module whose batches are ``(images, labels)`` or images (e.g.
    ``MNISTDataModule``, ``CIFAR10DataModule``, ``ImageFolderDataModule``); it keeps its own splits, batch size,
    workers and augmentation. Without ``data``, the images of the folder ``root`` are used through an
    ``ImageFolderDataModule(root, image_size, channels, batch_size, val_fraction, num_workers, seed)``. The
    high-resolution side must be divisible by ``scale``. ``predict_dataloader`` yields the first ``predict_size``
    held-out pairs (test split, else val), whose ``"a"`` images a super-resolution model upscales.
    """

    def __init__(
        self,
        data: Optional[L.LightningDataModule] = None,
        scale: int = 4,
        root: Optional[str] = None,
        image_size: Optional[int] = None,
        channels: int = 3,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 0,
        predict_size: int = 64,
    ) -> None:
        """Wrap ``data`` (or an image folder ``root``) and downsample its images by ``scale``.

        Args:
            data: the image data module giving the high-resolution images (``None``: the folder ``root``).
            scale: downsampling factor (2 or 4 in the paper); H and W must be divisible by it.
            root: without ``data``, a folder of images (see ``ImageFolderDataModule``; ``None``: its default).
            image_size: without ``data``, the side of the high-resolution squares (default 64).
            channels: without ``data``, 3 (RGB) or 1 (grayscale).
            batch_size: without ``data``, images per batch (``data`` keeps its own).
            val_fraction: without ``data``, the held-out fraction of the folder.
            num_workers: without ``data``, DataLoader workers.
            seed: without ``data``, the seed of the train/val split.
            predict_size: held-out pairs ``predict_dataloader`` yields.
        """
        super().__init__()
        if scale < 2:
            raise ValueError(f"scale must be >= 2, got {scale}")
        if predict_size < 1:
            raise ValueError(f"predict_size must be >= 1, got {predict_size}")
        self.save_hyperparameters(ignore=["data"])
        if data is None:
            data = ImageFolderDataModule(root=root, image_size=image_size, channels=channels, batch_size=batch_size,
                                         val_fraction=val_fraction, num_workers=num_workers, seed=seed)
        self.data = data
        self.scale = int(scale)
        self.predict_size = int(predict_size)
        shape = getattr(data, "image_shape", None)
        if shape is not None:
            c, h, w = shape
            if h % self.scale or w % self.scale:
                raise ValueError(
                    f"{type(data).__name__} gives {h}x{w} px images, not divisible by scale={self.scale}: set its "
                    f"image_size to a multiple of {self.scale} (e.g. {max(self.scale, h // self.scale * self.scale)})"
                )
            self.image_shape: tuple[int, int, int] = (c, h, w)  # the high-resolution images
            self.low_res_shape: tuple[int, int, int] = (c, h // self.scale, w // self.scale)

    @property
    def batch_size(self) -> Optional[int]:
        """The wrapped data module's batch size."""
        return getattr(self.data, "batch_size", None)

    def prepare_data(self) -> None:
        """The wrapped module's (checks the files are there; downloads with its ``download: true``)."""
        self.data.prepare_data()

    def setup(self, stage: Optional[str] = None) -> None:
        """The wrapped module's set-up."""
        self.data.setup(stage)

    def _pairs(self, loader: Any, shuffle: bool, limit: Optional[int] = None) -> Union[DataLoader, list]:
        """A :class:`ResumableDataLoader` over ``loader``'s data set that yields pairs (``[]`` for no loader)."""
        if isinstance(loader, (list, tuple)):
            if not loader:
                return []
            loader = loader[0]
        if not isinstance(loader, DataLoader):
            raise TypeError(f"SuperResolutionDataModule needs DataLoaders from {type(self.data).__name__}, got "
                            f"{type(loader).__name__}")
        dataset = loader.dataset
        if limit is not None:
            dataset = Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]
        batch_size = loader.batch_size or 1
        return ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            # a training set smaller than one batch still gives one (partial) batch per epoch, not none
            drop_last=shuffle and loader.drop_last and len(dataset) >= batch_size,  # type: ignore[arg-type]
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.num_workers > 0,
            collate_fn=_SuperResolutionCollate(loader.collate_fn, self.scale),
        )

    def _loader(self, hook: str) -> Any:
        if not is_overridden(hook, self.data):
            return None
        return getattr(self.data, hook)()

    def train_dataloader(self) -> DataLoader:
        """Shuffled ``{"a": low, "b": high}`` batches of the wrapped module's training images."""
        return self._pairs(self.data.train_dataloader(), shuffle=True)  # type: ignore[return-value]

    def val_dataloader(self) -> Union[DataLoader, list]:
        """Pairs of the wrapped module's validation images (``[]`` when it has none)."""
        loader = self._loader("val_dataloader")
        return [] if loader is None else self._pairs(loader, shuffle=False)

    def test_dataloader(self) -> Union[DataLoader, list]:
        """Pairs of the wrapped module's test images (``[]`` when it has none)."""
        loader = self._loader("test_dataloader")
        return [] if loader is None else self._pairs(loader, shuffle=False)

    def predict_dataloader(self) -> Union[DataLoader, list]:
        """The first ``predict_size`` held-out pairs (the test split, else the validation split)."""
        for hook in ("test_dataloader", "val_dataloader"):
            loader = self._loader(hook)
            pairs = [] if loader is None else self._pairs(loader, shuffle=False, limit=self.predict_size)
            if not isinstance(pairs, list):
                return pairs
        raise ValueError(f"SuperResolutionDataModule: {type(self.data).__name__} has no held-out images to upscale "
                         "(no test or validation loader)")

    def state_dict(self) -> dict[str, Any]:
        """The wrapped module's state."""
        return self.data.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the wrapped module's state."""
        self.data.load_state_dict(state_dict)
