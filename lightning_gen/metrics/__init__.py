"""torchmetrics-based metrics and their functional twins."""

from lightning_gen.metrics.toy import ToyModeMetrics, toy_mode_counts, toy_mode_statistics

__all__ = ["ToyModeMetrics", "toy_mode_counts", "toy_mode_statistics"]
