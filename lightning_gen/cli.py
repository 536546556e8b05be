"""The ``lightning-gen`` command: LightningCLI over every generative module and data module."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI

import lightning_gen.callbacks  # noqa: F401  (makes callback class paths resolvable)
import lightning_gen.data  # noqa: F401
import lightning_gen.nets  # noqa: F401
from lightning_gen.callbacks.predictions import SampleWriter
from lightning_gen.modules.base import GenerativeModule

__all__ = ["GenerativeCLI", "main"]


class GenerativeCLI(LightningCLI):
    """LightningCLI in subclass mode for models (any :class:`GenerativeModule`) and data modules.

    ``predict`` writes the drawn samples to ``<log_dir>/samples.pt`` unless the config already has a prediction
    writer (``lightning_gen.callbacks.SampleWriter`` with ``output_path`` chooses the file).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(GenerativeModule, L.LightningDataModule, *args, **kwargs)

    def before_predict(self) -> None:
        """Attach a :class:`SampleWriter` when the config names no prediction writer."""
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(SampleWriter())


def main(args: Any = None) -> None:
    """Entry point of the ``lightning-gen`` console script."""
    GenerativeCLI(args=args)


if __name__ == "__main__":
    main()
