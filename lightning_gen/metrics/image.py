"""FID, Inception Score, KID and improved precision/recall: torchmetrics' metrics with a pluggable feature extractor
and a checked input range, plus functional twins that work on feature tensors (what the metrics callback uses).

The metric classes take images in ``data_range`` (``(-1, 1)`` by default) and an ``extractor`` (``None``: the
standard Inception network, see :class:`~lightning_gen.metrics.features.InceptionFeatureExtractor`). Grayscale images
are repeated to RGB and resized where the extractor needs it; see :mod:`lightning_gen.metrics.features`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance as _TMFrechetInceptionDistance
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.inception import InceptionScore as _TMInceptionScore
from torchmetrics.image.kid import KernelInceptionDistance as _TMKernelInceptionDistance
from torchmetrics.image.kid import poly_kernel
from torchmetrics.utilities.data import dim_zero_cat

from lightning_gen.metrics.features import FeatureExtractor, InceptionFeatureExtractor
from lightning_gen.metrics.precision_recall import improved_precision_recall

__all__ = [
    "FrechetInceptionDistance",
    "InceptionScore",
    "KernelInceptionDistance",
    "PrecisionRecall",
    "as_feature_extractor",
    "frechet_distance",
    "gaussian_frechet_distance",
    "inception_score",
    "kernel_inception_distance",
]


# -- functional forms on features -------------------------------------------------------------------------------------
def _check_features(*features: Tensor) -> None:
    for f in features:
        if f.ndim != 2:
            raise ValueError(f"features must be (N, D) matrices, got shape {tuple(f.shape)}")
    if len({f.shape[1] for f in features}) > 1:
        raise ValueError(f"feature sets have different sizes: {[tuple(f.shape) for f in features]}")


def gaussian_frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``: the Fréchet distance of two Gaussians (torchmetrics')."""
    return _compute_fid(mu1.double(), sigma1.double(), mu2.double(), sigma2.double())


def frechet_distance(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """FID (Heusel et al. 2017) between two feature sets: Gaussians fitted in float64 (unbiased covariance)."""
    _check_features(real_features, fake_features)
    if real_features.shape[0] < 2 or fake_features.shape[0] < 2:
        raise ValueError("frechet_distance needs at least 2 samples in each set")
    real, fake = real_features.double(), fake_features.double()
    return gaussian_frechet_distance(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T))


