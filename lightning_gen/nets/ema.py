"""Exponential moving average of a network's weights (a plain ``nn.Module``, no Lightning)."""

from __future__ import annotations

import copy
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

__all__ = ["ExponentialMovingAverage"]


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of a sharded (DTensor) parameter; a plain tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class ExponentialMovingAverage(nn.Module):
    """A frozen copy of ``net`` whose parameters track ``decay * ema + (1 - decay) * net`` after each :meth:`update`.

    With ``warmup`` the decay used at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` (the ``num_updates``
    rule of TensorFlow's ExponentialMovingAverage), so early averages are not dominated by the random
    initialization. Buffers are copied, not averaged. BatchNorm running statistics copied from ``net`` describe
    ``net``'s activations, not the averaged weights' (with them a DCGAN generator's EMA samples worse than the live
    net): :attr:`batch_norm_stale` says so after each update or load, and :meth:`recompute_batch_norm` re-estimates
    them from the averaged copy's own activations. Calling the module runs the averaged copy; it lives in the
    owner's ``state_dict``, so checkpoints keep it.
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
        self._batch_norms = [m for m in self.module.modules()
                             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.batch_norm_stale = bool(self._batch_norms)  # True: the running statistics are not the average's own

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
        # sharded nets (lightning_gen.modules.sharding): the average and the net are sharded alike, so each rank
        # updates its own shards; a sharded net that ran forward without a backward (sampling) is still gathered
        for sharded in (self.module, net):
            if isinstance(sharded, FSDPModule):
                sharded.reshard()
        ema_params = [_local(p) for p in self.module.parameters()]
        params = [_local(p.detach()) for p in net.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("ExponentialMovingAverage.update got a net with a different architecture")
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), net.buffers()):
            ema_buffer.copy_(buffer)
        self.num_updates += 1
        self._updates += 1
        self.batch_norm_stale = bool(self._batch_norms)

    @torch.no_grad()
    def recompute_batch_norm(self, inputs: Iterable[Sequence[Any]]) -> None:
        """Re-estimate every BatchNorm's running statistics as the plain mean over the batches of ``inputs`` (each
        a tuple of the averaged net's positional arguments), run through the averaged copy in training mode.

        The copy's train/eval mode and the layers' momenta are restored; :attr:`batch_norm_stale` becomes False.
        """
        momenta = [m.momentum for m in self._batch_norms]
        was_training = self.module.training
        for m in self._batch_norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
        self.module.train()
        try:
            for args in inputs:
                self.module(*args)
        finally:
            for m, momentum in zip(self._batch_norms, momenta):
                m.momentum = momentum
            self.module.train(was_training)
        self.batch_norm_stale = False

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._updates = None  # read the loaded count at the next update
        self.batch_norm_stale = bool(self._batch_norms)  # a checkpoint may hold copied statistics

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the averaged network."""
        return self.module(*args, **kwargs)
