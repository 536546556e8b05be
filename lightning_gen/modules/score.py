"""Score matching (Hyvarinen 2005; Vincent 2011; Song & Ermon 2019, NCSN): a noise-conditional score model trained
by denoising or sliced score matching over a geometric ladder of noise levels, sampled by annealed Langevin
dynamics (:class:`~lightning_gen.diffusion.AnnealedLangevinSampler`)."""

from __future__ import annotations

from functools import partial
from typing import Any, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.diffusion.ladders import NoiseLadder
from lightning_gen.diffusion.samplers import AnnealedLangevinSampler, DiffusionSampler
from lightning_gen.losses.score import (
    PROJECTIONS,
    denoising_score_matching_loss,
    random_projections,
    sliced_score_matching_loss,
)
from lightning_gen.modules.base import SingleObjectiveModule, batch_data, eval_mode, reject_unexpected_arguments
from lightning_gen.modules.compile import CompileOption
from lightning_gen.nets.ema import ExponentialMovingAverage
from lightning_gen.noise import randn
from lightning_gen.precision import full_precision

__all__ = ["ScoreModel", "OBJECTIVES"]

OBJECTIVES = ("dsm", "ssm")
_EVAL_SEED = 20_190_712  # fixed levels and noise for the validation/test loss, so epochs and checkpoints compare


