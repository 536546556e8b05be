"""Image-to-image callback: a grid of fixed held-out images and their translations (pix2pix, CycleGAN)."""

from __future__ import annotations

import inspect
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_gen.callbacks.image_logging import log_image
from lightning_gen.callbacks.images import grid_to_uint8, images_to_grid

__all__ = ["TranslationGridCallback"]


def _has_direction(pl_module: L.LightningModule) -> bool:
    """Whether ``pl_module.translate`` takes a ``direction`` (CycleGAN-style two-way translation)."""
    try:
        return "direction" in inspect.signature(pl_module.translate).parameters
    except (TypeError, ValueError):  # builtins/C callables without a signature: treat as one-way
        return False


def _to_rgb(images: Tensor) -> Tensor:
    """Repeat grayscale images to 3 channels so rows mixing 1- and 3-channel domains tile into one grid."""
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


class TranslationGridCallback(L.Callback):
    """Logs translations of fixed held-out images: one row per image, the same images at every call.

    On fit start the first ``num_images`` images of the data module's ``split`` loader (``"val"`` or ``"test"``;
    batches ``{"a", "b"}``) are kept on the CPU; when that loader is empty the first training images are used
    instead, with a warning. Columns per row: for a module whose ``translate(x, direction)`` takes a direction
    (CycleGAN) ``A, A->B, A->B->A, B, B->A, B->A->B`` (the B half only with ``both_directions``); for a one-way
    ``translate(a)`` (pix2pix) ``A, G(A), B`` (the target). Images in [-1, 1] are mapped to [0, 1]; grayscale is
    shown as RGB. Fires at the end of every ``every_n_epochs``-th training epoch and (``on_train_end``) at the end of
    training unless that step was just logged, on global rank zero only (no collective calls); logs under ``key``
    at ``trainer.global_step`` and keeps the last grid in ``last_grid`` (``(3, H, W)`` float in [0, 1]).
    """

    def __init__(
        self,
        num_images: int = 8,
        every_n_epochs: int = 1,
        split: str = "val",
        key: str = "translation",
        both_directions: bool = True,
        on_train_end: bool = True,
    ) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if not key:
            raise ValueError("key must be a non-empty string")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.split = split
        self.key = key
        self.both_directions = both_directions
        self.log_on_train_end = on_train_end
        self._last_logged_step: Optional[int] = None
        self.images: Optional[tuple[Tensor, Tensor]] = None
        self.last_grid: Optional[Tensor] = None

    # -- fixed images -------------------------------------------------------------------------------------------
    def _collect(self, loader: Any) -> Optional[tuple[Tensor, Tensor]]:
        """The first ``num_images`` ``(a, b)`` images of a loader (or list of loaders), or None when it is empty."""
        if loader is None:
            return None
        if isinstance(loader, (list, tuple)):
            if not loader:
                return None
            loader = loader[0]
        a_parts: list[Tensor] = []
        b_parts: list[Tensor] = []
        count = 0
        for batch in loader:
            if not isinstance(batch, dict) or "a" not in batch or "b" not in batch:
                raise TypeError(
                    "TranslationGridCallback needs {'a': images, 'b': images} batches (PairedImageDataModule or "
                    f"UnpairedImageDataModule), got {type(batch).__name__}"
                )
            a_parts.append(batch["a"].detach().cpu())
            b_parts.append(batch["b"].detach().cpu())
            count += batch["a"].shape[0]
            if count >= self.num_images:
                break
        if not a_parts:
            return None
        return torch.cat(a_parts)[: self.num_images], torch.cat(b_parts)[: self.num_images]

    def set_images(self, a: Tensor, b: Tensor) -> None:
        """Fix the images to translate: ``a`` and ``b`` ``(N, C, H, W)`` in [-1, 1] (at most ``num_images`` kept)."""
        if a.ndim != 4 or b.ndim != 4 or a.shape[0] != b.shape[0]:
            raise ValueError(
                f"expected a and b shaped (N, C, H, W) with the same N, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        self.images = (a.detach().cpu()[: self.num_images], b.detach().cpu()[: self.num_images])

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take the first ``num_images`` held-out images (training images when there are none)."""
        if not callable(getattr(pl_module, "translate", None)):
            raise TypeError(
                f"TranslationGridCallback needs a module with translate(): {type(pl_module).__name__} has none "
                "(use it with Pix2Pix or CycleGAN, or SampleGridCallback for unconditional models)"
            )
        self._last_logged_step = None
        if self.images is not None:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError("TranslationGridCallback needs a data module (trainer.fit(model, datamodule=...))")
        images = self._collect(getattr(datamodule, f"{self.split}_dataloader")())
        if images is None:
            rank_zero_warn(
                f"TranslationGridCallback found no {self.split} images; showing the first training images instead "
                "(set the data module's val_fraction > 0 or a test folder for held-out ones)"
            )
            images = self._collect(datamodule.train_dataloader())
        if images is None:
            raise ValueError("TranslationGridCallback found no images in the data module's loaders")
        self.set_images(*images)

    # -- rendering ----------------------------------------------------------------------------------------------
    def render(self, pl_module: L.LightningModule) -> Tensor:
        """Translate the fixed images, tile them (one row per image), store the grid in ``last_grid``, return it."""
        if self.images is None:
            raise RuntimeError("TranslationGridCallback has no images yet: call set_images() or fit first")
        a, b = self.images
        with torch.no_grad():
            if _has_direction(pl_module):
                ab = pl_module.translate(a, "AtoB")
                columns = [a, ab, pl_module.translate(ab, "BtoA")]
                if self.both_directions:
                    ba = pl_module.translate(b, "BtoA")
                    columns += [b, ba, pl_module.translate(ba, "AtoB")]
            else:
                columns = [a, pl_module.translate(a), b]
        columns = [c.detach().float().cpu() for c in columns]
        if len({c.shape[1] for c in columns}) > 1:
            columns = [_to_rgb(c) for c in columns]
        images = torch.stack(columns, dim=1).flatten(0, 1)  # (N * columns, C, H, W), row-major: one row per image
        self.last_grid = images_to_grid(images, nrow=len(columns))
        return self.last_grid

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        log_image(trainer, self.key, grid_to_uint8(self.render(pl_module)), step=trainer.global_step)
        self._last_logged_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the grid at the end of every ``every_n_epochs``-th epoch."""
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the final grid, unless it was logged at this very step already."""
        if self.log_on_train_end and self._last_logged_step != trainer.global_step:
            self._log(trainer, pl_module)
