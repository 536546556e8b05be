"""torchmetrics-based metrics and their functional twins."""

from lightning_gen.metrics.sliced_wasserstein import SlicedWassersteinDistance, sliced_wasserstein_distance
from lightning_gen.metrics.toy import ToyModeMetrics, toy_mode_counts, toy_mode_statistics

__all__ = [
    "SlicedWassersteinDistance",
    "ToyModeMetrics",
    "sliced_wasserstein_distance",
    "toy_mode_counts",
    "toy_mode_statistics",
]
