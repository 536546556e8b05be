"""Training never steps on a non-finite loss, and finding one never makes a training step wait for the device.

:class:`FiniteLossGuard` folds ``isfinite(loss)`` of every training loss into a flag that stays on the device. Each
optimizer step it guards is a no-op on the device once the flag is set -- the way a ``GradScaler`` skips steps, but
without reading the flag on the host:

* a fused optimizer (``fused=True``: Adam, AdamW, SGD, Adagrad) gets the flag as its ``found_inf`` and skips its
  update inside its kernel, at no cost;
* any other optimizer is stepped, then every parameter and every tensor of ``optimizer.state`` on the parameters'
  device is put back with ``torch.where(flag, before, after)`` (one copy of them is kept for this); state that lives
  on the host by design (the ``step`` counters of non-capturable optimizers on a GPU) is recorded before each step and
  put back when the error is raised;
* a step that creates optimizer state (the first step of each optimizer) cannot be undone on the device: that step
  reads the flag on the host, once;
* a step under a ``GradScaler`` is skipped by the scaler: :meth:`FiniteLossGuard.poison` makes one gradient NaN when
  the flag is set, and the scaler's own check (one host read per step, torch's design) skips it.

:meth:`FiniteLossGuard.check` reads the flag on the host (the one wait): the modules call it where a step waits
anyway -- logging batches, the first batch of each epoch, the end of each epoch and of training, and before writing a
checkpoint -- and it hands the first non-finite loss, with what the module recorded about it, to ``on_error``, which
raises. Under DDP the flag is reduced over the processes, so every process skips the same steps and raises together.

On a device whose memory the host reads without waiting for a queue (:data:`HOST_READABLE_DEVICES`: the CPU), there is
nothing to save: the modules check every loss at once (the error is raised before any step on it), and guarded steps
keep no copies.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["FiniteLossGuard", "NonFiniteLoss", "HOST_READABLE_DEVICES", "reads_for_free"]

#: Device types whose tensors the host reads at no cost (no queue to wait for): checked at once, steps not guarded.
HOST_READABLE_DEVICES: frozenset[str] = frozenset({"cpu"})

_NONE = math.inf  # the flag's value while every recorded loss is finite
_MAX_PENDING = 10_000  # recorded losses before a check is forced (bounds the host memory between checks)


@dataclass(frozen=True)
class NonFiniteLoss:
    """The first non-finite loss since the last check: its value as text (``nan``, ``inf``, ``-inf``, or
    ``non-finite``), and the ``info`` the module recorded with it (e.g. the step and the player)."""

    value: str
    info: Any


def reads_for_free(device: torch.device) -> bool:
    """Whether reading a tensor on ``device`` from the host waits for nothing (see :data:`HOST_READABLE_DEVICES`)."""
    return device.type in HOST_READABLE_DEVICES


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _describe(loss: Tensor) -> str:
    if loss.numel() != 1:
        return "non-finite"
    value = float(loss.float())
    return str(value) if not math.isfinite(value) else "non-finite (on another process)"


class FiniteLossGuard:
    """Records training losses, makes guarded optimizer steps no-ops on the device after a non-finite one, and hands
    that loss to ``on_error`` at the next :meth:`check` (see the module docstring)."""

    def __init__(self, on_error: Callable[[NonFiniteLoss], None]) -> None:
        self.on_error = on_error
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new fit starts)."""
        self._first: Optional[Tensor] = None  # float, on the device: index of the first non-finite recorded loss
        self._skip: Optional[Tensor] = None  # float32 0/1 on the device: guarded steps are no-ops (every process)
        self._skip_bool: Optional[Tensor] = None
        self._skip_current = False  # _skip includes every recorded loss
        self._losses: list[tuple[Tensor, Any]] = []  # (detached loss, info) since the last check
        # per guarded step with host-resident optimizer values: (losses recorded before it, optimizer id, values)
        self._host_values: list[tuple[int, int, list[tuple[dict, Any, Any]]]] = []
        self._buffers: dict[tuple[int, torch.dtype], tuple[Tensor, Tensor]] = {}

    # -- recording and checking ---------------------------------------------------------------------------------
    def _ensure(self, device: torch.device) -> None:
        if self._first is None or self._first.device != device:
            self._first = torch.full((), _NONE, device=device)
            self._skip = torch.zeros((), device=device)
            self._skip_bool = torch.zeros((), dtype=torch.bool, device=device)

    @torch.no_grad()
    def record(self, loss: Tensor, info: Any) -> None:
        """Fold ``isfinite(loss)`` into the device flag (no wait); ``info`` names the loss in the error."""
        loss = loss.detach()
        self._ensure(loss.device)
        assert self._first is not None
        finite = torch.isfinite(loss.reshape(())) if loss.numel() == 1 else torch.isfinite(loss).all()
        torch.minimum(self._first, torch.where(finite, _NONE, float(len(self._losses))), out=self._first)
        self._losses.append((loss, info))
        self._skip_current = False
        if len(self._losses) >= _MAX_PENDING:
            self.check()

    @torch.no_grad()
    def check_now(self, loss: Tensor, info: Any) -> None:
        """Check one loss at once, where reading it waits for nothing (:func:`reads_for_free`) and there is one
        process: the same error as :meth:`record` then :meth:`check`, without the device flag's bookkeeping."""
        finite = bool(torch.isfinite(loss.detach()).all())
        if not finite:
            self.reset()
            self.on_error(NonFiniteLoss(_describe(loss.detach()), info))

    @staticmethod
    def checks_at_once(device: torch.device) -> bool:
        """Whether losses on ``device`` are checked as they come (:meth:`check_now`): the host reads them for free and
        no other process has to raise with this one."""
        return reads_for_free(device) and not _distributed()

    def check(self) -> None:
        """Wait for the device: when a recorded loss was non-finite (on any process), put back the host-resident
        optimizer values of the skipped steps, forget the recordings and call ``on_error``; else forget them.

        Collective under DDP: every process must call it at the same point (they record the same losses)."""
        if self._first is None or not self._losses:
            return
        first = self._first
        if _distributed():
            first = first.clone()
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        index = float(first)  # the one wait for the device
        if index == _NONE:
            self._losses.clear()
            self._host_values.clear()
            return
        loss, info = self._losses[int(index)]
        found = NonFiniteLoss(_describe(loss), info)
        self._put_back_host_values(int(index))
        self.reset()  # the error is raised once; the parameters and optimizer states are those before the loss
        self.on_error(found)

    @torch.no_grad()
    def update_skip(self) -> Optional[Tensor]:
        """Bring the step flag up to date with the recorded losses (reduced over processes under DDP); ``None``
        before any loss is recorded."""
        if self._first is None:
            return None
        assert self._skip is not None and self._skip_bool is not None
        if not self._skip_current and reads_for_free(self._first.device) and not self._losses:
            return self._skip  # every loss was read as it came (the flag is still clear): nothing to bring up to date
        if not self._skip_current:
            torch.lt(self._first, _NONE, out=self._skip_bool)
            self._skip.copy_(self._skip_bool)
            if _distributed():
                dist.all_reduce(self._skip, op=dist.ReduceOp.MAX)
                self._skip_bool.copy_(self._skip)
            self._skip_current = True
        return self._skip

    # -- guarded steps ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def poison(self, params: Iterable[Tensor]) -> None:
        """When the step flag is set, make one gradient NaN, so that a ``GradScaler`` (whose check of the gradients
        happens before the step) skips the step; the gradients are left bit for bit as they are otherwise."""
        if self.update_skip() is None:
            return
        for p in params:
            if p.grad is not None and p.grad.numel():
                first = p.grad[(0,) * p.grad.dim()]
                first.copy_(torch.where(self._skip_bool, math.nan, first))
                return

    @contextmanager
    def step(self, optimizer: torch.optim.Optimizer, scaled: bool = False) -> Iterator[None]:
        """Around one optimizer step (the ``optimizer.step()`` call, a closure included): when the flag is set by the
        end of the step, the step leaves the parameters and ``optimizer.state`` exactly as they were.

        ``scaled``: a ``GradScaler`` steps this optimizer, and :meth:`poison` makes it skip (nothing to do here). On a
        device the host reads for free, losses are checked as they come, so there is nothing to guard either.
        """
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if scaled or not params or reads_for_free(params[0].device):
            yield
            return
        device = params[0].device
        self._ensure(device)
        keys_before = {id(p): tuple(s) for p in params if (s := optimizer.state.get(p))}
        on_device, on_host = self._split_state(optimizer, params, device)
        if on_host:
            self._host_values.append((len(self._losses), id(optimizer), self._copy_host_values(on_host)))
        fused = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        if fused:  # the fused kernels skip their update when found_inf is 1 (and undo their step count)
            optimizer.found_inf = self._skip  # type: ignore[attr-defined]
            groups: dict[torch.dtype, list[Tensor]] = {}
        else:
            with torch.no_grad():
                groups = self._backup(id(optimizer), on_device)
        try:
            yield
        finally:
            if fused:
                del optimizer.found_inf  # type: ignore[attr-defined]
        with torch.no_grad():
            self._after_step(optimizer, params, keys_before, groups)

    def _after_step(
        self, optimizer: torch.optim.Optimizer, params: list[Tensor], keys_before: dict[int, tuple],
        groups: dict[torch.dtype, list[Tensor]],
    ) -> None:
        """Put the step's tensors back when the flag is set (see :meth:`step`)."""
        self.update_skip()
        assert self._skip_bool is not None
        created = [(p, tuple(k for k in s if k not in keys_before.get(id(p), ())))
                   for p in params if (s := optimizer.state.get(p)) and len(s) != len(keys_before.get(id(p), ()))]
        if created:
            # this step created optimizer state, which cannot be taken back on the device: decide on the host (the
            # first step of each optimizer, once)
            if bool(self._skip_bool):
                for key, tensors in groups.items():
                    torch._foreach_copy_(tensors, self._views(self._buffers[(id(optimizer), key)][0], tensors))
                for p, keys in created:
                    for k in keys:
                        del optimizer.state[p][k]
                    if not optimizer.state[p]:
                        del optimizer.state[p]
                self.check()
            return
        for key, tensors in groups.items():
            backup, work = self._buffers[(id(optimizer), key)]
            torch.cat([t.reshape(-1) for t in tensors], out=work)
            torch.where(self._skip_bool, backup, work, out=work)
            torch._foreach_copy_(tensors, self._views(work, tensors))

    @staticmethod
    def _split_state(
        optimizer: torch.optim.Optimizer, params: list[Tensor], device: torch.device
    ) -> tuple[list[Tensor], list[tuple[dict, Any]]]:
        """The parameters and state tensors on ``device``, and the ``(state dict, key)`` of the other state values."""
        on_device: list[Tensor] = list(params)
        on_host: list[tuple[dict, Any]] = []
        for p in params:
            state = optimizer.state.get(p)
            if not state:
                continue
            for key, value in state.items():
                if isinstance(value, Tensor) and value.device == device:
                    on_device.append(value)
                else:
                    on_host.append((state, key))
        return on_device, on_host

    def _backup(self, opt_id: int, tensors: list[Tensor]) -> dict[torch.dtype, list[Tensor]]:
        """Copy ``tensors`` (grouped by dtype) into this optimizer's backup buffers; returns the groups."""
        groups: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            groups.setdefault(t.dtype, []).append(t)
        for dtype, group in groups.items():
            total = sum(t.numel() for t in group)
            buffers = self._buffers.get((opt_id, dtype))
            if buffers is None or buffers[0].numel() != total or buffers[0].device != group[0].device:
                device = group[0].device
                buffers = (torch.empty(total, dtype=dtype, device=device), torch.empty(total, dtype=dtype, device=device))
                self._buffers[(opt_id, dtype)] = buffers
            torch.cat([t.reshape(-1) for t in group], out=buffers[0])
        return groups

    @staticmethod
    def _views(flat: Tensor, tensors: list[Tensor]) -> list[Tensor]:
        return [chunk.view(t.shape) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    @staticmethod
    def _copy_host_values(items: list[tuple[dict, Any]]) -> list[tuple[dict, Any, Any]]:
        return [(state, key, state[key].clone() if isinstance(state[key], Tensor) else copy.deepcopy(state[key]))
                for state, key in items]

    def _put_back_host_values(self, first_bad: int) -> None:
        """Give each optimizer back its host-resident values from before its first step after loss ``first_bad``."""
        done: set[int] = set()
        for recorded_before, opt_id, values in self._host_values:
            if recorded_before > first_bad and opt_id not in done:
                done.add(opt_id)
                for state, key, value in values:
                    if isinstance(value, Tensor) and isinstance(state.get(key), Tensor):
                        state[key].copy_(value)
                    else:
                        state[key] = value

