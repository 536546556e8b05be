"""``PeriodicCheckpoint``: Lightning's ``ModelCheckpoint`` that also keeps ``last.ckpt`` fresh during an epoch.

Lightning's ``ModelCheckpoint`` takes only one of ``every_n_train_steps`` / ``train_time_interval`` /
``every_n_epochs``, and under manual optimization (every adversarial module here) it ignores
``train_time_interval`` altogether and warns on every ``every_n_train_steps`` save. Several instances that all
``save_last`` also fight over ``last.ckpt`` (the second writes ``last-v1.ckpt``). This one callback does all three:
its epoch-end behaviour is ``ModelCheckpoint``'s, and it adds the two periodic triggers, which only overwrite
``last.ckpt`` in place. So a run killed mid-epoch resumes from at most ``every_n_train_steps`` generator steps or
``train_time_interval`` back (``lightning-gen fit --ckpt_path .../last.ckpt``).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Callable, Literal, Optional, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

__all__ = ["PeriodicCheckpoint"]


class PeriodicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (epoch-end saves and ``last.ckpt``) plus ``last.ckpt`` every few steps and minutes.

    Args:
        every_n_train_steps: also write ``last.ckpt`` whenever ``trainer.global_step`` (generator steps for the
            adversarial modules, optimizer steps otherwise) reaches a multiple of this; ``None``/0: off.
        train_time_interval: also write ``last.ckpt`` when this much wall time has passed since the start of
            training or the last periodic save (checked once per step; rank 0's clock decides under DDP); ``None``:
            off. From YAML: ``"0:10:00"`` is ten minutes.
        save_last: must stay on (``True`` or ``"link"``) when a periodic trigger is set.
        dirpath, filename, monitor, mode, save_top_k, save_weights_only, every_n_epochs, save_on_train_epoch_end,
            verbose: as in ``ModelCheckpoint``; they govern the epoch-end checkpoints only.

    The periodic saves are the trainer's full checkpoints (weights, optimizers, counters, RNG and data-loader
    position), written at the end of the training batch on which the step was taken, so they resume exactly.
    They do not count as ``ModelCheckpoint``'s own saves: the epoch-end checkpoint is still written at the end of
    every epoch, even when a periodic save fell on the same step.
    """

    _clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(
        self,
        dirpath: Optional[str] = None,
        filename: Optional[str] = None,
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Optional[timedelta] = None,
        save_last: Union[bool, Literal["link"]] = True,
        monitor: Optional[str] = None,
        mode: str = "min",
        save_top_k: int = 1,
        save_weights_only: bool = False,
        every_n_epochs: Optional[int] = None,
        save_on_train_epoch_end: Optional[bool] = None,
        verbose: bool = False,
    ) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0 or null, got {every_n_train_steps}")
        if train_time_interval is not None and train_time_interval.total_seconds() <= 0:
            raise ValueError(f"train_time_interval must be positive or null, got {train_time_interval}")
        if (every_n_train_steps or train_time_interval is not None) and not save_last:
            raise ValueError("PeriodicCheckpoint's periodic saves write last.ckpt: keep save_last true (or 'link').")
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, verbose=verbose, save_last=save_last,
            save_top_k=save_top_k, save_weights_only=save_weights_only, mode=mode, every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
        )
        self.every_n_train_steps = int(every_n_train_steps or 0)
        self.train_time_interval = train_time_interval
        self._periodic_step = 0  # global step of the last periodic save (or where training started)
        self._periodic_time: Optional[float] = None
        self._time_checked_step = -1

    @property
    def state_key(self) -> str:
        """Distinct for each trigger setting, so several instances keep their own state in a checkpoint."""
        return self._generate_state_key(
            monitor=self.monitor, mode=self.mode, every_n_epochs=self._every_n_epochs,
            every_n_train_steps=self.every_n_train_steps, train_time_interval=self.train_time_interval,
        )

    def _monitor_candidates(self, trainer: L.Trainer) -> dict[str, Tensor]:
        # file names use the trainer's own step: a logged "step" value (the loggers' x-axis) is only as fresh as the
        # last logged batch, and Lightning would take it over global_step
        candidates = super()._monitor_candidates(trainer)
        candidates["step"] = torch.tensor(trainer.global_step)
        return candidates

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock; a resumed run does not save again at the step it resumed from."""
        super().on_train_start(trainer, pl_module)
        self._periodic_step = trainer.global_step
        self._periodic_time = self._clock()
        self._time_checked_step = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Overwrite ``last.ckpt`` when a step or time trigger is due (after the batch's optimizer steps)."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self._periodic_save_due(trainer):
            return
        # a periodic save is not one of ModelCheckpoint's own: leave its bookkeeping (skip-if-saved-at-this-step,
        # save-last-at-train-end) as it was, so the epoch-end checkpoint is still written
        saved_step, saved_path = self._last_global_step_saved, self._last_checkpoint_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved, self._last_checkpoint_saved = saved_step, saved_path
        self._periodic_step = trainer.global_step
        self._periodic_time = self._clock()

    def _periodic_save_due(self, trainer: L.Trainer) -> bool:
        """Whether a periodic trigger fires now; the same answer on every rank (saving is collective)."""
        step = trainer.global_step
        if (
            trainer.fast_dev_run
            or trainer.sanity_checking
            or not trainer.training
            or step == self._periodic_step  # nothing new since the last periodic save (or the start)
        ):
            return False
        due = self.every_n_train_steps >= 1 and step % self.every_n_train_steps == 0
        if self.train_time_interval is not None and self._time_checked_step != step:
            self._time_checked_step = step  # once per step: critic micro-batches share a step
            started = self._periodic_time
            late = started is not None and self._clock() - started >= self.train_time_interval.total_seconds()
            due = bool(trainer.strategy.broadcast(late)) or due  # rank 0's clock decides for all ranks
        return due
