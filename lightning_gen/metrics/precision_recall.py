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
    the sets may differ in size. Distances are taken after subtracting the real mean (they are translation
    invariant, and centring keeps the ``|a|^2 + |b|^2 - 2 a.b`` expansion accurate), on the inputs' device,
    ``chunk_size`` rows at a time: peak extra memory is about ``chunk_size * max(n_real, n_fake) * 8`` bytes (80 MB
    for 1024 x 10,000). Three distance blocks are formed: real-real and fake-fake for the radii (in float64), and one
    fake-real pass that serves both precision and recall. That pass runs in float32 and decides every pair whose
    distance is farther from the ball's radius than float32's rounding bound; the rows holding an undecided pair are
    recomputed in float64, so the answer is the all-float64 one (float32 alone would err by about 1e-7 of ``|a|^2``
    and move samples near a boundary in or out). ``real_radii`` (from :func:`knn_radii` with the same ``k``) skips
    the real-real block when the real set is fixed.
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
    # the fake-real block, the largest, in float32: a pair is decided there when its distance is farther from the
    # ball's radius than float32's error bound; rows holding an undecided pair are recomputed in float64, exactly as
    # an all-float64 pass would compute them, so the result is the same
    real32, fake32 = real.float(), fake.float()
    real_sq32, fake_sq32 = real_sq.float(), fake_sq.float()
    bound = (2 * real.shape[1] + 8) * 2.0**-24  # float32's rounding of |a|^2 + |b|^2 - 2 a.b, relative to |a|^2 + |b|^2
    real_r32, fake_r32 = real_radii.float(), fake_radii.float()
    for rows in _chunks(fake.shape[0], chunk_size):
        d = _sq_distances(fake32[rows], real32, fake_sq32[rows], real_sq32)  # (chunk, n_real)
        slack = bound * (fake_sq32[rows, None] + real_sq32[None, :]) + 1e-30
        # precision: is each fake sample in some real ball?
        sure_in = (d + slack <= real_r32[None, :]).any(dim=1)
        undecided = ~sure_in & (d - slack <= real_r32[None, :]).any(dim=1)
        # recall: is each real sample (not yet found inside) in some fake ball of this chunk?
        sure_cover = d + slack <= fake_r32[rows, None]
        open_pairs = (d - slack <= fake_r32[rows, None]) & ~sure_cover & ~real_in_fake[None, :]
        undecided |= open_pairs.any(dim=1)
        fake_in_real[rows] = sure_in
        real_in_fake |= sure_cover.any(dim=0)
        redo = torch.nonzero(undecided).flatten() + rows.start
        if redo.numel():
            exact = _sq_distances(fake[redo], real, fake_sq[redo], real_sq)
            fake_in_real[redo] = (exact <= real_radii[None, :]).any(dim=1)
            real_in_fake |= (exact <= fake_radii[redo, None]).any(dim=0)
    precision = fake_in_real.to(torch.float64).mean().to(torch.float32)
    recall = real_in_fake.to(torch.float64).mean().to(torch.float32)
    return precision, recall
