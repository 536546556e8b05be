"""Logger-agnostic callbacks: toy metrics and scatter plots, sample writing."""

from lightning_gen.callbacks.image_logging import image_dir, log_image
from lightning_gen.callbacks.predictions import SampleWriter
from lightning_gen.callbacks.toy import ToyMetricsCallback, ToyScatterCallback

__all__ = ["SampleWriter", "ToyMetricsCallback", "ToyScatterCallback", "image_dir", "log_image"]
