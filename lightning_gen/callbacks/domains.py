"""Domain-translation grid: fixed held-out images, each followed by its translation into every domain (StarGAN)."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_gen.callbacks.images import PeriodicImageCallback, first_images, images_to_grid

__all__ = ["DomainTranslationGridCallback"]


class DomainTranslationGridCallback(PeriodicImageCallback):
    """Logs a grid with one row per fixed held-out image: the input, then its translation into each domain in turn.

    Uses ``pl_module.translate_to_each_domain(x, domains)`` (:class:`~lightning_gen.modules.StarGAN`): column ``k + 1``
    is domain ``k`` for single-label domains, or the image's own attributes with attribute ``k`` flipped for
    multi-label ones. On fit start the first ``num_images`` ``(images, domains)`` of the data module's ``split`` loader
    (``"val"`` or ``"test"``) are kept on the CPU; an empty loader falls back to the training images, with a warning.
    Images in [-1, 1] are mapped to [0, 1].

    Fires at the end of every ``every_n_epochs``-th training epoch (``None``: never), every ``every_n_steps``
    generator steps, and at the end of training unless that step was just logged; on global rank zero only. Logged
    with :func:`~lightning_gen.callbacks.log_image` under ``key`` (to W&B or TensorBoard when attached, and always as
    ``<run dir>/images/<key>_step<N>.png``) and kept in ``last_grid``.
    """

    def __init__(
        self,
        num_images: int = 8,
        every_n_epochs: Optional[int] = 1,
        every_n_steps: Optional[int] = None,
        split: str = "val",
        key: str = "domain_translations",
        on_train_end: bool = True,
    ) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.set_schedule(key, every_n_epochs, every_n_steps, on_train_end)
        self.num_images = num_images
        self.split = split
        self.images: Optional[Tensor] = None
        self.domains: Optional[Tensor] = None
        self.last_grid: Optional[Tensor] = None

    def set_images(self, images: Tensor, domains: Optional[Tensor] = None) -> None:
        """Fix the images ``(N, C, H, W)`` in [-1, 1] to translate and their own domains (needed for multi-label
        models; at most ``num_images`` kept)."""
        if images.ndim != 4:
            raise ValueError(f"DomainTranslationGridCallback needs images shaped (N, C, H, W), got {tuple(images.shape)}")
        if domains is not None and domains.shape[0] != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {domains.shape[0]} domain labels")
        self.images = images.detach().cpu()[: self.num_images]
        self.domains = None if domains is None else domains.detach().cpu()[: self.num_images]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take the first ``num_images`` held-out images and domains (training ones when there are none)."""
        if not callable(getattr(pl_module, "translate_to_each_domain", None)):
            raise TypeError(
                f"DomainTranslationGridCallback needs a module with translate_to_each_domain(x, domains): "
                f"{type(pl_module).__name__} has none (use it with StarGAN; TranslationGridCallback serves pix2pix "
                "and CycleGAN)"
            )
        self.forget_logged_steps()
        if self.images is not None:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError("DomainTranslationGridCallback needs a data module (trainer.fit(model, datamodule=...))")
        who = "DomainTranslationGridCallback"
        found = first_images(getattr(datamodule, f"{self.split}_dataloader")(), self.num_images, who)
        if found is None:
            rank_zero_warn(f"{who} found no {self.split} images; showing training images instead")
            found = first_images(datamodule.train_dataloader(), self.num_images, who)
        if found is None:
            raise ValueError(f"{who} found no images in the data module's loaders")
        self.set_images(*found)

    def render(self, pl_module: L.LightningModule) -> Tensor:
        """Translate the fixed images into every domain, tile ``[input, domain 0, ..., domain K-1]`` per row, store the
        grid in ``last_grid``."""
        if self.images is None:
            raise RuntimeError("DomainTranslationGridCallback has no images yet: call set_images() or fit first")
        multi = bool(getattr(pl_module, "multi_label", False))
        if multi and self.domains is None:
            raise ValueError("a multi-label model needs the images' own attributes: set_images(images, domains)")
        with torch.no_grad():
            out = pl_module.translate_to_each_domain(self.images, self.domains if multi else None)
        out = out.detach().float().cpu()  # (N, K, C, H, W)
        rows = torch.cat([self.images.float().unsqueeze(1), out], 1)
        self.last_grid = images_to_grid(rows.flatten(0, 1), nrow=rows.shape[1])
        return self.last_grid
