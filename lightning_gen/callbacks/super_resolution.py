"""Super-resolution callback: fixed held-out low-resolution images, upscaled bicubically and by the model, next to
the high-resolution originals (SRGAN, SRResNet)."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from lightning_gen.callbacks.images import images_to_grid
from lightning_gen.callbacks.translation import TranslationGridCallback, _to_rgb
from lightning_gen.nets.super_resolution import bicubic_upsample

__all__ = ["SuperResolutionGridCallback"]


class SuperResolutionGridCallback(TranslationGridCallback):
    """Logs one row per fixed held-out image: ``bicubic(a) | G(a) | b`` (bicubic upsampling of the low-resolution
    input, the model's super-resolution, the high-resolution original), all at the high resolution.

    Takes ``{"a": low, "b": high}`` batches (:class:`~lightning_gen.data.SuperResolutionDataModule`) and a module
    with ``translate(a)`` (SRGAN's :meth:`~lightning_gen.modules.SRGAN.upscale`). Which images, when it fires,
    ``key``, the PNG fallback and ``last_grid`` are as in :class:`TranslationGridCallback`.
    """

    def __init__(
        self, num_images: int = 8, every_n_epochs: int = 1, split: str = "val", key: str = "super_resolution",
        on_train_end: bool = True,
    ) -> None:
        super().__init__(num_images=num_images, every_n_epochs=every_n_epochs, split=split, key=key,
                         both_directions=False, on_train_end=on_train_end)

    def render(self, pl_module: L.LightningModule) -> Tensor:
        """Upscale the fixed images, tile ``bicubic | model | original`` rows, store the grid in ``last_grid``."""
        if self.images is None:
            raise RuntimeError("SuperResolutionGridCallback has no images yet: call set_images() or fit first")
        a, b = self.images
        scale = b.shape[-1] // a.shape[-1]
        if a.shape[-2] * scale != b.shape[-2] or a.shape[-1] * scale != b.shape[-1]:
            raise ValueError(f"the high-resolution images {tuple(b.shape)} are not the low-resolution ones "
                             f"{tuple(a.shape)} times an integer scale")
        with torch.no_grad():
            columns = [bicubic_upsample(a, scale), pl_module.translate(a), b]
        columns = [c.detach().float().cpu() for c in columns]
        if len({c.shape[1] for c in columns}) > 1:
            columns = [_to_rgb(c) for c in columns]
        images = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: one row per image
        self.last_grid = images_to_grid(images, nrow=len(columns))
        return self.last_grid
