"""One switch for the checks of tensor *values* (label and timestep ranges, data ranges) that wait for the device.

Reading a tensor's minimum or maximum on the host (``int(labels.max())``) stalls a GPU until its queue drains. These
checks are on by default, so a net, a loss or a schedule called on its own still says what is wrong with its input;
the training modules turn them off for the training batches that neither start an epoch nor log (see
:attr:`lightning_gen.modules.GenerativeModule.synchronous_checks`), so they run on the first batch of every epoch,
on logging batches, and in evaluation and ``sample()``. Every layer (nets, losses, diffusion, modules) may import
this module; it imports only the standard library.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

__all__ = ["value_checks", "value_checks_enabled"]

_ENABLED: ContextVar[bool] = ContextVar("lightning_gen_value_checks", default=True)


def value_checks_enabled() -> bool:
    """Whether checks of tensor values that wait for the device run here (``True`` unless a caller turned them off)."""
    return _ENABLED.get()


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the value checks on or off for the block, then restore the previous setting."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)
