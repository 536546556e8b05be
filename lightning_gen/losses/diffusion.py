"""Diffusion training losses as pure functions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_gen.precision import full_precision

__all__ = ["epsilon_loss"]


def epsilon_loss(eps_pred: Tensor, eps: Tensor) -> Tensor:
    """DDPM's L_simple: mean squared error ``E||eps - eps_theta||^2`` of the noise prediction (Ho et al. 2020, eq. 14).

    Averaged over every element (batch and data dimensions), as in the DDPM reference code. Computed in float32 when
    ``eps_pred`` comes from a net under autocast (float16/bfloat16).
    """
    if eps_pred.shape != eps.shape:
        raise ValueError(
            "epsilon_loss needs eps_pred and eps of the same shape, "
            f"got {tuple(eps_pred.shape)} and {tuple(eps.shape)}; "
            "the model must output one noise value per input element"
        )
    return F.mse_loss(full_precision(eps_pred), full_precision(eps))
