"""Classifier-free guidance (Ho & Salimans 2022): one class-conditional denoiser trained with the label sometimes
replaced by a null label, sampled with the guided noise prediction

    eps~(x_t, t, y) = (1 + w) eps(x_t, t, y) - w eps(x_t, t, null)        (Ho & Salimans 2022, eq. 6)

``w = 0`` is plain conditional sampling, ``w = -1`` unconditional sampling, ``w > 0`` trades diversity for samples
that look more like their class. :class:`ClassifierFreeGuidance` turns a conditional denoiser ``net(x_t, t, labels)``
into the ``model(x_t, t)`` every sampler of :mod:`lightning_gen.diffusion.samplers` runs, so guidance works with
the ancestral, respaced and DDIM samplers unchanged.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional

import torch
from torch import Tensor

from lightning_gen.noise import rand
from lightning_gen.precision import full_precision

__all__ = ["guided_epsilon", "ClassifierFreeGuidance", "drop_labels", "check_guidance_scale"]

ConditionalDenoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


def check_guidance_scale(guidance_scale: float) -> float:
    """Return ``guidance_scale`` as a float; raise ``ValueError`` unless it is a finite number."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
            or not math.isfinite(guidance_scale):
        raise ValueError(
            "guidance_scale must be a finite number w (0: conditional sampling, -1: unconditional, > 0: guided, e.g. "
            f"1 or 3), got {guidance_scale!r}"
        )
    return float(guidance_scale)


def guided_epsilon(eps_conditional: Tensor, eps_unconditional: Tensor, guidance_scale: float) -> Tensor:
    """The guided noise prediction ``(1 + w) eps_c - w eps_u`` (Ho & Salimans 2022, eq. 6), in float32 when the
    predictions come from a net under autocast."""
    w = check_guidance_scale(guidance_scale)
    return (1.0 + w) * full_precision(eps_conditional) - w * full_precision(eps_unconditional)


def drop_labels(
    labels: Tensor, probability: float, null_label: int, generator: Optional[torch.Generator] = None
) -> Tensor:
    """``labels`` with each one replaced by ``null_label`` with probability ``probability``, independently (the
    training of Ho & Salimans 2022, alg. 1, p_uncond). The draw comes from ``generator`` when given, else from the
    global RNG; nothing is drawn when ``probability`` is 0."""
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"the label dropout probability must lie in [0, 1), got {probability}")
    if probability == 0.0:
        return labels
    drop = rand(labels.shape, generator, labels.device) < probability
    return torch.where(drop, torch.full_like(labels, null_label), labels)


class ClassifierFreeGuidance:
    """The guided denoiser ``model(x_t, t)`` for fixed ``labels``: ``(1 + w) net(x_t, t, y) - w net(x_t, t, null)``.

    Both predictions come from one call of ``net`` on the batch stacked twice (labels, then the null label); ``w = 0``
    calls ``net`` with the labels only and ``w = -1`` with the null label only, so those two are exactly the
    conditional and the unconditional net.

    Args:
        net: a class-conditional denoiser ``net(x_t, t, labels)`` (e.g. :class:`~lightning_gen.nets.UNet` with
            ``num_classes``).
        labels: the class of each sample, ``(B,)`` (or one label for all).
        guidance_scale: w.
        null_label: the label that means "no class" (``num_classes`` for the nets of this package).
    """

    def __init__(self, net: ConditionalDenoiser, labels: Tensor, guidance_scale: float, null_label: int) -> None:
        self.net = net
        self.labels = labels
        self.guidance_scale = check_guidance_scale(guidance_scale)
        self.null_label = int(null_label)

    def __repr__(self) -> str:
        """The guidance scale and the null label."""
        return f"ClassifierFreeGuidance(guidance_scale={self.guidance_scale}, null_label={self.null_label})"

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The guided noise prediction at ``x`` ``(B, ...)`` and steps ``t`` ``(B,)``."""
        labels = self.labels.to(x.device).reshape(-1).expand(x.shape[0]) if self.labels.numel() == 1 \
            else self.labels.to(x.device)
        w = self.guidance_scale
        if w == 0.0:
            return self.net(x, t, labels)
        null = torch.full_like(labels, self.null_label)
        if w == -1.0:
            return self.net(x, t, null)
        eps = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        eps_conditional, eps_unconditional = eps.chunk(2)
        return guided_epsilon(eps_conditional, eps_unconditional, w)
