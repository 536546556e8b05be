"""torchmetrics-based metrics, their functional twins, and the feature extractors image metrics run on."""

from lightning_gen.metrics.clustering import (
    BestPermutationAccuracy,
    CodePurity,
    best_assignment,
    best_permutation_accuracy,
    code_label_counts,
    code_purity,
)
from lightning_gen.metrics.features import (
    ClassifierFeatureExtractor,
    FeatureExtractor,
    InceptionFeatureExtractor,
    InceptionWeightsNotFoundError,
    check_data_range,
)
from lightning_gen.metrics.image import (
    FrechetInceptionDistance,
    InceptionScore,
    KernelInceptionDistance,
    PrecisionRecall,
    as_feature_extractor,
    frechet_distance,
    gaussian_frechet_distance,
    inception_score,
    kernel_inception_distance,
)
from lightning_gen.metrics.precision_recall import improved_precision_recall, knn_radii
from lightning_gen.metrics.stats import ReferenceStatistics
from lightning_gen.metrics.sliced_wasserstein import SlicedWassersteinDistance, sliced_wasserstein_distance
from lightning_gen.metrics.toy import ToyModeMetrics, toy_mode_counts, toy_mode_statistics

__all__ = [
    "ClassifierFeatureExtractor",
    "FeatureExtractor",
    "FrechetInceptionDistance",
    "InceptionFeatureExtractor",
    "InceptionScore",
    "InceptionWeightsNotFoundError",
    "KernelInceptionDistance",
    "PrecisionRecall",
    "ReferenceStatistics",
    "SlicedWassersteinDistance",
    "ToyModeMetrics",
    "as_feature_extractor",
    "check_data_range",
    "frechet_distance",
    "gaussian_frechet_distance",
    "improved_precision_recall",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "sliced_wasserstein_distance",
    "toy_mode_counts",
    "toy_mode_statistics",
    "BestPermutationAccuracy",
    "CodePurity",
    "best_assignment",
    "best_permutation_accuracy",
    "code_label_counts",
    "code_purity",
]
