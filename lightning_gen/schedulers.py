"""Learning-rate schedules that plain YAML can name (``class_path`` + ``init_args``), for the recipes.

Schedules over the whole run. :class:`LinearLR`, :class:`CosineAnnealingLR` and :class:`LinearDecayLR` take their
length from the run when it is left out (``total_iters`` / ``T_max`` / ``constant_steps`` + ``decay_steps``): the
module that owns the optimizer tells them, when training starts, how many steps that optimizer takes in the run::

    generator_scheduler:                       # 1 step per generator step: max_steps steps
      class_path: lightning_gen.schedulers.LinearLR
      init_args: {start_factor: 1.0, end_factor: 0.01}
    discriminator_scheduler:                   # n_critic steps per generator step: max_steps * n_critic steps
      class_path: lightning_gen.schedulers.LinearLR
      init_args: {start_factor: 1.0, end_factor: 0.01}

So ``--trainer.max_steps 20000`` (or ``--model.n_critic 5``) stretches every schedule with it, also when a run
resumed from a checkpoint is extended: the schedule continues from the step it reached, on the new length.
How many steps a player takes (:func:`steps_in_run`):

* ``trainer.max_steps`` counts generator steps (``trainer.global_step``); a player that steps ``k`` times per
  generator step (GAN's critic: ``n_critic``; pix2pix/CycleGAN: 1; the likelihood families' one optimizer: 1)
  takes ``max_steps * k`` steps;
* with ``trainer.max_epochs`` instead (or as well: the run stops at whichever comes first), the length is counted
  from the batches per epoch the trainer sees (after ``limit_train_batches``);
* a run with neither (``max_steps: -1``, ``max_epochs: -1``) has no length: the module stops with an error that
  names both options. ``max_time`` does not count: a schedule does not know when the clock will stop the run.

Each module resolves its schedules in ``on_train_start`` (after the data is set up and a checkpoint restored), via
:func:`fit_schedule_to_run`. Built by hand with an explicit length, these classes are ordinary, pure schedulers:
the learning rate after ``n`` steps is a closed-form function of ``n`` and the length.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Optional

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["CosineAnnealingLR", "LinearDecayLR", "LinearLR", "RunLengthLR", "fit_schedule_to_run", "steps_in_run"]


def steps_in_run(
    max_steps: int,
    max_epochs: Optional[int],
    batches_per_epoch: Optional[float] = None,
    batches_per_generator_step: int = 1,
    steps_per_generator_step: int = 1,
) -> int:
    """Steps an optimizer takes over a run: the fewer of ``max_steps`` generator steps and ``max_epochs`` epochs.

    Args:
        max_steps: the trainer's ``max_steps`` (generator steps; -1 or ``None``: no limit).
        max_epochs: the trainer's ``max_epochs`` (-1 or ``None``: no limit).
        batches_per_epoch: training batches per epoch (needed only when ``max_epochs`` limits the run).
        batches_per_generator_step: training batches consumed per generator step (GAN:
            ``n_critic * accumulate_grad_batches``; automatic optimization: ``accumulate_grad_batches``).
        steps_per_generator_step: steps this optimizer takes per generator step (GAN's critic: ``n_critic``).

    Raises ``ValueError`` when neither limit is finite.
    """
    if batches_per_generator_step < 1 or steps_per_generator_step < 1:
        raise ValueError(f"need batches_per_generator_step >= 1 and steps_per_generator_step >= 1, got "
                         f"{batches_per_generator_step} and {steps_per_generator_step}")
    limits = []
    if max_steps is not None and max_steps != -1:
        limits.append(int(max_steps) * steps_per_generator_step)
    if max_epochs is not None and max_epochs != -1 and batches_per_epoch is not None and math.isfinite(batches_per_epoch):
        limits.append(int(max_epochs) * int(batches_per_epoch) * steps_per_generator_step // batches_per_generator_step)
    if not limits:
        unsized = batches_per_epoch is not None and not math.isfinite(batches_per_epoch)
        raise ValueError(
            f"the run has no set length (max_steps={max_steps}, max_epochs={max_epochs}"
            f"{', and the training set has no length' if unsized else ''}): set "
            "`--trainer.max_steps` (generator steps) or `--trainer.max_epochs`, or give the schedule its length"
        )
    return min(limits)


class RunLengthLR(LRScheduler):
    """Base of the schedules whose length may come from the run: the learning rate after ``n`` steps is
    :meth:`lr_at` ``(base_lr, n)``, a closed form of ``n`` and :attr:`total_steps`.

    A subclass sets its own attributes, then calls ``super().__init__(optimizer, from_run, last_epoch)`` with
    ``from_run=True`` when its length is to be taken from the run; its :meth:`_set_length` turns a number of steps
    into its length attributes (listed in ``_length_attributes``). Until :meth:`set_run_length` is called, such a
    schedule keeps the base learning rates, and stepping it is an error that says how to give it a length.
    """

    _length_attributes: ClassVar[tuple[str, ...]] = ("total_steps",)
    _length_argument: ClassVar[str] = "total_steps"

    def __init__(self, optimizer: torch.optim.Optimizer, from_run: bool, last_epoch: int = -1) -> None:
        self.from_run = bool(from_run)
        self.run_length: Optional[int] = None  # the run's steps, once set
        super().__init__(optimizer, last_epoch)

    # -- what a subclass provides -------------------------------------------------------------------------------
    def lr_at(self, base_lr: float, step: int) -> float:
        """The learning rate once ``step`` scheduler steps have been taken, for a base learning rate ``base_lr``."""
        raise NotImplementedError

    def _set_length(self, steps: int) -> None:
        """Set the length attributes from the run's number of steps (called by :meth:`set_run_length`)."""
        self.total_steps = int(steps)

    # -- shared -------------------------------------------------------------------------------------------------
    @property
    def needs_run_length(self) -> bool:
        """Whether the length comes from the run and has not been set yet."""
        return self.from_run and self.run_length is None

    def set_run_length(self, steps: int) -> None:
        """Take the run's length (the optimizer's steps over the whole run) and apply the current step's rate."""
        if not self.from_run:
            raise RuntimeError(f"{type(self).__name__} was given its length explicitly; it does not follow the run")
        if steps < 1:
            raise ValueError(f"{type(self).__name__}: the run has {steps} steps for this optimizer; need >= 1")
        saved = getattr(self, "_saved_run_length", None)
        if saved is not None and saved != int(steps):
            rank_zero_warn(
                f"{type(self).__name__} follows the run: the checkpoint's schedule was sized for {saved} steps of this "
                f"optimizer and this run's for {int(steps)} (e.g. --trainer.max_steps changed), so the learning rate goes "
                f"on along the {int(steps)}-step schedule from step {self.last_epoch}. The result will not repeat an "
                f"uninterrupted run of either length; give `{self._length_argument}` explicitly for a schedule that does "
                "not depend on max_steps."
            )
        self._saved_run_length = None
        self._set_length(int(steps))
        self.run_length = int(steps)
        self._apply()

    def _apply(self) -> None:
        """Put the current step's learning rates into the optimizer's parameter groups."""
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_lr(self) -> list[float]:
        """The learning rates for the current step (``last_epoch`` counts steps here)."""
        if self.needs_run_length:
            if self.last_epoch > 0:
                raise RuntimeError(
                    f"{type(self).__name__} was left without `{self._length_argument}`, so it takes its length from the "
                    "run, but nothing gave it one: pass it to a lightning_gen module (as a YAML class_path/init_args, "
                    f"or a factory such as functools.partial({type(self).__name__}, ...)), which sets the length when "
                    f"training starts, or give `{self._length_argument}` explicitly."
                )
            return list(self.base_lrs)
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step; a schedule following the run keeps this run's length (which may differ from the saved
        run's, e.g. after ``--trainer.max_steps`` was raised to extend it) and applies its rate at the saved step."""
        if not self.from_run:
            super().load_state_dict(state_dict)
            return
        keep = {name: getattr(self, name) for name in (*self._length_attributes, "run_length", "from_run")}
        super().load_state_dict(state_dict)
        for name, value in keep.items():
            setattr(self, name, value)
        self._saved_run_length = state_dict.get("run_length")  # compared with this run's in set_run_length
        if self.run_length is not None:
            self._apply()


def fit_schedule_to_run(scheduler: Any, steps: Callable[[], int], owner: str = "") -> None:
    """Give ``scheduler`` the run's length if it is a :class:`RunLengthLR` waiting for one; ``steps()`` is called
    only then. ``owner`` (e.g. "the discriminator's scheduler") prefixes errors."""
    if isinstance(scheduler, RunLengthLR) and scheduler.from_run:
        try:
            total = steps()
        except ValueError as err:
            what = owner or type(scheduler).__name__
            raise ValueError(f"{what} ({type(scheduler).__name__}) takes its length from the run, but {err}.") from err
        scheduler.set_run_length(total)


class LinearLR(RunLengthLR):
    """``torch.optim.lr_scheduler.LinearLR`` whose ``total_iters`` defaults to the run: the factor of the base
    learning rate goes linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps, then stays.

    After ``n`` steps the rate is ``base * (start + (end - start) * min(n, total_iters) / total_iters)``, torch's
    closed form; the last step of the run uses ``n = total_iters - 1`` and the rate after it is ``base * end``.
    """

    _length_attributes = ("total_steps", "total_iters")
    _length_argument = "total_iters"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        start_factor: float = 1.0,
        end_factor: float = 0.0,
        total_iters: Optional[int] = None,
        last_epoch: int = -1,
    ) -> None:
        if not (0 <= start_factor and 0 <= end_factor):
            raise ValueError(f"start_factor and end_factor must be >= 0, got {start_factor} and {end_factor}")
        if total_iters is not None and total_iters < 1:
            raise ValueError(f"total_iters must be >= 1 or null (the run's length), got {total_iters}")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters: Optional[int] = total_iters
        self.total_steps: Optional[int] = total_iters
        super().__init__(optimizer, from_run=total_iters is None, last_epoch=last_epoch)

    def _set_length(self, steps: int) -> None:
        self.total_steps = self.total_iters = int(steps)

    def lr_at(self, base_lr: float, step: int) -> float:
        """``base * (start + (end - start) * min(step, total_iters) / total_iters)``."""
        assert self.total_iters is not None
        progress = min(step, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * progress)


