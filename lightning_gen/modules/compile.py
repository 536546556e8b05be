"""``torch.compile`` for the nets of every family: the ``compile`` option, compiling in place once, the eager fallback.

Every module takes ``compile: bool | dict`` (``true``, or ``torch.compile`` keyword arguments such as
``{mode: max-autotune, dynamic: false}``). When it is on, the module's trained nets (the players' nets of a game, the
encoder/decoder, flow or denoiser of a likelihood family) are compiled once, in ``configure_model``, with
:meth:`torch.nn.Module.compile`: the compiled forward is attached to each net in place, so state-dict keys do not
change and checkpoints of compiled and eager runs load into each other. The LightningModule itself, the training step
and the optimizers stay eager.

Each net is its own compile region (``isolate_recompiles=True`` unless given, where ``torch.compile`` takes it): all
nets share the code object of ``nn.Module._call_impl``, and without isolation the graphs of all nets count against
one ``recompile_limit`` (8 by default), past which TorchDynamo silently runs eagerly. A net compiles one graph per
mode it runs in (with and without gradients, frozen by ``frozen(...)``, eval mode, a new batch size), then reuses
them.

Fallback: the critic regularizers (gradient penalty, DRAGAN, R1) differentiate the critic twice
(``torch.autograd.grad(..., create_graph=True)``), which AOTAutograd does not support ("torch.compile with
aot_autograd does not currently support double backward"), so the games run the critic eagerly for that call
(:func:`eager`); its other calls stay compiled.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

import torch
from torch import nn

__all__ = ["CompileOption", "compile_options", "compile_nets", "is_compiled", "eager", "compile_counts"]

CompileOption = Union[bool, dict[str, Any]]


def _torch_compile_arguments() -> set[str]:
    return set(inspect.signature(torch.compile).parameters) - {"model"}


def compile_options(value: Optional[CompileOption]) -> Optional[dict[str, Any]]:
    """The ``torch.compile`` keyword arguments a ``compile`` option asks for (``None``: off), checked by name."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"compile must be true, false or a dict of torch.compile arguments (e.g. {{mode: max-autotune}}), "
            f"got {type(value).__name__} {value!r}"
        )
    allowed = _torch_compile_arguments()
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"compile got {unknown}, which torch.compile does not take; it takes {sorted(allowed)}")
    options = dict(value)
    if "isolate_recompiles" in allowed:  # (recent torch) a recompile budget per net, not one shared by all nets
        options.setdefault("isolate_recompiles", True)
    return options


def is_compiled(net: nn.Module) -> bool:
    """Whether ``net`` calls a compiled forward (:meth:`torch.nn.Module.compile` was applied to it)."""
    return getattr(net, "_compiled_call_impl", None) is not None


def compile_nets(nets: Iterable[nn.Module], options: Optional[Mapping[str, Any]]) -> list[nn.Module]:
    """Compile each net in place with ``options`` (``None``: nothing), skipping nets already compiled; returns the
    nets compiled now. In place (:meth:`torch.nn.Module.compile`), so the state-dict keys stay those of the eager net."""
    if options is None:
        return []
    done: list[nn.Module] = []
    for net in nets:
        if is_compiled(net) or any(net is other for other in done):
            continue
        net.compile(**options)
        done.append(net)
    return done


@contextmanager
def eager(*nets: nn.Module) -> Iterator[None]:
    """Call ``nets`` uncompiled inside the block (e.g. for a double backward, which compiled graphs do not support),
    then restore their compiled forwards."""
    saved = [(net, net._compiled_call_impl) for net in nets if is_compiled(net)]
    for net, _ in saved:
        net._compiled_call_impl = None
    try:
        yield
    finally:
        for net, compiled in saved:
            net._compiled_call_impl = compiled


def compile_counts() -> dict[str, int]:
    """Process-wide TorchDynamo counts since start (or ``torch._dynamo.reset()``): ``frames`` compiled (a recompile
    counts again) and ``graphs`` captured; unchanged counts over steps mean no recompiles."""
    from torch._dynamo.utils import counters

    return {"frames": int(counters["frames"]["total"]), "graphs": int(counters["stats"]["unique_graphs"])}
