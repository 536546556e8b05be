"""Score-matching losses as pure functions: denoising score matching (Vincent 2011) with NCSN's sigma^2 weighting
(Song & Ermon 2019) and sliced score matching (Song et al. 2019), for a score model ``s(x) ~ grad_x log p(x)``."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from lightning_gen.noise import randint, randn
from lightning_gen.precision import full_precision

__all__ = ["denoising_score_matching_loss", "sliced_score_matching_loss", "random_projections", "PROJECTIONS"]

PROJECTIONS = ("rademacher", "gaussian")


def _per_example_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(1)


def denoising_score_matching_loss(score: Tensor, noise: Tensor, sigma: Union[Tensor, float]) -> Tensor:
    """Denoising score matching with NCSN's weighting lambda(sigma) = sigma^2 (Song & Ermon 2019, eqs. 5-6):
    ``mean_b 1/2 ||sigma s(x~) + z||^2`` for ``x~ = x + sigma z``, i.e. ``sigma^2 / 2 ||s(x~) - (x - x~) /
    sigma^2||^2``.

    ``score`` is the model's score at the perturbed data, ``noise`` the ``z`` that perturbed it and ``sigma`` the
    noise level (a float, or a tensor broadcasting over ``score``: ``(B, 1, ..., 1)``). Squares are summed over the
    data dimensions and averaged over the batch (as in the NCSN code). Its minimizer is the score of the perturbed
    density ``grad log (p * N(0, sigma^2 I))`` (Vincent 2011); for data N(m, s^2 I) in ``d`` dimensions the minimum
    is ``d/2 s^2 / (s^2 + sigma^2)``.
    Float32 when ``score`` comes from a net under autocast.
    """
    if score.shape != noise.shape:
        raise ValueError(
            f"denoising_score_matching_loss needs score and noise of the same shape, got {tuple(score.shape)} and "
            f"{tuple(noise.shape)}; the model must output one score value per input element"
        )
    score, noise = full_precision(score), full_precision(noise)
    residual = score * (sigma.to(score.dtype) if isinstance(sigma, Tensor) else float(sigma)) + noise
    return 0.5 * _per_example_sum(residual.square()).mean()


def random_projections(
    shape: Sequence[int],
    kind: str = "rademacher",
    num_projections: int = 1,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """``num_projections`` random directions ``v`` of ``shape`` each, ``(num_projections, *shape)``, with
    ``E[v v^T] = I``: ``rademacher`` (entries +-1) or ``gaussian`` (N(0, 1)); drawn from ``generator`` when given."""
    if kind not in PROJECTIONS:
        raise ValueError(f"Unknown projection {kind!r}. Choose one of {list(PROJECTIONS)}.")
    if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"num_projections must be a positive int, got {num_projections!r}")
    full = (num_projections, *shape)
    if kind == "gaussian":
        return randn(full, generator, device, dtype=dtype)
    signs = randint(2, full, generator, device)
    return (2 * signs - 1).to(dtype if dtype is not None else torch.get_default_dtype())


def sliced_score_matching_loss(
    score: Tensor,
    x: Tensor,
    projections: Tensor,
    weight: Optional[Tensor] = None,
    variance_reduction: bool = False,
) -> Tensor:
    """Sliced score matching (Song et al. 2019, eq. 7): ``mean_b mean_v [v^T grad_x (v^T s(x)) + 1/2 (v^T s(x))^2]``,
    an unbiased estimate of Hyvarinen's objective ``E[tr(grad_x s(x)) + 1/2 ||s(x)||^2]`` (2005) that needs one
    backward pass per projection instead of the Jacobian's trace.

    ``score`` must have been computed from ``x`` (which requires grad) by a net that treats examples independently;
    ``projections`` is ``(M, *x.shape)`` (or ``x.shape`` for one), e.g. from :func:`random_projections`.
    ``variance_reduction`` replaces ``1/2 (v^T s)^2`` by its expectation ``1/2 ||s||^2`` (SSM-VR, eq. 8; for
    projections with ``E[v v^T] = I``). ``weight`` ``(B,)`` multiplies each example's term (NCSN's sigma^2 for
    noise-conditional SSM on perturbed data). The graph is kept (``create_graph``) so the loss can be minimized.
    """
    if not x.requires_grad:
        raise ValueError("sliced_score_matching_loss needs x with requires_grad=True and the score computed from it")
    if score.shape != x.shape:
        raise ValueError(f"score and x must have the same shape, got {tuple(score.shape)} and {tuple(x.shape)}")
    if projections.shape == x.shape:
        projections = projections.unsqueeze(0)
    if projections.shape[1:] != x.shape:
        raise ValueError(f"projections must be (M, *x.shape) = (M, {', '.join(map(str, x.shape))}), got "
                         f"{tuple(projections.shape)}")
    score = full_precision(score)
    projections = projections.to(score.dtype)
    terms = []
    for i, v in enumerate(projections):
        projected = _per_example_sum(score * v)  # v^T s(x), (B,)
        (grad,) = torch.autograd.grad(projected.sum(), x, create_graph=True, retain_graph=True)
        trace = _per_example_sum(grad.to(score.dtype) * v)  # v^T grad_x (v^T s), (B,)
        terms.append(trace + (0.5 * projected.square() if not variance_reduction else 0.0))
    per_example = torch.stack(terms).mean(0)
    if variance_reduction:
        per_example = per_example + 0.5 * _per_example_sum(score.square())
    if weight is not None:
        per_example = per_example * weight.reshape(-1).to(per_example.dtype)
    return per_example.mean()
