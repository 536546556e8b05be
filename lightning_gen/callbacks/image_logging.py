"""Send an image to whatever logger is attached (W&B, TensorBoard) and always save it as a PNG file of the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["image_dir", "log_image", "run_dir", "samples_collectively"]


def run_dir(trainer: L.Trainer) -> Path:
    """The folder of this run: the first logger's ``log_dir`` (TensorBoard, CSV), else
    ``<save_dir>/<name>/<version>`` as for Lightning's checkpoints (W&B: ``<save_dir>/<project>/<run id>``), else
    the trainer's ``default_root_dir`` (no logger)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return Path(logger.log_dir)
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


def image_dir(trainer: L.Trainer) -> Path:
    """Folder of the PNG files: ``<run dir>/images`` (see :func:`run_dir`)."""
    return run_dir(trainer) / "images"


@rank_zero_only
def log_image(trainer: L.Trainer, key: str, image: np.ndarray, step: Optional[int] = None) -> Optional[Path]:
    """Log an ``(H, W, 3)`` uint8 image under ``key`` at ``step`` (default ``trainer.global_step``: generator steps
    for the adversarial modules) and save it as ``image_dir(trainer)/<key>_step<step>.png``; returns that path.

    W&B and TensorBoard also receive the image through their APIs; any other logger (CSV, ...) or none gets only
    the file. The PNG is written whatever the logger, so every picture can be opened without a viewer.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"log_image expects an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
    from PIL import Image

    path = image_dir(trainer) / f"{key.replace('/', '_')}_step{step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def samples_collectively(pl_module: Any) -> bool:
    """Whether every rank must take part in the module's sampling (sharded nets, see
    ``GenerativeModule.samples_collectively``): then a rank-0 picture is rendered on every rank and logged once."""
    return bool(getattr(pl_module, "samples_collectively", False))