class ScoreModel(SingleObjectiveModule):
    """A noise-conditional score network (NCSN, Song & Ermon 2019): ``s(x, sigma_i) = net(x, i) / sigma_i`` estimates
    ``grad_x log p_sigma_i(x)``, the score of the data perturbed by N(0, sigma_i^2 I), at each level ``i`` of a
    geometric ladder from ``sigma_min`` to ``sigma_max`` (level 0 the smallest).

    ``net(x, level)`` takes the integer level index as its time input, like a diffusion denoiser, and exposes
    ``data_shape``: :class:`~lightning_gen.nets.MLPDenoiser` (vectors) and :class:`~lightning_gen.nets.UNet`
    (images) do. Dividing by sigma is NCSNv2's parametrization (Song & Ermon 2020, technique 3): the net's output
    stays at unit scale at every level.

    ``objective``: ``dsm``, denoising score matching (Vincent 2011) with lambda(sigma) = sigma^2 averaged over
    uniformly drawn levels (NCSN eq. 6, :func:`~lightning_gen.losses.denoising_score_matching_loss`); or ``ssm``,
    sliced score matching (Song et al. 2019) on the perturbed data with the same weighting, ``num_projections``
    Rademacher or Gaussian directions per example (``variance_reduction``: SSM-VR); SSM needs a backward pass per
    projection and twice-differentiable activations (SiLU, not ReLU). Validation and test log the DSM loss of the
    sampling net (``val/loss``, ``test/loss``) for either objective, with fixed levels and noise per batch index.

    :meth:`sample` runs annealed Langevin dynamics with ``step_size`` (epsilon: alpha_i = epsilon sigma_i^2 /
    sigma_min^2) and ``steps_per_level``, then one Tweedie denoising step (``final_denoise``); ``sample(n,
    step_size=..., steps_per_level=...)`` overrides them for one call. ``data_scale`` runs everything on ``x /
    data_scale`` and multiplies the samples back; ``clip_denoised`` clamps the samples to [-1, 1] (images).
    """

    supports_sharding = True  # every net runs through its forward (lightning_gen.modules.sharding)

    def __init__(
        self,
        net: nn.Module,
        sigma_max: float = 1.0,
        sigma_min: float = 0.01,
        num_levels: int = 10,
        objective: str = "dsm",
        num_projections: int = 1,
        projection: str = "rademacher",
        variance_reduction: bool = False,
        step_size: float = 2e-5,
        steps_per_level: int = 100,
        final_denoise: bool = True,
        clip_denoised: bool = False,
        data_scale: float = 1.0,
        sampler: Union[str, DiffusionSampler, None] = None,
        ema_decay: Optional[float] = None,
        ema_warmup: bool = True,
        optimizer: Optional[OptimizerCallable] = None,
        scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Build the model around an injected net.

        Args:
            net: ``(x, level) -> (x-shaped output)`` with a ``data_shape`` attribute; the score is its output / sigma.
            sigma_max: the largest noise level (NCSNv2's advice: about the largest distance between two training
                examples, in units of ``x / data_scale``).
            sigma_min: the smallest noise level (below the data's own spread).
            num_levels: the number of levels L, in geometric progression (NCSN: 10, sigma 1 .. 0.01).
            objective: ``dsm`` (denoising score matching) or ``ssm`` (sliced score matching).
            num_projections: random directions per example for ``ssm``.
            projection: ``rademacher`` or ``gaussian`` directions for ``ssm``.
            variance_reduction: SSM-VR (Song et al. 2019, eq. 8): ``1/2 ||s||^2`` in place of ``1/2 (v^T s)^2``.
            step_size: Langevin's epsilon, the step at ``sigma_min`` (NCSN: 2e-5 for data in [0, 1], sigma_min 0.01;
                keep ``step_size / sigma_min^2`` about 0.2).
            steps_per_level: Langevin updates per noise level (NCSN: 100).
            final_denoise: end sampling with one Tweedie step ``x + sigma_min^2 s(x, sigma_min)``.
            clip_denoised: clamp the samples to [-1, 1] (images scaled to [-1, 1]); leave off for unbounded data.
            data_scale: the model works on ``x / data_scale``; samples are multiplied back.
            sampler: ``langevin`` or an :class:`~lightning_gen.diffusion.AnnealedLangevinSampler` (its arguments left
                ``None`` take this module's); ``None``: ``langevin``.
            ema_decay: keep an exponential moving average of the net (e.g. 0.999) that sampling and evaluation use.
            ema_warmup: use ``min(ema_decay, (1 + n) / (10 + n))`` at EMA update ``n``.
            optimizer: callable building the optimizer (default Adam(1e-3), NCSN's).
            scheduler: optional learning-rate scheduler, stepped after every optimizer step.
            detect_non_finite: stop training with :class:`~lightning_gen.modules.base.NonFiniteLossError` when a
                training loss is NaN or infinite (``False`` skips the check).
            compile: compile the net (not its EMA copy) with ``torch.compile`` once, at set-up.
        """
        super().__init__()
        objects = ("net", *(["sampler"] if sampler is not None and not isinstance(sampler, str) else []))
        self._init_objective(nets=objects, optimizer=optimizer, scheduler=scheduler, default_lr=1e-3,
                             detect_non_finite=detect_non_finite, compile=compile)
        self._net_names = ("net",)
        if not hasattr(net, "data_shape"):
            raise ValueError(
                f"the net ({type(net).__name__}) needs a `data_shape` attribute giving the shape of one sample, e.g. "
                "(1, 28, 28); use lightning_gen.nets.UNet or MLPDenoiser"
            )
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective {objective!r}. Choose one of {list(OBJECTIVES)}.")
        if projection not in PROJECTIONS:
            raise ValueError(f"Unknown projection {projection!r}. Choose one of {list(PROJECTIONS)}.")
        if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
            raise ValueError(f"num_projections must be a positive int, got {num_projections!r}")
        if not data_scale > 0:
            raise ValueError(f"data_scale must be positive, got {data_scale}")
        self.net = net
        self.ladder = NoiseLadder.geometric(sigma_max, sigma_min, num_levels)
        self.objective = objective
        self.num_projections = int(num_projections)
        self.projection = projection
        self.variance_reduction = bool(variance_reduction)
        self.data_scale = float(data_scale)
        self.step_size = float(step_size)
        self.steps_per_level = int(steps_per_level)
        self.final_denoise = bool(final_denoise)
        self.clip_denoised = bool(clip_denoised)
        self.sampler: AnnealedLangevinSampler = self._configure_sampler("langevin" if sampler is None else sampler)
        self.net_ema = ExponentialMovingAverage(net, ema_decay, ema_warmup) if ema_decay is not None else None

    # -- public API ---------------------------------------------------------------------------------------------
    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(int(s) for s in self.net.data_shape)

    @property
    def sampling_net(self) -> nn.Module:
        """The net sampling and evaluation use: the EMA net when enabled, else the net."""
        return self.net_ema if self.net_ema is not None else self.net

    def score(self, x: Tensor, levels: Tensor, net: Optional[nn.Module] = None) -> Tensor:
        """The score ``net(x, levels) / sigma_levels`` at ``x`` (in model space, ``data / data_scale``) and level
        indices ``levels`` ``(B,)``, float32 (``net``: this module's net by default)."""
        out = full_precision((net or self.net)(x, levels))
        return out / self.ladder.sigma(levels, out.dim())

    def score_matching_loss(
        self, data: Tensor, generator: Optional[torch.Generator] = None, net: Optional[nn.Module] = None,
        objective: Optional[str] = None,
    ) -> Tensor:
        """The objective on a batch: uniform levels, ``x~ = data / data_scale + sigma z``, then DSM or SSM weighted by
        sigma^2 (``objective``: this module's by default). Levels, noise and projections come from ``generator``
        (drawn on its device, then moved) when given, else from the global RNG."""
        x = data / self.data_scale if self.data_scale != 1.0 else data
        levels = self.ladder.sample_levels(x.shape[0], generator, x.device)
        noise = randn(x.shape, generator, x.device, dtype=x.dtype)
        perturbed = self.ladder.perturb(x, levels, noise)
        sigma = self.ladder.sigma(levels, x.dim())
        if (objective or self.objective) == "dsm":
            return denoising_score_matching_loss(self.score(perturbed, levels, net), noise, sigma)
        projections = random_projections(x.shape, self.projection, self.num_projections, generator, x.device, x.dtype)
        perturbed = perturbed.detach().requires_grad_(True)
        return sliced_score_matching_loss(self.score(perturbed, levels, net), perturbed, projections,
                                          weight=sigma.reshape(-1) ** 2, variance_reduction=self.variance_reduction)

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The sigma^2-weighted DSM or SSM loss over uniformly drawn levels (NCSN eq. 6), logged as ``loss``."""
        loss = self.score_matching_loss(data)
        return loss, {"loss": loss.detach()}

    def _eval_loss(self, batch: Any, batch_idx: int, stage: str) -> Tensor:
        data = batch_data(batch)
        generator = torch.Generator().manual_seed(_EVAL_SEED + batch_idx)
        # DSM whatever the objective: SSM needs autograd, which Lightning's evaluation (inference mode) turns off
        loss = self.score_matching_loss(data, generator=generator, net=self.sampling_net, objective="dsm")
        self.log(f"{stage}/loss", loss, batch_size=data.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The DSM loss of the sampling net with fixed levels and noise per batch index, logged as ``val/loss``."""
        return self._eval_loss(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The DSM loss of the sampling net with fixed levels and noise per batch index, logged as ``test/loss``."""
        return self._eval_loss(batch, batch_idx, "test")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the optimizer, then move the EMA net (once per optimizer step, in float32 outside autocast)."""
        super().optimizer_step(*args, **kwargs)
        if self.net_ema is not None:
            self.net_ema.update(self.net)

    def _configure_sampler(self, sampler: Union[str, DiffusionSampler]) -> AnnealedLangevinSampler:
        """``sampler`` (a name or an object) with the arguments it leaves ``None`` set from this module's."""
        # by name only "langevin": the DDPM samplers (make_sampler's names) run on a NoiseSchedule, not on a ladder
        chosen = AnnealedLangevinSampler() if isinstance(sampler, str) and sampler.lower() == "langevin" else sampler
        if not isinstance(chosen, AnnealedLangevinSampler):
            raise TypeError(
                f"a ScoreModel samples by annealed Langevin dynamics: sampler must be 'langevin' or a "
                f"lightning_gen.diffusion.AnnealedLangevinSampler, got {sampler!r}"
            )
        return chosen.with_defaults(step_size=self.step_size, steps_per_level=self.steps_per_level,
                                    final_denoise=self.final_denoise, clip_denoised=self.clip_denoised)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: Optional[torch.Generator] = None,
        step_size: Optional[float] = None,
        steps_per_level: Optional[int] = None,
        final_denoise: Optional[bool] = None,
        sampler: Union[str, DiffusionSampler, None] = None,
        **condition: Any,
    ) -> Tensor:
        """Draw ``(num_samples, *data_shape)`` samples by annealed Langevin dynamics with this module's sampler, or
        ``sampler``, with ``step_size``, ``steps_per_level`` and ``final_denoise`` overridden for this call when given.

        All noise comes from ``generator`` (drawn on its device, then moved to this module's), so a seeded CPU
        generator gives the same samples on any device; without one the global RNG is used. Returns float32.
        """
        reject_unexpected_arguments(self, condition, hint="the model is unconditional")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        chosen = self.sampler if sampler is None else self._configure_sampler(sampler)
        overrides = {k: v for k, v in (("step_size", step_size), ("steps_per_level", steps_per_level),
                                       ("final_denoise", final_denoise)) if v is not None}
        if overrides:
            chosen = type(chosen)(**{**chosen.init_arguments(), **overrides})
        net = self.sampling_net
        with eval_mode(net):
            x = chosen.sample(partial(self.score, net=net), (num_samples, *self.data_shape), self.ladder, generator,
                              self.device)
        return x * self.data_scale if self.data_scale != 1.0 else x
