"""Sliced Wasserstein distance between two sample sets: a functional form and a DDP-ready torchmetrics metric."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from lightning_gen.noise import randn

__all__ = ["sliced_wasserstein_distance", "SlicedWassersteinDistance"]


def sliced_wasserstein_distance(
    x: Tensor, y: Tensor, num_projections: int = 128, p: int = 2, generator: Optional[torch.Generator] = None
) -> Tensor:
    """``SW_p(x, y) = (E_theta W_p^p(theta.x, theta.y))^(1/p)`` over random unit directions ``theta`` (Rabin 2011).

    Samples are flattened to vectors (images become ``C*H*W``-vectors). In one dimension the Wasserstein distance
    between two empirical sets of equal size is the mean ``|.|^p`` gap between their sorted values, so each slice is
    exact and only the directions are random; a seeded ``generator`` makes the estimate reproducible. Karras et al.
    (2018) compute the same distance on Laplacian-pyramid patches; this is the plain version on whole samples or on
    any feature vectors passed in.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"sliced_wasserstein_distance needs sample sets of equal size, got {x.shape[0]} and {y.shape[0]}: "
            "draw as many samples as there are real ones (or subsample the larger set)"
        )
    if x.shape[0] == 0:
        raise ValueError("sliced_wasserstein_distance got empty sample sets")
    if num_projections < 1 or p < 1:
        raise ValueError(f"num_projections and p must be >= 1, got {num_projections} and {p}")
    x, y = x.flatten(1), y.flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have different sizes: {tuple(x.shape[1:])} and {tuple(y.shape[1:])}")
    dtype = torch.promote_types(x.dtype, torch.float32)
    theta = randn((x.shape[1], num_projections), generator, x.device, dtype=dtype)
    theta = theta / theta.norm(dim=0, keepdim=True)
    proj_x = torch.sort(x.to(dtype) @ theta, dim=0).values
    proj_y = torch.sort(y.to(dtype) @ theta, dim=0).values
    return (proj_x - proj_y).abs().pow(p).mean().pow(1.0 / p)


class SlicedWassersteinDistance(Metric):
    """Accumulates real and generated samples (``update(x, real=bool)``) and computes their sliced W_p distance.

    States are concatenated across processes, so under DDP every rank computes the distance on all samples with
    the same seeded directions and reports the same value. Equal numbers of real and generated samples are needed.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, num_projections: int = 128, p: int = 2, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_projections < 1 or p < 1:
            raise ValueError(f"num_projections and p must be >= 1, got {num_projections} and {p}")
        self.num_projections, self.p, self.seed = num_projections, p, seed
        self.add_state("real_samples", default=[], dist_reduce_fx="cat")
        self.add_state("fake_samples", default=[], dist_reduce_fx="cat")

    def update(self, samples: Tensor, real: bool) -> None:
        """Add a batch of real (``real=True``) or generated samples."""
        (self.real_samples if real else self.fake_samples).append(samples.detach().flatten(1))

    def compute(self) -> Tensor:
        """The distance between everything added so far (the directions come from ``seed``)."""
        if len(self.real_samples) == 0 or len(self.fake_samples) == 0:  # lists, or tensors once synced
            raise ValueError("SlicedWassersteinDistance needs both real and generated samples before compute()")
        real, fake = dim_zero_cat(self.real_samples), dim_zero_cat(self.fake_samples)
        generator = torch.Generator().manual_seed(self.seed)
        return sliced_wasserstein_distance(real, fake, self.num_projections, self.p, generator)
