"""Logger-agnostic callbacks: generative metrics (FID/KID/IS/PR), toy metrics and scatter plots, sample grids and
interpolations, image-to-image and domain translation grids, sample writing, a progress bar of generator steps and the
end-of-run summary."""

from lightning_gen.callbacks.checkpoint import PeriodicCheckpoint
from lightning_gen.callbacks.domains import DomainTranslationGridCallback
from lightning_gen.callbacks.image_logging import image_dir, log_image, run_dir
from lightning_gen.callbacks.infogan import CodeGridCallback, CodeMetricsCallback
from lightning_gen.callbacks.images import (
    InterpolationCallback,
    PeriodicImageCallback,
    SampleGridCallback,
    grid_to_uint8,
    images_to_grid,
    lerp,
    slerp,
)
from lightning_gen.callbacks.memory_format import ChannelsLast
from lightning_gen.callbacks.metrics import GenerativeMetricsCallback
from lightning_gen.callbacks.predictions import SampleWriter
from lightning_gen.callbacks.reconstruction import ReconstructionGridCallback
from lightning_gen.callbacks.progress import StepProgressBar, run_summary
from lightning_gen.callbacks.super_resolution import SuperResolutionGridCallback
from lightning_gen.callbacks.toy import ToyMetricsCallback, ToyScatterCallback
from lightning_gen.callbacks.translation import TranslationGridCallback

__all__ = [
    "ChannelsLast",
    "DomainTranslationGridCallback",
    "GenerativeMetricsCallback",
    "InterpolationCallback",
    "PeriodicCheckpoint",
    "ReconstructionGridCallback",
    "PeriodicImageCallback",
    "SampleGridCallback",
    "SampleWriter",
    "StepProgressBar",
    "ToyMetricsCallback",
    "ToyScatterCallback",
    "TranslationGridCallback",
    "grid_to_uint8",
    "image_dir",
    "images_to_grid",
    "lerp",
    "log_image",
    "run_dir",
    "run_summary",
    "slerp",
    "CodeGridCallback",
    "CodeMetricsCallback",
    "SuperResolutionGridCallback",
]
