"""Early checks of a module's nets against the data's shape, reported in the nets' own option names.

A module calls :func:`generator_output_problem` / :func:`input_problem` from its ``setup`` hook, which Lightning
runs after the data module's ``setup`` and before any training, sanity check or metric set-up
(:class:`~lightning_gen.callbacks.GenerativeMetricsCallback` builds its feature extractor in ``on_fit_start``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["declared_data_shape", "generator_output_problem", "input_problem", "raise_shape_problems", "shape_settings"]


def declared_data_shape(datamodule: Any) -> Optional[tuple[int, ...]]:
    """The shape of one sample a data module declares: ``data_shape`` (toy data), else ``image_shape``; or None."""
    for name in ("data_shape", "image_shape"):
        shape = getattr(datamodule, name, None) if datamodule is not None else None
        if shape is not None:
            return tuple(int(d) for d in shape)
    return None


def _options(net: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(type(net).__init__).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        return set()


def shape_settings(
    net: nn.Module, wanted: tuple[int, ...], current: Optional[tuple[int, ...]] = None
) -> dict[str, Any]:
    """The constructor options of ``net`` that give it samples of shape ``wanted``, by their real names: ``image_size``
    and ``channels`` (DCGAN, SNGAN, conv autoencoders), ``output_shape`` / ``input_shape`` (MLPs), ``out_channels``
    (U-Nets); only those that differ from ``current`` when it is known. Empty when ``net`` has none of them."""
    options = _options(net)
    settings: dict[str, Any] = {}
    if "image_size" in options and len(wanted) == 3:
        c, h, w = wanted
        if current is None or len(current) != 3 or current[1:] != (h, w):
            settings["image_size"] = h if h == w else f"{h}x{w} (the net makes square images: resize the data)"
        if "channels" in options and (current is None or len(current) != 3 or current[0] != c):
            settings["channels"] = c
    else:
        for name in ("output_shape", "input_shape"):
            if name in options:
                settings[name] = wanted[0] if len(wanted) == 1 else list(wanted)
                break
        else:
            if "out_channels" in options and len(wanted) == 3:
                settings["out_channels"] = wanted[0]
    return settings


def _how_to_fix(net: nn.Module, role: str, wanted: tuple[int, ...], current: Optional[tuple[int, ...]]) -> str:
    settings = shape_settings(net, wanted, current)
    name = type(net).__name__
    if not settings:
        return f"make the {role} ({name}, `model.init_args.{role}`) work on samples of shape {wanted}"
    yaml = ", ".join(f"{k}: {v}" for k, v in settings.items())
    flags = " ".join(f"--model.{role}.init_args.{k} {str(v).replace(' ', '')}" for k, v in settings.items()
                     if isinstance(v, (int, list)))
    return f"set {yaml} in `model.init_args.{role}.init_args` ({name}){f', e.g. `{flags}`' if flags else ''}"


def _device_of(net: nn.Module) -> torch.device:
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def generator_output_problem(
    generator: nn.Module, call: Callable[[Tensor], Tensor], latent_dim: int, wanted: tuple[int, ...], data_name: str,
    role: str = "generator",
) -> Optional[str]:
    """Run ``call(noise)`` (the generator on two noise vectors, in eval mode, without touching the global RNG); when
    its samples are not shaped ``wanted``, say so and name the generator's options to set, else return None."""
    noise = torch.randn((2, latent_dim), generator=torch.Generator().manual_seed(0)).to(_device_of(generator))
    training = generator.training
    generator.eval()
    try:
        made = tuple(call(noise).shape[1:])
    finally:
        generator.train(training)
    if made == tuple(wanted):
        return None
    return (f"The {role} ({type(generator).__name__}) makes samples of shape {made} but the data ({data_name}) has "
            f"shape {tuple(wanted)}: {_how_to_fix(generator, role, tuple(wanted), made)}.")


@torch.no_grad()
def input_problem(
    net: nn.Module, call: Callable[[Tensor], Any], wanted: tuple[int, ...], data_name: str, role: str,
) -> Optional[str]:
    """Whether ``net`` takes samples shaped ``wanted``: ``call`` on two zero samples in eval mode; when it fails, the
    problem (the shape it declares as ``image_shape`` / ``input_shape``, else the error) and the net's options to
    set, else None."""
    x = torch.zeros((2, *wanted), device=_device_of(net))
    training = net.training
    net.eval()
    try:
        call(x)
        return None
    except (RuntimeError, ValueError) as err:  # a layer that cannot take this size: reported with the fix
        problem = str(err).strip().splitlines()[0]
    finally:
        net.train(training)
    declared = getattr(net, "image_shape", None) or getattr(net, "input_shape", None)
    declared = tuple(int(d) for d in declared) if declared is not None else None
    if declared is not None and declared != tuple(wanted):
        problem = f"it takes samples of shape {declared}"
    return (f"The {role} ({type(net).__name__}) cannot take the data ({data_name}) of shape {tuple(wanted)} "
            f"({problem}): {_how_to_fix(net, role, tuple(wanted), declared)}.")


def raise_shape_problems(*problems: Optional[str]) -> None:
    """Raise one ``ValueError`` listing every problem found (so one edit of the config fixes all), if any."""
    found = [p for p in problems if p]
    if found:
        raise ValueError(" ".join(found))
