"""Diffusion building blocks: DDPM noise schedules with the forward process q(x_t | x_0) and the reverse step, and
samplers as small objects (ancestral, respaced, DDIM, annealed Langevin) that own their timesteps and their step;
the noise ladders of score models."""

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
from lightning_gen.diffusion.guidance import ClassifierFreeGuidance, drop_labels, guided_epsilon
from lightning_gen.diffusion.ladders import NoiseLadder, geometric_sigmas
from lightning_gen.diffusion.samplers import (
    SAMPLERS,
    AncestralSampler,
    AnnealedLangevinSampler,
    DDIMSampler,
    DiffusionSampler,
    RespacedSampler,
    make_sampler,
    respace_schedule,
    strided_timesteps,
)

__all__ = [
    "ClassifierFreeGuidance",
    "guided_epsilon",
    "drop_labels",
    "NoiseSchedule",
    "GaussianMoments",
    "ReverseMoments",
    "linear_schedule",
    "cosine_schedule",
    "make_schedule",
    "SCHEDULES",
    "VARIANCES",
    "DiffusionSampler",
    "AncestralSampler",
    "RespacedSampler",
    "DDIMSampler",
    "AnnealedLangevinSampler",
    "NoiseLadder",
    "geometric_sigmas",
    "make_sampler",
    "SAMPLERS",
    "strided_timesteps",
    "respace_schedule",
]
