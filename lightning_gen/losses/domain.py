"""StarGAN's domain-classification loss (Choi et al. 2018, eqs. 2-3) as a pure function.

The discriminator's auxiliary head classifies real images into their domains (``L_cls^r``, minimized by D) and the
generator's translations into their target domains (``L_cls^f``, minimized by G). Single-label domains (one per image,
given as class indices) use the softmax cross-entropy, as the reference code does for RaFD; multi-label attributes
(0/1 floats, as CelebA's) use a sigmoid cross-entropy per attribute, summed over the attributes and averaged over
the batch, as the reference code does for CelebA (``binary_cross_entropy_with_logits(..., reduction="sum") / B``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CLASSIFICATION_WEIGHT", "RECONSTRUCTION_WEIGHT", "domain_classification_loss"]

CLASSIFICATION_WEIGHT: float = 1.0  # lambda_cls (StarGAN sec. 3.1 and 4.4)
RECONSTRUCTION_WEIGHT: float = 10.0  # lambda_rec


def domain_classification_loss(logits: Tensor, domains: Tensor) -> Tensor:
    """``-E log D_cls(c | x)``: cross-entropy of ``logits`` ``(B, K)`` against domain indices ``(B,)`` (integers),
    or summed sigmoid cross-entropy against 0/1 attributes ``(B, K)`` (floats), averaged over the batch."""
    if logits.dim() != 2:
        raise ValueError(f"domain_classification_loss needs logits of shape (B, K), got {tuple(logits.shape)}")
    logits = logits.float()
    if not torch.is_floating_point(domains):
        if domains.shape != logits.shape[:1]:
            raise ValueError(f"domain_classification_loss needs one domain index per image, shape ({logits.shape[0]},), "
                             f"got {tuple(domains.shape)}")
        return F.cross_entropy(logits, domains.long())
    if domains.shape != logits.shape:
        raise ValueError(f"domain_classification_loss needs attributes shaped like the logits {tuple(logits.shape)}, "
                         f"got {tuple(domains.shape)}")
    return F.binary_cross_entropy_with_logits(logits, domains.float(), reduction="sum") / logits.shape[0]
