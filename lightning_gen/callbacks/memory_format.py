"""``channels_last`` memory format for the convolutional nets of any family, as a callback."""

from __future__ import annotations

import lightning as L
import torch

__all__ = ["ChannelsLast"]


class ChannelsLast(L.Callback):
    """Store the module's 4-D weights and buffers (its convolutions) in ``torch.channels_last`` memory format before
    training, validation, testing or prediction, so that convolutions run channels-last (inputs need no change).

    The values are unchanged and checkpoints load into modules of either format; only the speed differs. Measured on
    a 2-core CPU (``benchmarks/throughput.py``, variant ``channels_last``; see the README): DCGAN-, RealNVP- and
    DDPM-MNIST ran faster in every run, CycleGAN at 64 px did not. In YAML::

        trainer:
          callbacks:
            - class_path: lightning_gen.callbacks.ChannelsLast
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Convert the module's 4-D tensors in place (before the optimizers are built from its parameters)."""
        pl_module.to(memory_format=torch.channels_last)
