"""Learning-rate schedules that plain YAML can name (``class_path`` + ``init_args``), for the recipes."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["LinearDecayLR"]


class LinearDecayLR(LRScheduler):
    """Keep the base learning rate for ``constant_steps`` scheduler steps, then decay it linearly towards 0 over
    ``decay_steps`` more: the factor after ``n`` steps is ``1 - max(0, n + 1 - constant_steps) / (decay_steps + 1)``,
    the rule of the CycleGAN/pix2pix code (there counted in epochs: 100 constant + 100 decaying, the last at 1/101).

    The image-to-image modules step their schedulers once per generator step, so count steps:
    ``epochs * ceil(training pairs / batch size)``.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, constant_steps: int, decay_steps: int, last_epoch: int = -1
    ) -> None:
        if constant_steps < 0 or decay_steps < 1:
            raise ValueError(f"need constant_steps >= 0 and decay_steps >= 1, got {constant_steps}, {decay_steps}")
        self.constant_steps = int(constant_steps)
        self.decay_steps = int(decay_steps)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate once ``step`` scheduler steps have been taken."""
        return max(0.0, 1.0 - max(0, step + 1 - self.constant_steps) / (self.decay_steps + 1))

    def get_lr(self) -> list[float]:
        """The learning rates for the current step (``last_epoch`` counts steps here)."""
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
