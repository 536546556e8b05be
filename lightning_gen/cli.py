"""The ``lightning-gen`` command: LightningCLI over every generative module and data module."""

from __future__ import annotations

import json
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

import lightning_gen.callbacks  # noqa: F401  (makes callback class paths resolvable)
import lightning_gen.data  # noqa: F401
import lightning_gen.loggers  # noqa: F401  (lightning_gen.loggers.WandbLogger)
import lightning_gen.nets  # noqa: F401
from lightning_gen.callbacks.predictions import SampleWriter
from lightning_gen.modules.base import GenerativeModule

__all__ = ["GenerativeCLI", "SaveAndLogConfigCallback", "main"]


class SaveAndLogConfigCallback(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the log dir (as Lightning does) and also sends it, as a nested
    dict under the key ``"config"``, to every logger of the trainer through ``log_hyperparams`` (W&B run config,
    CSV/TensorBoard ``hparams.yaml``, ...). With no logger only the file is written."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Log the full config to each attached logger (called on rank zero only)."""
        if not trainer.loggers:
            return
        # the same serialisation as config.yaml (class paths, paths as strings, None values kept), as a nested dict
        config = json.loads(self.parser.dump(self.config, format="json", skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class GenerativeCLI(LightningCLI):
    """LightningCLI in subclass mode for models (any :class:`GenerativeModule`) and data modules.

    The resolved config is saved to ``<log_dir>/config.yaml`` and logged to every logger under ``"config"``
    (:class:`SaveAndLogConfigCallback`). ``predict`` writes the drawn samples to ``<log_dir>/samples.pt`` unless the
    config already has a prediction writer (``lightning_gen.callbacks.SampleWriter`` with ``output_path`` chooses the
    file).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_callback", SaveAndLogConfigCallback)
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