class CosineAnnealingLR(RunLengthLR):
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` whose ``T_max`` defaults to the run (Loshchilov & Hutter
    2017, without restarts): ``eta_min + (base - eta_min) * (1 + cos(pi * min(n, T_max) / T_max)) / 2`` after ``n``
    steps, so the rate ends at ``eta_min`` and stays there (torch's would rise again past ``T_max``)."""

    _length_attributes = ("total_steps", "T_max")
    _length_argument = "T_max"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        T_max: Optional[int] = None,  # noqa: N803 (torch's name)
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if T_max is not None and T_max < 1:
            raise ValueError(f"T_max must be >= 1 or null (the run's length), got {T_max}")
        self.T_max: Optional[int] = T_max
        self.total_steps: Optional[int] = T_max
        self.eta_min = float(eta_min)
        super().__init__(optimizer, from_run=T_max is None, last_epoch=last_epoch)

    def _set_length(self, steps: int) -> None:
        self.total_steps = self.T_max = int(steps)

    def lr_at(self, base_lr: float, step: int) -> float:
        """``eta_min + (base - eta_min) * (1 + cos(pi * min(step, T_max) / T_max)) / 2``."""
        assert self.T_max is not None
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * min(step, self.T_max) / self.T_max)) / 2


class LinearDecayLR(RunLengthLR):
    """Keep the base learning rate for ``constant_steps`` scheduler steps, then decay it linearly towards 0 over
    ``decay_steps`` more: the factor after ``n`` steps is ``1 - max(0, n + 1 - constant_steps) / (decay_steps + 1)``,
    the rule of the CycleGAN/pix2pix code (there counted in epochs: 100 constant + 100 decaying, the last at 1/101).

    Either length left out comes from the run (``run`` = the optimizer's steps over the whole run): ``decay_steps``
    = ``run - constant_steps``; ``constant_steps`` = ``run - decay_steps``, or ``round(constant_fraction * run)``
    when both are left out (the papers' rule: ``constant_fraction: 0.5``, half the run constant, half decaying).
    The image-to-image modules step their schedulers once per generator step.
    """

    _length_attributes = ("total_steps", "constant_steps", "decay_steps")
    _length_argument = "constant_steps`/`decay_steps"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        constant_steps: Optional[int] = None,
        decay_steps: Optional[int] = None,
        constant_fraction: float = 0.5,
        last_epoch: int = -1,
    ) -> None:
        if (constant_steps is not None and constant_steps < 0) or (decay_steps is not None and decay_steps < 1):
            raise ValueError(f"need constant_steps >= 0 and decay_steps >= 1, got {constant_steps}, {decay_steps}")
        if not 0 <= constant_fraction < 1:
            raise ValueError(f"constant_fraction must be in [0, 1), got {constant_fraction}")
        self.given = (constant_steps, decay_steps)
        self.constant_fraction = float(constant_fraction)
        self.constant_steps: Optional[int] = None if constant_steps is None else int(constant_steps)
        self.decay_steps: Optional[int] = None if decay_steps is None else int(decay_steps)
        from_run = constant_steps is None or decay_steps is None
        self.total_steps: Optional[int] = None if from_run else self.constant_steps + self.decay_steps  # type: ignore[operator]
        super().__init__(optimizer, from_run=from_run, last_epoch=last_epoch)

    def _set_length(self, steps: int) -> None:
        constant, decay = self.given
        if constant is None:
            constant = steps - decay if decay is not None else round(self.constant_fraction * steps)
        if decay is None:
            decay = steps - constant
        if constant < 0 or decay < 1:
            raise ValueError(
                f"LinearDecayLR: a run of {steps} steps leaves {constant} constant and {decay} decaying steps (given "
                f"constant_steps={self.given[0]}, decay_steps={self.given[1]}); lengthen the run or change them"
            )
        self.constant_steps, self.decay_steps, self.total_steps = int(constant), int(decay), int(steps)

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate once ``step`` scheduler steps have been taken."""
        assert self.constant_steps is not None and self.decay_steps is not None
        return max(0.0, 1.0 - max(0, step + 1 - self.constant_steps) / (self.decay_steps + 1))

    def lr_at(self, base_lr: float, step: int) -> float:
        """``base * factor(step)``."""
        return base_lr * self.factor(step)
