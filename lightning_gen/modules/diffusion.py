"""Denoising diffusion probabilistic models (Ho et al. 2020): epsilon-prediction training and ancestral sampling."""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

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
    Ho et al. 2020, alg. 1), sampled by the ancestral chain from ``x_T ~ N(0, I)`` (alg. 2).

    The denoiser takes ``(x_t, t)`` with ``t`` the integer step indices ``(B,)`` (0 .. num_timesteps-1) and exposes
    ``data_shape``; :class:`~lightning_gen.nets.UNet` (images) and :class:`~lightning_gen.nets.MLPDenoiser` (vectors)
    do. The noise schedule lives in buffers, so it follows the module across devices.

    ``sampling_steps`` < ``num_timesteps`` samples with a respaced chain over evenly strided steps (Nichol & Dhariwal
    2021, sec. 4: betas recomputed from alpha_bar at the kept steps): an approximation of the full chain that trades
    sample quality for speed; ``variance="beta_tilde"`` suits short chains best. ``None`` runs every step.

    Under mixed precision only the denoiser runs in bfloat16/float16: its output is cast to float32 before the loss
    and the sampler's update, the EMA is updated in float32 after each optimizer step (outside autocast), and
    :meth:`sample` returns float32.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: str = "linear",
        num_timesteps: int = 1000,
        variance: str = "beta",
        clip_denoised: bool = False,
        data_scale: float = 1.0,
        sampling_steps: Optional[int] = None,
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
            schedule: ``linear`` (DDPM's 1e-4..0.02, rescaled by 1000 / T) or ``cosine`` (Nichol & Dhariwal 2021).
            num_timesteps: the number of diffusion steps T.
            variance: reverse-step variance, ``beta`` (DDPM's CIFAR-10 setting) or ``beta_tilde`` (posterior).
            clip_denoised: clamp the predicted x_0 to [-1, 1] at every step and the samples at the end (images
                scaled to [-1, 1]); leave off for unbounded data.
            data_scale: the diffusion runs on ``x / data_scale`` and samples are multiplied back, so data far from
                unit scale (the toy grid spans [-4, 4]) can be used as is.
            sampling_steps: number of (evenly strided) steps of the sampling chain; ``None``: all ``num_timesteps``.
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
        self._init_objective(nets=("denoiser",), optimizer=optimizer, scheduler=scheduler, default_lr=2e-4,
                             detect_non_finite=detect_non_finite, compile=compile)
        if not hasattr(denoiser, "data_shape"):
            raise ValueError(
                f"the denoiser ({type(denoiser).__name__}) needs a `data_shape` attribute giving the shape of one "
                "sample, e.g. (1, 28, 28); use lightning_gen.nets.UNet or MLPDenoiser"
            )
        if variance not in VARIANCES:
            raise ValueError(f"Unknown variance {variance!r}. Choose one of {list(VARIANCES)}.")
        if not data_scale > 0:
            raise ValueError(f"data_scale must be positive, got {data_scale}")
        if sampling_steps is not None and not 1 <= sampling_steps <= num_timesteps:
            raise ValueError(
                f"sampling_steps must lie in 1..num_timesteps={num_timesteps} (or be null for every step), "
                f"got {sampling_steps}"
            )
        self.denoiser = denoiser
        self.noise_schedule: NoiseSchedule = make_schedule(schedule, num_timesteps)
        self.variance = variance
        self.clip_denoised = bool(clip_denoised)
        self.data_scale = float(data_scale)
        self.sampling_steps = sampling_steps
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
        self, data: Tensor, generator: Optional[torch.Generator] = None, net: Optional[nn.Module] = None
    ) -> Tensor:
        """L_simple on a batch: uniform t, x_t = q_sample(x_0 / data_scale, t, eps), MSE(net(x_t, t), eps).

        t and eps come from ``generator`` (drawn on its device, then moved) when given, else from the global RNG.
        The loss is float32 even when the net runs under autocast.
        """
        x0 = data / self.data_scale if self.data_scale != 1.0 else data
        sch = self.noise_schedule
        t = sch.sample_timesteps(x0.shape[0], generator=generator, device=x0.device)
        noise = randn(x0.shape, generator, x0.device, dtype=x0.dtype)
        x_t = sch.q_sample(x0, t, noise=noise)
        return epsilon_loss(full_precision((net or self.denoiser)(x_t, t)), noise)

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

    def sampling_schedule(self) -> tuple[NoiseSchedule, Tensor]:
        """The schedule the sampler runs and, for each of its steps, the training step index given to the net.

        Every step without ``sampling_steps``; otherwise the respaced schedule over evenly strided steps that keeps
        alpha_bar at those steps (Nichol & Dhariwal 2021, sec. 4).
        """
        sch = self.noise_schedule
        steps = self.sampling_steps
        if steps is None or steps == sch.num_steps:
            return sch, torch.arange(sch.num_steps, device=sch.betas.device)
        kept = torch.linspace(0, sch.num_steps - 1, steps, dtype=torch.float64).round().long()
        ab = sch.alphas_cumprod.double().cpu()[kept]
        betas = 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
        return NoiseSchedule(betas).to(sch.betas.device), kept.to(sch.betas.device)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, **condition: Any) -> Tensor:
        """Draw ``(num_samples, *data_shape)`` samples with the ancestral sampler (Ho et al. 2020, alg. 2).

        All noise comes from ``generator`` (drawn on its device, then moved to this module's), so a seeded CPU
        generator gives the same samples on any device; without one the global RNG is used. Returns float32, also
        when called under autocast (the net's low-precision output is cast before each step's update).
        """
        reject_unexpected_arguments(self, condition, hint="the model is unconditional")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        net = self.sampling_denoiser
        sch, net_steps = self.sampling_schedule()
        shape = (num_samples, *self.data_shape)
        clip = (-1.0, 1.0) if self.clip_denoised else None
        with eval_mode(net):
            x = randn(shape, generator, self.device)
            for i in reversed(range(sch.num_steps)):
                t = torch.full((num_samples,), i, dtype=torch.long, device=self.device)
                eps = full_precision(net(x, net_steps[t]))
                noise = randn(shape, generator, self.device) if i > 0 else torch.zeros_like(x)
                x = sch.p_sample_step(eps, x, t, clip_x0=clip, variance=self.variance, noise=noise)
        if self.clip_denoised:
            x = x.clamp(-1.0, 1.0)
        return x * self.data_scale if self.data_scale != 1.0 else x
