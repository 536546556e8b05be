"""Write the samples drawn by ``lightning-gen predict`` to a ``.pt`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["SampleWriter"]


class SampleWriter(BasePredictionWriter):
    """Saves all predicted samples as one tensor ``(N, *data_shape)`` in ``output_path`` (``torch.load`` reads it).

    With several processes each rank writes ``<stem>.rank<r>.pt``; the default path is ``<log_dir>/samples.pt``.
    When the data module has an ``inverse_transform`` (e.g. :class:`~lightning_gen.data.TabularDataModule`, which
    standardises its columns) the samples are mapped through it first, so the file holds data units
    (``data_units=False`` keeps the model's units).
    """

    def __init__(self, output_path: Optional[str] = None, data_units: bool = True) -> None:
        super().__init__(write_interval="epoch")
        self.output_path = output_path
        self.data_units = data_units
        self.written: Optional[Path] = None
        # the data module when the trainer has none attached (``lightning-gen predict --num_samples`` sets it)
        self.datamodule: Optional[L.LightningDataModule] = None

    def _path(self, trainer: L.Trainer) -> Path:
        root = trainer.log_dir if trainer.loggers and trainer.log_dir else trainer.default_root_dir
        path = Path(self.output_path) if self.output_path else Path(root) / "samples.pt"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        """Concatenate this rank's predictions and save them."""
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        samples = torch.cat([b.detach().cpu() for b in batches]) if batches else torch.empty(0)
        datamodule = trainer.datamodule if trainer.datamodule is not None else self.datamodule
        inverse = getattr(datamodule, "inverse_transform", None) if self.data_units else None
        if callable(inverse) and samples.numel():
            samples = inverse(samples)
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(samples, path)
        self.written = path
        if trainer.is_global_zero:
            units = f" in data units ({type(datamodule).__name__}.inverse_transform)" if callable(inverse) else ""
            print(f"lightning-gen: wrote {tuple(samples.shape)} samples{units} to {path}")
