"""One helper for mixed precision: bring a net's low-precision output back to float32 before a loss or a density.

Under ``torch.autocast`` (``Trainer(precision="bf16-mixed" | "16-mixed")``) linear layers and convolutions return
bfloat16 or float16. Log-likelihoods, KL terms and log-determinants are sums over many dimensions, so they are
computed in float32 from those outputs. Every layer (nets, losses, diffusion, modules) may import this module; it
imports only torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["full_precision"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def full_precision(x: Tensor) -> Tensor:
    """``x`` as float32 when it is float16 or bfloat16; any other dtype (float32, float64, integers) unchanged."""
    return x.float() if x.dtype in _LOW_PRECISION else x
