"""Improved precision and recall of generated samples (Kynkäänniemi et al. 2019), computed in memory-bounded chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch
from torch import Tensor

__all__ = ["improved_precision_recall", "knn_radii"]


def _check_features(real: Tensor, fake: Tensor, k: int, chunk_size: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (the neighbourhood size) must be an integer >= 1, got {k!r}; the paper uses k=3")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    for name, x in (("real_features", real), ("fake_features", fake)):
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name} must be a 2-D tensor (num_samples, feature_dim), got {shape}; flatten images or pass "
                "features from a feature extractor"
            )
        if x.shape[0] <= k:
            raise ValueError(
                f"{name} has {x.shape[0]} samples, but k={k} nearest neighbours need more than k samples; pass more "
                "samples (thousands are usual) or lower k"
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real_features and fake_features have different feature sizes, {real.shape[1]} and {fake.shape[1]}; "
            "extract both with the same feature extractor"
        )


def _chunks(n: int, chunk_size: int) -> Iterator[slice]:
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


def _sq_distances(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """Squared Euclidean distances ``(len(a), len(b))`` from precomputed squared norms, clamped at 0."""
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_(min=0.0)


def _kth_nn_sq_radii(x: Tensor, x_sq: Tensor, k: int, chunk_size: int) -> Tensor:
    """Squared distance from every row of ``x`` to its k-th nearest other row (the sample itself excluded)."""
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for rows in _chunks(x.shape[0], chunk_size):
        d = _sq_distances(x[rows], x, x_sq[rows], x_sq)
        idx = torch.arange(rows.start, rows.stop, device=x.device)
        d[idx - rows.start, idx] = float("inf")  # exclude the sample itself (a duplicate still counts, at distance 0)
        radii[rows] = d.topk(k, dim=1, largest=False).values[:, -1]
    return radii


def knn_radii(features: Tensor, k: int = 3, chunk_size: int = 1024) -> Tensor:
    """Squared distance (float64) from each row to its k-th nearest other row: the real manifold's radii, which
    :func:`improved_precision_recall` accepts as ``real_radii`` so a fixed real set is measured only once."""
    _check_features(features, features, k, chunk_size)
    x = features.detach().to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    return _kth_nn_sq_radii(x, x.pow(2).sum(dim=1), k, chunk_size)


def improved_precision_recall(
    real_features: Tensor,
    fake_features: Tensor,
    k: int = 3,
    chunk_size: int = 1024,
    real_radii: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Improved precision and recall of ``fake_features`` against ``real_features`` (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its samples, the radius of each ball being the distance to
    that sample's k-th nearest neighbour in the same set (itself excluded) -- eq. (1)-(2) of "Improved Precision and
    Recall Metric for Assessing Generative Models", NeurIPS 2019, which uses k=3. Precision is the fraction of fake
    samples inside the real manifold (within the radius of at least one real sample, boundary included); recall is
    the fraction of real samples inside the fake manifold. Both are float32 scalars in [0, 1].

    Inputs are ``(num_samples, feature_dim)`` features (e.g. ``ImageClassifier.features`` or Inception pool3);
    the sets may differ in size. Pairwise distances are computed in float64, on the inputs' device, after
    subtracting the real mean (distances are translation invariant; centring and float64 keep the
    ``|a|^2 + |b|^2 - 2 a.b`` expansion accurate, where float32 would err by about 1e-7 of ``|a|^2`` and move
    samples near a ball's boundary in or out), ``chunk_size`` rows at a time: peak extra memory is about ``chunk_size * max(n_real, n_fake) * 8`` bytes
    (80 MB for 1024 x 10,000). Three distance blocks are formed: real-real and fake-fake for the radii, and one
    fake-real pass that serves both precision and recall. ``real_radii`` (from :func:`knn_radii` with the same ``k``)
    skips the real-real block when the real set is fixed.
    """
    _check_features(real_features, fake_features, k, chunk_size)
    real = real_features.detach().to(torch.float64)
    fake = fake_features.detach().to(device=real.device, dtype=torch.float64)
    center = real.mean(dim=0, keepdim=True)
    real, fake = real - center, fake - center
    real_sq, fake_sq = real.pow(2).sum(dim=1), fake.pow(2).sum(dim=1)
    if real_radii is None:
        real_radii = _kth_nn_sq_radii(real, real_sq, k, chunk_size)
    elif real_radii.shape != (real.shape[0],):
        raise ValueError(f"real_radii must hold one radius per real sample ({real.shape[0]}), got "
                         f"{tuple(real_radii.shape)}: compute them with knn_radii(real_features, k)")
    else:
        real_radii = real_radii.to(device=real.device, dtype=torch.float64)
    fake_radii = _kth_nn_sq_radii(fake, fake_sq, k, chunk_size)

    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for rows in _chunks(fake.shape[0], chunk_size):
        d = _sq_distances(fake[rows], real, fake_sq[rows], real_sq)  # (chunk, n_real)
        fake_in_real[rows] = (d <= real_radii[None, :]).any(dim=1)
        real_in_fake |= (d <= fake_radii[rows, None]).any(dim=0)
    precision = fake_in_real.to(torch.float64).mean().to(torch.float32)
    recall = real_in_fake.to(torch.float64).mean().to(torch.float32)
    return precision, recall
