"""Send an image to whatever logger is attached: W&B, TensorBoard, any logger with ``log_image``, or a PNG file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["image_dir", "log_image"]


def image_dir(trainer: L.Trainer) -> Path:
    """Folder for image files: ``<log_dir>/images`` of the first logger, else ``<default_root_dir>/images``."""
    root = trainer.log_dir if trainer.loggers and trainer.log_dir else trainer.default_root_dir
    return Path(root) / "images"


@rank_zero_only
def log_image(trainer: L.Trainer, key: str, image: np.ndarray, step: Optional[int] = None) -> Optional[Path]:
    """Log an ``(H, W, 3)`` uint8 image under ``key`` to every attached logger; returns the PNG path when one is written.

    W&B and TensorBoard receive the image through their APIs; with any other logger (CSV, ...) or none, the image
    is saved as ``image_dir(trainer)/<key>_step<step>.png``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"log_image expects an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
    step = trainer.global_step if step is None else step
    written = False
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step)
            written = True
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
            written = True
    if written:
        return None
    from PIL import Image

    path = image_dir(trainer) / f"{key.replace('/', '_')}_step{step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
