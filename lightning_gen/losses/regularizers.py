"""Critic regularizers as pure functions: gradient penalty (WGAN-GP), DRAGAN penalty, R1; weight clipping."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor, nn

__all__ = ["gradient_penalty", "dragan_penalty", "r1_penalty", "clip_weights_", "input_gradient_norm", "REGULARIZERS", "get_regularizer"]

Critic = Callable[[Tensor], Tensor]


def _per_sample_uniform(batch: int, like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform(0, 1) numbers, one per sample, shaped to broadcast over ``like``'s trailing dimensions."""
    shape = (batch,) + (1,) * (like.dim() - 1)
    return torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)


def input_gradient_norm(critic: Critic, x: Tensor, create_graph: bool = True) -> Tensor:
    """Per-sample L2 norm of ``d critic(x) / d x`` (shape ``(B,)``), differentiable when ``create_graph``."""
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
    return grad.flatten(1).norm(2, dim=1)


def gradient_penalty(
    critic: Critic, real: Tensor, fake: Tensor, target: float = 1.0, generator: Optional[torch.Generator] = None
) -> Tensor:
    """WGAN-GP penalty ``E[(||grad f(x_hat)|| - target)^2]`` on per-sample interpolates (Gulrajani 2017, eq. 3)."""
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty needs real and fake of the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    alpha = _per_sample_uniform(real.shape[0], real, generator)
    x_hat = alpha * real.detach() + (1.0 - alpha) * fake.detach()
    return (input_gradient_norm(critic, x_hat) - target).pow(2).mean()


def dragan_penalty(
    critic: Critic,
    real: Tensor,
    fake: Optional[Tensor] = None,
    perturb_scale: float = 0.5,
    target: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """DRAGAN penalty: gradient penalty around perturbed real points ``x + c * std(x) * U[0,1)`` (Kodali 2017)."""
    real = real.detach()
    noise = torch.rand(real.shape, device=real.device, dtype=real.dtype, generator=generator)
    perturbed = real + perturb_scale * real.std() * noise
    alpha = _per_sample_uniform(real.shape[0], real, generator)
    x_hat = alpha * real + (1.0 - alpha) * perturbed
    return (input_gradient_norm(critic, x_hat) - target).pow(2).mean()


def r1_penalty(critic: Critic, real: Tensor, fake: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """R1 penalty ``1/2 E[||grad D(x)||^2]`` on real data (Mescheder 2018, eq. 9; multiply by gamma)."""
    return 0.5 * input_gradient_norm(critic, real).pow(2).mean()


REGULARIZERS: dict[str, Callable[..., Tensor]] = {
    "gradient_penalty": gradient_penalty,
    "dragan": dragan_penalty,
    "r1": r1_penalty,
}


@torch.no_grad()
def clip_weights_(parameters: Iterable[nn.Parameter] | nn.Module, clip_value: float) -> None:
    """Clamp every parameter to ``[-clip_value, clip_value]`` in place (WGAN, Arjovsky 2017, algorithm 1)."""
    if clip_value <= 0:
        raise ValueError(f"clip_value must be positive, got {clip_value}")
    params = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    for p in params:
        p.clamp_(-clip_value, clip_value)


def get_regularizer(name: str) -> Callable[..., Tensor]:
    """Look up a critic regularizer by name, raising a ``ValueError`` that lists the known names."""
    key = name.lower().replace("-", "_")
    key = {"gp": "gradient_penalty", "wgan_gp": "gradient_penalty", "dragan_penalty": "dragan", "r1_penalty": "r1"}.get(key, key)
    if key not in REGULARIZERS:
        raise ValueError(f"Unknown regularizer {name!r}. Choose one of {sorted(REGULARIZERS)} or pass a callable.")
    return REGULARIZERS[key]