def inception_score(logits: Tensor, splits: int = 10) -> tuple[Tensor, Tensor]:
    """IS (Salimans et al. 2016) ``exp E_x KL(p(y|x) || p(y))`` from class logits: mean and std (ddof 0) over
    ``splits`` consecutive chunks, chunk ``i`` being rows ``i N // splits`` to ``(i + 1) N // splits`` as in the
    original code and torch-fidelity (the order is kept, so the same logits always give the same score)."""
    _check_features(logits)
    if splits < 1 or logits.shape[0] < splits:
        raise ValueError(f"inception_score needs 1 <= splits <= number of samples, got {splits} and {logits.shape[0]}")
    log_prob = logits.double().log_softmax(dim=1)
    n = log_prob.shape[0]
    scores = []
    for chunk in (log_prob[i * n // splits:(i + 1) * n // splits] for i in range(splits)):
        log_marginal = chunk.exp().mean(0).log()
        scores.append((chunk.exp() * (chunk - log_marginal)).sum(1).mean().exp())
    stacked = torch.stack(scores)
    return stacked.mean(), stacked.std(unbiased=False) if splits > 1 else stacked.new_zeros(())


def kernel_inception_distance(
    real_features: Tensor,
    fake_features: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: Optional[float] = None,
    coef: float = 1.0,
    generator: Optional[torch.Generator] = None,
    real_cache: Optional[dict[int, tuple[Tensor, Tensor]]] = None,
) -> tuple[Tensor, Tensor]:
    """KID (Bińkowski et al. 2018): unbiased polynomial-kernel MMD^2 averaged over random subsets (mean, std).

    ``subset_size`` is capped at the smaller set's size; a seeded ``generator`` makes the subsets reproducible.
    ``real_cache`` (a dict kept by the caller across evaluations against a fixed real set) stores each subset's
    real indices and real-real kernel sum: an evaluation that draws the same real subset (same seed, same set sizes)
    reuses the sum instead of recomputing a third of the kernel work; the result is the same either way.
    """
    _check_features(real_features, fake_features)
    size = min(subset_size, real_features.shape[0], fake_features.shape[0])
    if size < 2 or subsets < 1:
        raise ValueError(f"kernel_inception_distance needs subsets >= 1 and >= 2 samples per set, got {subsets}, {size}")
    real, fake = real_features.double(), fake_features.double()
    scores = []
    for i in range(subsets):
        r = torch.randperm(real.shape[0], generator=generator)[:size]
        f = torch.randperm(fake.shape[0], generator=generator)[:size].to(fake.device)
        x, y = real[r.to(real.device)], fake[f]
        cached = None if real_cache is None else real_cache.get(i)
        if cached is not None and torch.equal(cached[0], r):
            real_sum = cached[1].to(real.device)
        else:
            k_rr = poly_kernel(x, x, degree, gamma, coef)
            real_sum = k_rr.sum() - k_rr.diagonal().sum()
            if real_cache is not None:
                real_cache[i] = (r, real_sum.detach().cpu())
        k_ff = poly_kernel(y, y, degree, gamma, coef)
        fake_sum = k_ff.sum() - k_ff.diagonal().sum()
        cross_sum = poly_kernel(x, y, degree, gamma, coef).sum()
        scores.append((real_sum + fake_sum) / (size * (size - 1)) - 2 * cross_sum / size**2)
    stacked = torch.stack(scores)
    return stacked.mean(), stacked.std(unbiased=False)


# -- metric classes on images ---------------------------------------------------------------------------------------
def as_feature_extractor(extractor: Optional[nn.Module]) -> FeatureExtractor:
    """``None`` -> the standard Inception extractor; a plain ``nn.Module`` -> wrapped as a :class:`FeatureExtractor`."""
    if extractor is None:
        return InceptionFeatureExtractor()
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if isinstance(extractor, nn.Module):
        return FeatureExtractor(extractor)
    raise TypeError(f"extractor must be an nn.Module or None, got {type(extractor).__name__}")


class _ExtractorView(nn.Module):
    """What torchmetrics calls as its ``feature`` network: images in ``data_range`` -> features or logits."""

    def __init__(self, extractor: FeatureExtractor, data_range: tuple[float, float], output: str) -> None:
        super().__init__()
        self.extractor = extractor
        self.data_range = (float(data_range[0]), float(data_range[1]))
        self.output = output

    @property
    def num_features(self) -> int:
        """Feature length (torchmetrics reads it instead of running a dummy image)."""
        return self.extractor.num_features

    def forward(self, images: Tensor) -> Tensor:
        """Features (or logits) of a batch."""
        features, logits = self.extractor.extract(images, self.data_range)
        if self.output == "features":
            return features
        if logits is None:
            raise ValueError(
                f"{self.extractor.name} gives no class logits, which the Inception Score needs: use an extractor whose "
                "net returns (features, logits) or has features_and_logits(), e.g. ClassifierFeatureExtractor"
            )
        return logits


class FrechetInceptionDistance(_TMFrechetInceptionDistance):
    """torchmetrics' FID on images in ``data_range`` with any extractor (``None``: Inception pool features).

    ``reference``: a reference statistics file (or :class:`~lightning_gen.metrics.stats.ReferenceStatistics`) that
    stands for the real images: only generated images are then updated (``real=False``), and one computed with
    another extractor, resize or data range is refused, naming the difference.
    """

    higher_is_better = False

    def __init__(
        self,
        extractor: Optional[nn.Module] = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        reset_real_features: bool = True,
        reference: Any = None,
        **kwargs: Any,
    ) -> None:
        features = as_feature_extractor(extractor)
        view = _ExtractorView(features, data_range, "features")
        super().__init__(feature=view, reset_real_features=reset_real_features, **kwargs)
        self._reference = None
        if reference is not None:
            from lightning_gen.metrics.stats import ReferenceStatistics, extractor_provenance

            stats = reference if isinstance(reference, ReferenceStatistics) else ReferenceStatistics.load(reference)
            stats.check(extractor_provenance(features, data_range), source=f"the reference statistics {reference}")
            self._reference = stats

    def update(self, imgs: Tensor, real: bool) -> None:
        """Add images' features to the real or the generated set (with a ``reference``: generated only)."""
        if real and self._reference is not None:
            raise ValueError("this FID has reference statistics for the real images: update it with generated "
                             "images only (real=False)")
        super().update(imgs, real)

    def compute(self) -> Tensor:
        """FID of the generated set against the real set (or the ``reference`` statistics)."""
        if self._reference is None:
            return super().compute()
        n = self.fake_features_num_samples
        if n < 2:
            raise RuntimeError("More than one generated sample is required to compute FID")
        mean = self.fake_features_sum / n
        cov = (self.fake_features_cov_sum - n * torch.outer(mean, mean)) / (n - 1)
        return gaussian_frechet_distance(self._reference.mean.to(mean.device), self._reference.cov.to(mean.device),
                                         mean, cov).to(self.orig_dtype)


class InceptionScore(_TMInceptionScore):
    """torchmetrics' Inception Score on images in ``data_range`` from the extractor's class logits, computed as
    :func:`inception_score` after a shuffle seeded by ``seed`` (torchmetrics' own shuffles with the global random
    state and reports the std over splits with ddof 1; torch-fidelity and the original code use ddof 0, as here)."""

    def __init__(
        self,
        extractor: Optional[nn.Module] = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        splits: int = 10,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        view = _ExtractorView(as_feature_extractor(extractor), data_range, "logits")
        super().__init__(feature=view, splits=splits, **kwargs)
        self.seed = seed

    def compute(self) -> tuple[Tensor, Tensor]:
        """Mean and std of the score over ``splits`` chunks of the shuffled logits (see the class docstring)."""
        logits = dim_zero_cat(self.features)
        order = torch.randperm(logits.shape[0], generator=torch.Generator().manual_seed(self.seed))
        return inception_score(logits[order.to(logits.device)], self.splits)


class KernelInceptionDistance(_TMKernelInceptionDistance):
    """torchmetrics' KID (unbiased MMD^2, polynomial kernel) on images in ``data_range`` with any extractor."""

    def __init__(
        self,
        extractor: Optional[nn.Module] = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        subsets: int = 100,
        subset_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        view = _ExtractorView(as_feature_extractor(extractor), data_range, "features")
        super().__init__(feature=view, subsets=subsets, subset_size=subset_size, **kwargs)


class PrecisionRecall(Metric):
    """Improved precision and recall (Kynkäänniemi et al. 2019) of generated vs real images in extractor features.

    ``update(images, real=bool)``; ``compute()`` returns ``(precision, recall)``. Features are gathered from all
    processes before the k-NN manifolds are built.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        extractor: Optional[nn.Module] = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        k: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.view = _ExtractorView(as_feature_extractor(extractor), data_range, "features")
        self.k = k
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of real or generated images."""
        (self.real_features if real else self.fake_features).append(self.view(images))

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(precision, recall)`` of everything added so far."""
        if len(self.real_features) == 0 or len(self.fake_features) == 0:  # lists, or tensors once synced
            raise ValueError("PrecisionRecall needs both real and generated images before compute()")
        return improved_precision_recall(dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features), self.k)
