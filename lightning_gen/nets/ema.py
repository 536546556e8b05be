"""Exponential moving average of a network's weights (a plain ``nn.Module``, no Lightning)."""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(nn.Module):
    """A frozen copy of ``net`` whose parameters track ``decay * ema + (1 - decay) * net`` after each :meth:`update`.

    With ``warmup`` the decay used at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` (the ``num_updates``
    rule of TensorFlow's ExponentialMovingAverage), so early averages are not dominated by the random
    initialization. Buffers (e.g. BatchNorm running statistics) are copied, not averaged. Calling the module runs
    the averaged copy; it lives in the owner's ``state_dict``, so checkpoints keep it.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(net)
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = warmup
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._updates: Optional[int] = 0  # host mirror of num_updates (None: read it at the next update)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use (reads ``num_updates``, which waits for the device)."""
        self._updates = int(self.num_updates)
        return self._decay(self._updates)

    def _decay(self, n: int) -> float:
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Move the average towards ``net``'s current parameters and copy its buffers.

        The update count is mirrored on the host (read from ``num_updates`` once after the average is loaded, or by
        :meth:`current_decay`), so an update never waits for the device."""
        if self._updates is None:
            self._updates = int(self.num_updates)
        decay = self._decay(self._updates)
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in net.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("ExponentialMovingAverage.update got a net with a different architecture")
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), net.buffers()):
            ema_buffer.copy_(buffer)
        self.num_updates += 1
        self._updates += 1

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._updates = None  # read the loaded count at the next update

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the averaged network."""
        return self.module(*args, **kwargs)
