"""Critic regularizers as pure functions: gradient penalty (WGAN-GP), DRAGAN penalty, R1; weight clipping; and the
generator's orthogonal regularization (BigGAN).

Under mixed precision the critic may run in float16 inside ``torch.autocast``, where its input gradients can
underflow or overflow. Each penalty takes an optional ``grad_scale`` (a loss scale, e.g. the critic's
``GradScaler`` scale): the critic's output is multiplied by it before differentiating and the input gradient divided
by it afterwards (the PyTorch AMP recipe's "gradient penalty" section). Norms and penalties are float32 (or float64 for float64 inputs).
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

import torch
from torch import Tensor, nn

from lightning_gen.noise import rand
from lightning_gen.precision import full_precision

__all__ = ["gradient_penalty", "dragan_penalty", "r1_penalty", "clip_weights_", "input_gradient_norm", "REGULARIZERS",
           "get_regularizer", "orthogonal_regularization", "orthogonal_weights"]

Critic = Callable[[Tensor], Tensor]
Scale = Union[Tensor, float, None]


def _per_sample_uniform(batch: int, like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform(0, 1) numbers, one per sample, shaped to broadcast over ``like``'s trailing dimensions."""
    shape = (batch,) + (1,) * (like.dim() - 1)
    return rand(shape, generator, like.device, like.dtype)


def input_gradient_norm(critic: Critic, x: Tensor, create_graph: bool = True, grad_scale: Scale = None) -> Tensor:
    """Per-sample L2 norm of ``d critic(x) / d x`` (shape ``(B,)``, at least float32), differentiable when ``create_graph``.

    ``grad_scale`` differentiates ``grad_scale * critic(x)`` and divides the gradient by it (loss scaling).
    """
    x = x.detach().requires_grad_(True)
    out = full_precision(critic(x)).sum()
    # each sample's gradient seeded with scale / B (as a batch-mean loss under a GradScaler would be), not with the
    # scale itself, whose default 2**16 is already beyond float16's largest value
    factor = None if grad_scale is None else grad_scale / x.shape[0]
    (grad,) = torch.autograd.grad(out if factor is None else out * factor, x, create_graph=create_graph)
    grad = full_precision(grad)
    if factor is not None:
        grad = grad / factor
    return grad.flatten(1).norm(2, dim=1)


def gradient_penalty(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    target: float = 1.0,
    generator: Optional[torch.Generator] = None,
    grad_scale: Scale = None,
) -> Tensor:
    """WGAN-GP penalty ``E[(||grad f(x_hat)|| - target)^2]`` on per-sample interpolates (Gulrajani 2017, eq. 3)."""
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty needs real and fake of the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    alpha = _per_sample_uniform(real.shape[0], real, generator)
    x_hat = alpha * real.detach() + (1.0 - alpha) * fake.detach()
    return (input_gradient_norm(critic, x_hat, grad_scale=grad_scale) - target).pow(2).mean()


def dragan_penalty(
    critic: Critic,
    real: Tensor,
    fake: Optional[Tensor] = None,
    perturb_scale: float = 0.5,
    target: float = 1.0,
    generator: Optional[torch.Generator] = None,
    grad_scale: Scale = None,
) -> Tensor:
    """DRAGAN penalty: gradient penalty around perturbed real points ``x + c * std(x) * U[0,1)`` (Kodali 2017)."""
    real = real.detach()
    noise = rand(real.shape, generator, real.device, real.dtype)
    perturbed = real + perturb_scale * real.std() * noise
    alpha = _per_sample_uniform(real.shape[0], real, generator)
    x_hat = alpha * real + (1.0 - alpha) * perturbed
    return (input_gradient_norm(critic, x_hat, grad_scale=grad_scale) - target).pow(2).mean()


def r1_penalty(
    critic: Critic,
    real: Tensor,
    fake: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    grad_scale: Scale = None,
) -> Tensor:
    """R1 penalty ``1/2 E[||grad D(x)||^2]`` on real data (Mescheder 2018, eq. 9; multiply by gamma)."""
    return 0.5 * input_gradient_norm(critic, real, grad_scale=grad_scale).pow(2).mean()


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


def orthogonal_weights(net: nn.Module) -> list[Tensor]:
    """The weights BigGAN's orthogonal regularization covers: every conv, transposed-conv and linear weight of ``net``
    (spectrally normalized ones as the net uses them); biases, norm layers and embeddings are left out."""
    return [m.weight for m in net.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def orthogonal_regularization(weights: Union[Iterable[Tensor], nn.Module]) -> Tensor:
    """``sum_W ||W W^T * (1 - I)||_F^2`` over weight matrices (Brock et al. 2019, BigGAN, eq. 3; multiply by beta, 1e-4).

    Each weight is reshaped to ``(shape[0], -1)`` as in the authors' code (out-channels x fan-in for a conv or a
    linear layer; in-channels first for a transposed conv), so the term is the sum of squared inner products between
    different rows: zero exactly when the rows are orthogonal, whatever their norms. A module stands for its
    :func:`orthogonal_weights`. Computed in float32 (float64 for float64 weights) outside autocast, from the smaller
    Gram matrix (``||W W^T||_F = ||W^T W||_F``), so a tall projection layer costs no ``rows x rows`` product.
    """
    if isinstance(weights, nn.Module):
        weights = orthogonal_weights(weights)
    total: Optional[Tensor] = None
    for w in weights:
        if w.dim() < 2:
            raise ValueError(f"orthogonal_regularization takes weight matrices (>= 2 dims), got shape {tuple(w.shape)}")
        with torch.autocast(w.device.type, enabled=False):
            m = full_precision(w).flatten(1)
            gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
            term = gram.pow(2).sum() - m.pow(2).sum(dim=1).pow(2).sum()  # all entries of W W^T minus its diagonal
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def get_regularizer(name: str) -> Callable[..., Tensor]:
    """Look up a critic regularizer by name, raising a ``ValueError`` that lists the known names."""
    key = name.lower().replace("-", "_")
    key = {"gp": "gradient_penalty", "wgan_gp": "gradient_penalty", "dragan_penalty": "dragan", "r1_penalty": "r1"}.get(key, key)
    if key not in REGULARIZERS:
        raise ValueError(f"Unknown regularizer {name!r}. Choose one of {sorted(REGULARIZERS)} or pass a callable.")
    return REGULARIZERS[key]
