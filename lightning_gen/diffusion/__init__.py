"""Diffusion building blocks: DDPM noise schedules with the forward process q(x_t | x_0) and the reverse step."""

from lightning_gen.diffusion.schedules import (
    SCHEDULES,
    VARIANCES,
    GaussianMoments,
    NoiseSchedule,
    ReverseMoments,
    cosine_schedule,
    linear_schedule,
    make_schedule,
)

__all__ = [
    "NoiseSchedule",
    "GaussianMoments",
    "ReverseMoments",
    "linear_schedule",
    "cosine_schedule",
    "make_schedule",
    "SCHEDULES",
    "VARIANCES",
]
