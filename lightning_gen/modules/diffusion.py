"""Denoising diffusion probabilistic models (Ho et al. 2020): epsilon-prediction training; sampling by a sampler
object (ancestral, respaced or DDIM, :mod:`lightning_gen.diffusion.samplers`)."""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.diffusion.samplers import (
    AnnealedLangevinSampler,
    DiffusionSampler,
    make_sampler,
    respace_schedule,
    strided_timesteps,
)
from lightning_gen.diffusion.schedules import VARIANCES, NoiseSchedule, make_schedule
from lightning_gen.losses.diffusion import epsilon_loss
from lightning_gen.modules.base import SingleObjectiveModule, batch_data, eval_mode, reject_unexpected_arguments
from lightning_gen.modules.compile import CompileOption
from lightning_gen.nets.ema import ExponentialMovingAverage
from lightning_gen.noise import randn
from lightning_gen.precision import full_precision

__all__ = ["DDPM"]

_EVAL_SEED = 20_200_619  # fixed t and noise for the validation/test loss, so epochs and checkpoints compare


class DDPM(SingleObjectiveModule):
    """DDPM: a ``denoiser(x_t, t)`` trained to predict the noise of ``x_t ~ q(x_t | x_0)`` at uniform ``t`` (L_simple,
    Ho et al. 2020, alg. 1), sampled from ``x_T ~ N(0, I)`` by a sampler: the ancestral chain (alg. 2) by default.

    The denoiser takes ``(x_t, t)`` with ``t`` the integer step indices ``(B,)`` (0 .. num_timesteps-1) and exposes
    ``data_shape``; :class:`~lightning_gen.nets.UNet` (images) and :class:`~lightning_gen.nets.MLPDenoiser` (vectors)
    do. The noise schedule lives in buffers, so it follows the module across devices.

    ``sampler`` picks the reverse process by name or object (:mod:`lightning_gen.diffusion.samplers`):
    ``ancestral`` (every step, alg. 2), ``respaced`` (``sampling_steps`` evenly strided steps, Nichol & Dhariwal 2021,
    sec. 4: an approximation of the full chain that trades sample quality for speed; ``variance="beta_tilde"`` suits
    short chains best) or ``ddim`` (Song et al. 2021, deterministic, on the same strided steps). Left ``None`` it is
    ``ancestral``, or ``respaced`` when ``sampling_steps`` < ``num_timesteps`` (the behaviour before samplers
    existed). A sampler's arguments left ``None`` take this module's ``variance``, ``clip_denoised`` and
    ``sampling_steps``; ``sample(n, sampler=...)`` overrides the sampler for one call.

    Under mixed precision only the denoiser runs in bfloat16/float16: its output is cast to float32 before the loss
    and the sampler's update, the EMA is updated in float32 after each optimizer step (outside autocast), and
    :meth:`sample` returns float32.

    The denoiser is unconditional; a class-conditional one (``num_classes`` set) belongs in
    :class:`~lightning_gen.GuidedDDPM` (classifier-free guidance).
    """

    supports_sharding = True  # every net runs through its forward (lightning_gen.modules.sharding)

    _conditional = False  # whether the denoiser takes labels (GuidedDDPM)

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Union[str, NoiseSchedule] = "linear",
        num_timesteps: Optional[int] = None,
        variance: str = "beta",
        clip_denoised: bool = False,
        data_scale: float = 1.0,
        sampling_steps: Optional[int] = None,
        sampler: Union[str, DiffusionSampler, None] = None,
        ema_decay: Optional[float] = None,
        ema_warmup: bool = True,
        optimizer: Optional[OptimizerCallable] = None,
        scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Build the model around an injected denoiser.

        Args:
            denoiser: net ``(x_t, t) -> eps_pred`` with a ``data_shape`` attribute.
            schedule: ``linear`` (DDPM's 1e-4..0.02, rescaled by 1000 / T) or ``cosine`` (Nichol & Dhariwal 2021),
                or a :class:`~lightning_gen.diffusion.NoiseSchedule` (its copy becomes this module's buffers).
            num_timesteps: the number of diffusion steps T (``None``: 1000 for a named schedule, a schedule object's
                own length; given with an object it must match).
            variance: reverse-step variance of the ancestral samplers, ``beta`` (DDPM's CIFAR-10 setting) or
                ``beta_tilde`` (posterior).
            clip_denoised: clamp the predicted x_0 to [-1, 1] at every step and the samples at the end (images
                scaled to [-1, 1]); leave off for unbounded data.
            data_scale: the diffusion runs on ``x / data_scale`` and samples are multiplied back, so data far from
                unit scale (the toy grid spans [-4, 4]) can be used as is.
            sampling_steps: number of (evenly strided) steps of the sampling chain; ``None``: all ``num_timesteps``
                (or the sampler's own ``num_steps``).
            sampler: ``ancestral``, ``respaced``, ``ddim`` or a :class:`~lightning_gen.diffusion.DiffusionSampler`
                (from YAML: ``class_path: lightning_gen.diffusion.DDIMSampler``, ``init_args: {num_steps: 50, eta:
                0.0}``); ``None``: ``ancestral``, or ``respaced`` with ``sampling_steps``. An object built in Python is
                not saved in checkpoints: pass it again to ``load_from_checkpoint`` (``lightning-gen fit`` saves it).
            ema_decay: keep an exponential moving average of the denoiser (e.g. 0.999) that sampling uses.
            ema_warmup: use ``min(ema_decay, (1 + n) / (10 + n))`` at EMA update ``n``.
            optimizer: callable building the optimizer (default Adam(2e-4), Ho et al. 2020).
            scheduler: optional learning-rate scheduler, stepped after every optimizer step.
            detect_non_finite: stop training with :class:`~lightning_gen.modules.base.NonFiniteLossError` when a
                training loss is NaN or infinite; no optimizer steps on it or after it, and finding it never makes a
                step wait for the device (``False`` skips the check).
            compile: compile the denoiser (not its EMA copy) with ``torch.compile`` (``True``, or a dict of its
                arguments, e.g. ``{mode: max-autotune}``) once, at set-up (see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__()
        # objects built in Python (a schedule, a sampler) are saved as hyperparameters only when the CLI built them
        objects = ("denoiser", *(name for name, value in (("schedule", schedule), ("sampler", sampler))
                                 if value is not None and not isinstance(value, str)))
        self._init_objective(nets=objects, optimizer=optimizer, scheduler=scheduler, default_lr=2e-4,
                             detect_non_finite=detect_non_finite, compile=compile)
        self._net_names = ("denoiser",)
        if not hasattr(denoiser, "data_shape"):
            raise ValueError(
                f"the denoiser ({type(denoiser).__name__}) needs a `data_shape` attribute giving the shape of one "
                "sample, e.g. (1, 28, 28); use lightning_gen.nets.UNet or MLPDenoiser"
            )
        if bool(getattr(denoiser, "num_classes", 0)) != self._conditional:
            raise ValueError(
                f"{type(self).__name__} needs a class-conditional denoiser: set its `num_classes` (e.g. 10 for MNIST)"
                if self._conditional else
                f"the denoiser ({type(denoiser).__name__}) is class-conditional (num_classes "
                f"{getattr(denoiser, 'num_classes')}): train it with lightning_gen.GuidedDDPM, or leave num_classes out"
            )
        if variance not in VARIANCES:
            raise ValueError(f"Unknown variance {variance!r}. Choose one of {list(VARIANCES)}.")
        if not data_scale > 0:
            raise ValueError(f"data_scale must be positive, got {data_scale}")
        self.noise_schedule: NoiseSchedule = _build_schedule(schedule, num_timesteps)
        num_timesteps = self.noise_schedule.num_steps
        if sampling_steps is not None and not 1 <= sampling_steps <= num_timesteps:
            raise ValueError(
                f"sampling_steps must lie in 1..num_timesteps={num_timesteps} (or be null for every step), "
                f"got {sampling_steps}"
            )
        self.denoiser = denoiser
        self.variance = variance
        self.clip_denoised = bool(clip_denoised)
        self.data_scale = float(data_scale)
        self.sampling_steps = sampling_steps
        if sampler is None:
            sampler = "ancestral" if sampling_steps in (None, num_timesteps) else "respaced"
        self.sampler: DiffusionSampler = self._configure_sampler(sampler)
        steps = len(strided_timesteps(num_timesteps, self.sampler.num_steps))  # raises past num_timesteps
        if sampling_steps is not None and steps != sampling_steps:
            raise ValueError(
                f"sampling_steps={sampling_steps} but the sampler {self.sampler!r} takes {steps} steps: set the steps "
                "in one place (sampling_steps: null, or the sampler's num_steps; `ancestral` runs every step, "
                "`respaced` and `ddim` take sampling_steps)"
            )
        self.denoiser_ema = ExponentialMovingAverage(denoiser, ema_decay, ema_warmup) if ema_decay is not None else None

    # -- public API ---------------------------------------------------------------------------------------------
    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(int(s) for s in self.denoiser.data_shape)

    @property
    def num_timesteps(self) -> int:
        """The number of diffusion steps T of training."""
        return self.noise_schedule.num_steps

    @property
    def sampling_denoiser(self) -> nn.Module:
        """The net sampling uses: the EMA denoiser when enabled, else the denoiser."""
        return self.denoiser_ema if self.denoiser_ema is not None else self.denoiser

    def diffusion_loss(
        self,
        data: Tensor,
        generator: Optional[torch.Generator] = None,
        net: Optional[nn.Module] = None,
        labels: Optional[Tensor] = None,
    ) -> Tensor:
        """L_simple on a batch: uniform t, x_t = q_sample(x_0 / data_scale, t, eps), MSE(net(x_t, t), eps)
        (``net(x_t, t, labels)`` when ``labels`` are given).

        t and eps come from ``generator`` (drawn on its device, then moved) when given, else from the global RNG.
        The loss is float32 even when the net runs under autocast.
        """
        x0 = data / self.data_scale if self.data_scale != 1.0 else data
        sch = self.noise_schedule
        t = sch.sample_timesteps(x0.shape[0], generator=generator, device=x0.device)
        noise = randn(x0.shape, generator, x0.device, dtype=x0.dtype)
        x_t = sch.q_sample(x0, t, noise=noise)
        net = net or self.denoiser
        return epsilon_loss(full_precision(net(x_t, t) if labels is None else net(x_t, t, labels)), noise)

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The epsilon-prediction loss at uniform timesteps (Ho et al. 2020, alg. 1), logged as ``loss``."""
        loss = self.diffusion_loss(data)
        return loss, {"loss": loss.detach()}

    def _eval_loss(self, batch: Any, batch_idx: int, stage: str) -> Tensor:
        data = batch_data(batch)
        generator = torch.Generator().manual_seed(_EVAL_SEED + batch_idx)
        loss = self.diffusion_loss(data, generator=generator, net=self.sampling_denoiser)
        self.log(f"{stage}/loss", loss, batch_size=data.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The loss of the sampling net with fixed t and noise per batch index, logged as ``val/loss``."""
        return self._eval_loss(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The loss of the sampling net with fixed t and noise per batch index, logged as ``test/loss``."""
        return self._eval_loss(batch, batch_idx, "test")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the optimizer, then move the EMA denoiser (once per optimizer step, whatever the accumulation).

        This hook runs outside the autocast region of ``training_step``, so the average is kept in float32."""
        super().optimizer_step(*args, **kwargs)
        if self.denoiser_ema is not None:
            self.denoiser_ema.update(self.denoiser)

    def _configure_sampler(self, sampler: Union[str, DiffusionSampler]) -> DiffusionSampler:
        """``sampler`` (a name or an object) with the arguments it leaves ``None`` set from this module's."""
        if not isinstance(sampler, (str, DiffusionSampler)):
            raise TypeError(
                f"sampler must be a name (ancestral, respaced, ddim) or a lightning_gen.diffusion.DiffusionSampler, "
                f"got {type(sampler).__name__}"
            )
        if isinstance(sampler, AnnealedLangevinSampler) or (isinstance(sampler, str) and sampler.lower() == "langevin"):
            raise TypeError(
                "annealed Langevin dynamics samples a lightning_gen.ScoreModel (it walks a noise ladder with a score); "
                "a DDPM takes ancestral, respaced, ddim or another DiffusionSampler on its NoiseSchedule"
            )
        return make_sampler(sampler).with_defaults(
            num_steps=self.sampling_steps, variance=self.variance, clip_denoised=self.clip_denoised
        )

    def sampling_schedule(self) -> tuple[NoiseSchedule, Tensor]:
        """The respaced schedule over the sampler's steps and, for each of its steps, the training step index given
        to the net (every step when the sampler takes them all).

        The respaced schedule keeps alpha_bar at the evenly strided steps (Nichol & Dhariwal 2021, sec. 4); the
        ancestral and respaced samplers run its reverse steps, DDIM uses the same steps and alpha_bar.
        """
        sch = self.noise_schedule
        kept = strided_timesteps(sch.num_steps, self.sampler.num_steps)
        return respace_schedule(sch, kept), kept.to(sch.betas.device)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: Optional[torch.Generator] = None,
        sampler: Union[str, DiffusionSampler, None] = None,
        **condition: Any,
    ) -> Tensor:
        """Draw ``(num_samples, *data_shape)`` samples with this module's sampler, or ``sampler`` (a name or an
        object; its arguments left ``None`` take this module's settings) for this call.

        All noise comes from ``generator`` (drawn on its device, then moved to this module's), so a seeded CPU
        generator gives the same samples on any device; without one the global RNG is used. Returns float32, also
        when called under autocast (the net's low-precision output is cast before each step's update).
        """
        reject_unexpected_arguments(self, condition, hint="the model is unconditional")
        return self._run_sampler(self.sampling_denoiser, num_samples, generator, sampler)

    def _run_sampler(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        num_samples: int,
        generator: Optional[torch.Generator],
        sampler: Union[str, DiffusionSampler, None],
    ) -> Tensor:
        """``num_samples`` samples of ``model(x_t, t)`` (the sampling denoiser, or a function of it) with this
        module's sampler or ``sampler``, the sampling denoiser in eval mode, scaled back by ``data_scale``."""
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        chosen = self.sampler if sampler is None else self._configure_sampler(sampler)
        with eval_mode(self.sampling_denoiser):
            x = chosen.sample(model, (num_samples, *self.data_shape), self.noise_schedule, generator, self.device)
        return x * self.data_scale if self.data_scale != 1.0 else x


def _build_schedule(schedule: Union[str, NoiseSchedule], num_timesteps: Optional[int]) -> NoiseSchedule:
    """A named schedule of ``num_timesteps`` (default 1000) steps, or a copy of a schedule object (not shared between
    modules; its length must match ``num_timesteps`` when that is given)."""
    if isinstance(schedule, NoiseSchedule):
        if num_timesteps is not None and num_timesteps != schedule.num_steps:
            raise ValueError(
                f"num_timesteps={num_timesteps} but the schedule has {schedule.num_steps} steps: leave num_timesteps "
                "out (null) with a schedule object"
            )
        return copy.deepcopy(schedule)  # its own buffers, exactly (rebuilding from float32 betas would round them)
    if not isinstance(schedule, str):
        raise TypeError(
            f"schedule must be a name (linear, cosine) or a lightning_gen.diffusion.NoiseSchedule, got "
            f"{type(schedule).__name__}"
        )
    return make_schedule(schedule, 1000 if num_timesteps is None else num_timesteps)
