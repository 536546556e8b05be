"""Reconstruction grid: fixed held-out images over the model's ``reconstruct(x)`` (BiGAN's ``G(E(x))``, autoencoders)."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_gen.callbacks.images import PeriodicImageCallback, first_images, images_to_grid

__all__ = ["ReconstructionGridCallback"]


class ReconstructionGridCallback(PeriodicImageCallback):
    """Logs fixed held-out images over their reconstructions ``pl_module.reconstruct(x)``, the same images each time.

    The grid has ``nrow`` images per row; each row of originals is followed by the row of their reconstructions
    (for BiGAN ``G(E(x))``, for an autoencoder its decoder's mean). On fit start the first ``num_images`` images of the
    data module's ``split`` loader (``"val"`` or ``"test"``; batches ``x`` or ``(x, labels)``) are kept on the CPU;
    an empty loader falls back to the training images, with a warning. Images in [-1, 1] are mapped to [0, 1].

    Fires at the end of every ``every_n_epochs``-th training epoch (``None``: never), every ``every_n_steps``
    generator steps, and at the end of training unless that step was just logged; on global rank zero only (no
    collective calls). Logged with :func:`~lightning_gen.callbacks.log_image` under ``key`` -- to W&B or TensorBoard
    when attached, and always as ``<run dir>/images/<key>_step<N>.png`` -- and kept in ``last_grid``.
    """

    def __init__(
        self,
        num_images: int = 32,
        nrow: int = 8,
        every_n_epochs: Optional[int] = 1,
        every_n_steps: Optional[int] = None,
        split: str = "val",
        key: str = "reconstructions",
        on_train_end: bool = True,
    ) -> None:
        super().__init__()
        if num_images < 1 or nrow < 1:
            raise ValueError(f"num_images and nrow must be >= 1, got {num_images} and {nrow}")
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.set_schedule(key, every_n_epochs, every_n_steps, on_train_end)
        self.num_images = num_images
        self.nrow = nrow
        self.split = split
        self.images: Optional[Tensor] = None
        self.last_grid: Optional[Tensor] = None

    def _collect(self, loader: Any) -> Optional[Tensor]:
        found = first_images(loader, self.num_images, "ReconstructionGridCallback")
        return None if found is None else found[0]

    def set_images(self, images: Tensor) -> None:
        """Fix the images to reconstruct: ``(N, C, H, W)`` in [-1, 1] (at most ``num_images`` kept)."""
        if images.ndim != 4:
            raise ValueError(f"ReconstructionGridCallback needs images shaped (N, C, H, W), got {tuple(images.shape)}")
        self.images = images.detach().cpu()[: self.num_images]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take the first ``num_images`` held-out images (training images when there are none)."""
        if not callable(getattr(pl_module, "reconstruct", None)):
            raise TypeError(
                f"ReconstructionGridCallback needs a module with reconstruct(x): {type(pl_module).__name__} has none "
                "(use it with BiGAN or an autoencoder, or SampleGridCallback for samples)"
            )
        self.forget_logged_steps()
        if self.images is not None:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError("ReconstructionGridCallback needs a data module (trainer.fit(model, datamodule=...))")
        images = self._collect(getattr(datamodule, f"{self.split}_dataloader")())
        if images is None:
            rank_zero_warn(f"ReconstructionGridCallback found no {self.split} images; showing training images instead")
            images = self._collect(datamodule.train_dataloader())
        if images is None:
            raise ValueError("ReconstructionGridCallback found no images in the data module's loaders")
        self.set_images(images)

    def render(self, pl_module: L.LightningModule) -> Tensor:
        """Reconstruct the fixed images, tile originals over reconstructions, store the grid in ``last_grid``."""
        if self.images is None:
            raise RuntimeError("ReconstructionGridCallback has no images yet: call set_images() or fit first")
        with torch.no_grad():
            recon = pl_module.reconstruct(self.images).detach().float().cpu()
        rows = []
        for start in range(0, self.images.shape[0], self.nrow):
            x = self.images[start:start + self.nrow].float()
            y = recon[start:start + self.nrow]
            pad = self.nrow - x.shape[0]  # a short last row: blank (black) cells keep every pair of rows aligned
            if pad:
                blank = torch.full((pad, *x.shape[1:]), -1.0)
                x, y = torch.cat([x, blank]), torch.cat([y, blank])
            rows += [x, y]
        self.last_grid = images_to_grid(torch.cat(rows), self.nrow)
        return self.last_grid
