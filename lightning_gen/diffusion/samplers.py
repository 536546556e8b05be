"""Diffusion samplers as small objects, the way ``diffusers`` schedulers work: each owns its timesteps and its step.

A sampler is told the schedule and how many steps to take (:meth:`DiffusionSampler.set_timesteps`), then maps the
state at one of its :attr:`~DiffusionSampler.timesteps` to the next with :meth:`~DiffusionSampler.step`, given the
model's output there; :meth:`~DiffusionSampler.sample` is the whole loop from noise. Step indices follow
:mod:`lightning_gen.diffusion.schedules`: index ``t`` in ``0 .. T-1`` is DDPM's step ``t + 1`` and the model is called
as ``model(x, t)`` with ``t`` a LongTensor ``(B,)`` of training indices.

For an epsilon-prediction model and a :class:`~lightning_gen.diffusion.NoiseSchedule`:

* :class:`AncestralSampler`: the full chain of Ho et al. 2020, alg. 2 (``x_{t-1} = mu_theta(x_t, t) + sigma_t z``).
* :class:`RespacedSampler`: the same chain over evenly strided steps, with betas recomputed from alpha_bar at the kept
  steps (Nichol & Dhariwal 2021, sec. 4).
* :class:`DDIMSampler`: Song et al. 2021, eq. 12, on the same strided steps; ``eta = 0`` is deterministic given
  ``x_T``, ``eta = 1`` is the respaced ancestral chain with the posterior variance ``beta_tilde``.

For a score model on a :class:`~lightning_gen.diffusion.NoiseLadder` (:class:`~lightning_gen.ScoreModel`):

* :class:`AnnealedLangevinSampler`: annealed Langevin dynamics (Song & Ermon 2019, alg. 1), ``steps_per_level``
  updates per noise level, then an optional Tweedie denoising step.

Arguments a sampler leaves ``None`` (the variance, the clipping, the number of steps) are filled from the model that
runs it by :meth:`DiffusionSampler.with_defaults` (``DDPM`` passes its ``variance``, ``clip_denoised`` and
``sampling_steps``); used on its own, ``None`` means ``beta``, no clipping and every step.

Another family (e.g. annealed Langevin dynamics for a score model, whose "schedule" is a list of noise levels and whose
model output is a score) implements the same interface: :meth:`~DiffusionSampler.make_timesteps` for its sequence of
model steps (repeated indices for several updates per level), :meth:`~DiffusionSampler.step`, and optionally
:meth:`~DiffusionSampler.initial_noise` and :meth:`~DiffusionSampler.finish`. :meth:`~DiffusionSampler.sample` runs
under ``torch.no_grad()``; a model whose score needs autograd (an energy's gradient) can be wrapped to call it under
``torch.enable_grad()``. Constructor arguments are stored as attributes of the same names
(:meth:`~DiffusionSampler.init_arguments` reads them back).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from lightning_gen.diffusion.schedules import VARIANCES, NoiseSchedule
from lightning_gen.noise import randn
from lightning_gen.precision import full_precision

__all__ = [
    "DiffusionSampler",
    "AncestralSampler",
    "RespacedSampler",
    "DDIMSampler",
    "AnnealedLangevinSampler",
    "SAMPLERS",
    "make_sampler",
    "strided_timesteps",
    "respace_schedule",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]


def _check_num_steps(num_steps: Optional[int]) -> Optional[int]:
    """Return ``num_steps`` unless it is neither ``None`` nor a positive int."""
    if num_steps is None:
        return None
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int or None (every step), got {num_steps!r}")
    return num_steps


def _check_clip(clip_denoised: Optional[bool]) -> Optional[bool]:
    """Return ``clip_denoised`` unless it is neither ``None`` nor a bool."""
    if clip_denoised is not None and not isinstance(clip_denoised, bool):
        raise ValueError(f"clip_denoised must be true, false or null (the model's setting), got {clip_denoised!r}")
    return clip_denoised


def strided_timesteps(num_train_steps: int, num_steps: Optional[int] = None) -> Tensor:
    """``num_steps`` evenly strided training indices from 0 to ``num_train_steps - 1``, ascending, both ends kept
    (all of them when ``None``); the respacing of Nichol & Dhariwal 2021, sec. 4."""
    if num_steps is None:
        num_steps = num_train_steps
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(
            f"a sampler cannot take {num_steps} steps on a schedule of {num_train_steps}: use 1..{num_train_steps} "
            "steps (null: every step)"
        )
    if num_steps == num_train_steps:
        return torch.arange(num_train_steps)
    return torch.linspace(0, num_train_steps - 1, num_steps, dtype=torch.float64).round().long()


def respace_schedule(schedule: NoiseSchedule, kept: Tensor) -> NoiseSchedule:
    """The schedule over the ``kept`` (ascending) indices with the same alpha_bar there: beta_i = 1 - alpha_bar_{k_i} /
    alpha_bar_{k_{i-1}} (Nichol & Dhariwal 2021, sec. 4), on ``schedule``'s device; ``schedule`` itself when every
    index is kept."""
    if kept.numel() == schedule.num_steps:
        return schedule
    ab = schedule.alphas_cumprod.double().cpu()[kept.cpu()]
    betas = 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
    return NoiseSchedule(betas).to(schedule.betas.device)


class DiffusionSampler(ABC):
    """A reverse-process sampler: :meth:`set_timesteps` picks the model steps to visit, :meth:`step` moves the state
    from one to the next given the model's output, :meth:`sample` runs the loop from :meth:`initial_noise`.

    ``inherited`` names the constructor arguments that, left ``None``, take the running model's values
    (:meth:`with_defaults`). Subclasses implement :meth:`make_timesteps` and :meth:`step`.
    """

    inherited: tuple[str, ...] = ()

    def __init__(self, num_steps: Optional[int] = None) -> None:
        """Store the number of steps (``None``: decided by :meth:`make_timesteps`, e.g. every step)."""
        self.num_steps = _check_num_steps(num_steps)
        self.schedule: Any = None
        self.timesteps: Tensor = torch.empty(0, dtype=torch.long)

    def __repr__(self) -> str:
        """The class and its constructor arguments."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_arguments().items())
        return f"{type(self).__name__}({args})"

    def init_arguments(self) -> dict[str, Any]:
        """The constructor's arguments, read from the attributes of the same names (subclasses store them so)."""
        names = [p.name for p in inspect.signature(type(self).__init__).parameters.values()
                 if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return {name: getattr(self, name) for name in names}

    # -- configuration ------------------------------------------------------------------------------------------
    def with_defaults(self, **values: Any) -> "DiffusionSampler":
        """This sampler, or a shallow copy of it with each :attr:`inherited` argument that is ``None`` set from
        ``values`` (the model's settings); keys it does not inherit are ignored. The copy is built by the
        constructor from :meth:`init_arguments`."""
        fill = {k: v for k, v in values.items() if k in self.inherited and getattr(self, k) is None and v is not None}
        if not fill:
            return self
        return type(self)(**{**self.init_arguments(), **fill})  # validated as the constructor validates

    def set_timesteps(self, num_steps: Optional[int] = None, schedule: Any = None) -> Tensor:
        """Bind ``schedule`` (when given) and ``num_steps`` (when given), then compute :attr:`timesteps`, the model
        steps in the order they are visited; returns them."""
        if schedule is not None:
            self.schedule = schedule
        if num_steps is not None:
            self.num_steps = _check_num_steps(num_steps)
        if self.schedule is None:
            raise ValueError(f"{type(self).__name__} has no schedule: pass set_timesteps(schedule=...) or "
                             "sample(..., schedule=...)")
        self.timesteps = self.make_timesteps(self.schedule).long().cpu()
        return self.timesteps

    @abstractmethod
    def make_timesteps(self, schedule: Any) -> Tensor:
        """The model steps to visit, in order (a 1-D integer tensor), for ``schedule`` and :attr:`num_steps`."""

    # -- the loop -----------------------------------------------------------------------------------------------
    def initial_noise(
        self, shape: Sequence[int], generator: Optional[torch.Generator] = None, device: Any = None
    ) -> Tensor:
        """The starting state: x_T ~ N(0, I), float32, drawn from ``generator`` on its device, then moved."""
        return randn(shape, generator, device)

    @abstractmethod
    def step(
        self,
        model_output: Tensor,
        t: int,
        x: Tensor,
        generator: Optional[torch.Generator] = None,
        noise: Optional[Tensor] = None,
    ) -> Tensor:
        """The state after model step ``t`` (one of :attr:`timesteps`) from the state ``x`` there and the model's
        output ``model_output = model(x, t)``; any noise is drawn from ``generator`` unless given as ``noise``."""

    def finish(self, x: Tensor) -> Tensor:
        """The samples from the final state (the state itself by default)."""
        return x

    def sample(
        self,
        model: Denoiser,
        shape: Sequence[int],
        schedule: Any = None,
        generator: Optional[torch.Generator] = None,
        device: Any = None,
        x_T: Optional[Tensor] = None,
    ) -> Tensor:
        """Run the chain: start at ``x_T`` (default :meth:`initial_noise` of ``shape``), then for each of
        :attr:`timesteps` call ``model(x, t)`` (``t`` a LongTensor of the batch size; outputs in bfloat16/float16 are
        cast to float32) and :meth:`step`; return :meth:`finish` of the last state.

        ``schedule`` is bound first when given (else the one bound before); ``device`` defaults to ``x_T``'s, else
        the schedule's buffers', else the CPU. All noise comes from ``generator`` when given. Runs without autograd.
        """
        self.set_timesteps(schedule=schedule)
        if device is None:
            device = x_T.device if x_T is not None else _schedule_device(self.schedule)
        with torch.no_grad():
            if x_T is None:
                x = self.initial_noise(shape, generator, device)
            else:
                if tuple(x_T.shape) != tuple(shape):
                    raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
                x = x_T.to(device)
            for t in self.timesteps.tolist():
                t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=device)
                x = self.step(full_precision(model(x, t_batch)), t, x, generator)
            return self.finish(x)


def _schedule_device(schedule: Any) -> Optional[torch.device]:
    """The device of a schedule's buffers (``None`` when it has none)."""
    if isinstance(schedule, torch.nn.Module):
        for buffer in schedule.buffers():
            return buffer.device
    return None


def _check_same_shape(name: str, value: Tensor, x: Tensor) -> None:
    """Raise unless ``value`` (called ``name`` in the message) has ``x``'s shape."""
    if value.shape != x.shape:
        raise ValueError(f"{name} and x must have the same shape, got {tuple(value.shape)} and {tuple(x.shape)}")


def _check_noise(noise: Tensor, x: Tensor) -> None:
    """Raise unless ``noise`` has ``x``'s shape."""
    _check_same_shape("noise", noise, x)


class _EpsilonSampler(DiffusionSampler):
    """Shared by the samplers of an epsilon-prediction model on a :class:`NoiseSchedule`: strided timesteps (every
    step, or ``num_steps`` of them evenly spaced) and the clipping of the x_0 prediction."""

    def __init__(self, num_steps: Optional[int] = None, clip_denoised: Optional[bool] = None) -> None:
        """Store the number of steps and whether to clamp x_0 predictions to [-1, 1] (``None``: the model's)."""
        super().__init__(num_steps)
        self.clip_denoised = _check_clip(clip_denoised)

    def make_timesteps(self, schedule: Any) -> Tensor:
        """``num_steps`` evenly strided indices of the schedule from T-1 down to 0 (every index when ``None``)."""
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"{type(self).__name__} runs on a NoiseSchedule, got {type(schedule).__name__}")
        kept = strided_timesteps(schedule.num_steps, self.num_steps)
        self._on_timesteps(schedule, kept)
        return kept.flip(0)

    def _on_timesteps(self, schedule: NoiseSchedule, kept: Tensor) -> None:
        """Precompute what :meth:`step` needs for the ascending ``kept`` indices (the position of each)."""
        self._position = {int(t): i for i, t in enumerate(kept.tolist())}

    def _locate(self, t: int) -> int:
        """The position of training index ``t`` among the kept steps (raise if it is not one of them)."""
        position = getattr(self, "_position", {}).get(int(t))
        if position is None:
            raise ValueError(f"{t} is not one of this sampler's timesteps; call set_timesteps first and step through "
                             "sampler.timesteps")
        return position

    def finish(self, x: Tensor) -> Tensor:
        """The final state, clamped to [-1, 1] when clipping."""
        return x.clamp(-1.0, 1.0) if self.clip_denoised else x

    @property
    def _clip(self) -> Optional[tuple[float, float]]:
        return (-1.0, 1.0) if self.clip_denoised else None


class AncestralSampler(_EpsilonSampler):
    """The ancestral sampler of Ho et al. 2020, alg. 2, over every step of the schedule: x_{t-1} = mu_tilde(x_t,
    x0_hat) + sigma_t z with x0_hat from the predicted noise, z ~ N(0, I), and no noise at the last step.

    ``variance`` is ``beta`` (sigma_t^2 = beta_t, the DDPM CIFAR-10 setting) or ``beta_tilde`` (the posterior
    variance, eq. 7); ``clip_denoised`` clamps each x_0 prediction and the samples to [-1, 1] (images). ``None``
    takes the model's setting (standalone: ``beta``, no clipping). ``set_timesteps(num_steps)`` with fewer steps
    makes it the :class:`RespacedSampler` chain.
    """

    inherited = ("variance", "clip_denoised")

    def __init__(self, variance: Optional[str] = None, clip_denoised: Optional[bool] = None) -> None:
        """Choose the reverse variance and the clipping (``None``: the model's)."""
        super().__init__(None, clip_denoised)
        self.variance = _check_variance(variance)


    def _on_timesteps(self, schedule: NoiseSchedule, kept: Tensor) -> None:
        super()._on_timesteps(schedule, kept)
        self.respaced = respace_schedule(schedule, kept)

    def step(
        self,
        model_output: Tensor,
        t: int,
        x: Tensor,
        generator: Optional[torch.Generator] = None,
        noise: Optional[Tensor] = None,
    ) -> Tensor:
        """x_{t-1} = mu_tilde(x_t, x0_hat(eps)) + sigma z on the (respaced) schedule; no noise is drawn at the last
        step (Ho et al. 2020, alg. 2 / eq. 11)."""
        i = self._locate(t)
        if noise is None:
            noise = randn(x.shape, generator, x.device, dtype=x.dtype) if i > 0 else torch.zeros_like(x)
        else:
            _check_noise(noise, x)
        return self.respaced.p_sample_step(model_output, x, i, clip_x0=self._clip, variance=self.variance or "beta",
                                           noise=noise)


class RespacedSampler(AncestralSampler):
    """The ancestral chain over ``num_steps`` evenly strided steps (both ends kept), with betas recomputed from
    alpha_bar at the kept steps (Nichol & Dhariwal 2021, sec. 4): an approximation of the full chain that trades
    sample quality for speed; ``variance="beta_tilde"`` suits short chains best. ``None`` arguments take the model's
    settings (``num_steps``: its ``sampling_steps``; standalone: every step, ``beta``, no clipping)."""

    inherited = ("num_steps", "variance", "clip_denoised")

    def __init__(
        self, num_steps: Optional[int] = None, variance: Optional[str] = None, clip_denoised: Optional[bool] = None
    ) -> None:
        """Choose the number of steps, the reverse variance and the clipping (``None``: the model's)."""
        super().__init__(variance, clip_denoised)
        self.num_steps = _check_num_steps(num_steps)



class DDIMSampler(_EpsilonSampler):
    """DDIM (Song et al. 2021, eq. 12) over ``num_steps`` evenly strided steps (both ends kept, as in respacing):

    x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - ab_prev) / (1 - ab) (1 - ab / ab_prev))  (eq. 16),

    with ab the alpha_bar of the current kept step and ab_prev that of the next one (1 after the last). ``eta = 0``
    adds no noise: the samples are a deterministic function of x_T. ``eta = 1`` makes sigma^2 the posterior variance
    of the respaced schedule, and the step is then exactly :class:`RespacedSampler`'s with ``beta_tilde``.
    ``clip_denoised`` clamps x0_hat to [-1, 1] and recomputes eps_hat from it (diffusers' ``use_clipped_model_output``,
    which keeps the eta = 1 equivalence). ``None`` arguments take the model's settings (``num_steps``: its
    ``sampling_steps``; standalone: every step, no clipping).
    """

    inherited = ("num_steps", "clip_denoised")

    def __init__(self, num_steps: Optional[int] = None, eta: float = 0.0, clip_denoised: Optional[bool] = None) -> None:
        """Choose the number of steps, the noise scale ``eta`` in [0, 1] and the clipping (``None``: the model's)."""
        super().__init__(num_steps, clip_denoised)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: the ancestral variance), got {eta!r}")
        self.eta = float(eta)


    def _on_timesteps(self, schedule: NoiseSchedule, kept: Tensor) -> None:
        super()._on_timesteps(schedule, kept)
        ab = schedule.alphas_cumprod.double().cpu()[kept].tolist()
        # per kept position i: (ab, ab_prev, sigma), in float64, applied as Python floats (no device reads)
        self._coefficients = []
        for i, a in enumerate(ab):
            a_prev = ab[i - 1] if i > 0 else 1.0
            var = (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)
            self._coefficients.append((a, a_prev, self.eta * math.sqrt(max(var, 0.0))))

    def step(
        self,
        model_output: Tensor,
        t: int,
        x: Tensor,
        generator: Optional[torch.Generator] = None,
        noise: Optional[Tensor] = None,
    ) -> Tensor:
        """One DDIM update (eq. 12) from kept step ``t`` to the next; noise is drawn only when sigma > 0."""
        _check_same_shape("model_output", model_output, x)
        a, a_prev, sigma = self._coefficients[self._locate(t)]
        eps = model_output
        x0 = math.sqrt(1.0 / a) * x - math.sqrt(1.0 / a - 1.0) * eps
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
        out = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma * sigma, 0.0)) * eps
        if sigma > 0.0:
            if noise is None:
                noise = randn(x.shape, generator, x.device, dtype=x.dtype)
            else:
                _check_noise(noise, x)
            out = out + sigma * noise
        return out


def _check_variance(variance: Optional[str]) -> Optional[str]:
    """Return ``variance`` unless it is neither ``None`` nor one of :data:`VARIANCES`."""
    if variance is not None and variance not in VARIANCES:
        raise ValueError(f"Unknown variance {variance!r}. Choose one of {list(VARIANCES)} (null: the model's).")
    return variance


class AnnealedLangevinSampler(DiffusionSampler):
    """Annealed Langevin dynamics for a noise-conditional score model (Song & Ermon 2019, alg. 1) on a
    :class:`~lightning_gen.diffusion.NoiseLadder`: from ``x ~ N(0, sigma_max^2 I)``, for each level from the largest
    down, ``steps_per_level`` updates

        x <- x + alpha_i / 2 * s(x, sigma_i) + sqrt(alpha_i) z,   alpha_i = step_size * sigma_i^2 / sigma_min^2,

    with ``s = model(x, level)`` the score, then (``final_denoise``) one Tweedie step ``x + sigma_min^2 s(x,
    sigma_min)``, the posterior mean E[x_0 | x] that removes the last level's noise (Jolicoeur-Martineau et al. 2021;
    Song et al. 2021). ``clip_denoised`` clamps the samples to [-1, 1] (images). ``None`` arguments take the model's
    settings (standalone: 2e-5 and 100, the paper's values for data in [0, 1] with sigma_min 0.01; a final denoising
    step; no clipping). The timesteps are the level indices, each repeated ``steps_per_level`` times.
    """

    inherited = ("step_size", "steps_per_level", "final_denoise", "clip_denoised")

    def __init__(
        self,
        step_size: Optional[float] = None,
        steps_per_level: Optional[int] = None,
        final_denoise: Optional[bool] = None,
        clip_denoised: Optional[bool] = None,
    ) -> None:
        """Choose the step size at the smallest level (epsilon), the updates per level, the final denoising step and
        the clipping (``None``: the model's)."""
        super().__init__(None)
        if step_size is not None and (isinstance(step_size, bool) or not isinstance(step_size, (int, float))
                                      or not 0.0 < step_size < math.inf):
            raise ValueError(f"step_size must be a positive number (epsilon, the step at sigma_min; e.g. 2e-5) or "
                             f"null (the model's), got {step_size!r}")
        self.step_size = None if step_size is None else float(step_size)
        self.steps_per_level = _check_num_steps(steps_per_level)
        if final_denoise is not None and not isinstance(final_denoise, bool):
            raise ValueError(f"final_denoise must be true, false or null (the model's setting), got {final_denoise!r}")
        self.final_denoise = final_denoise
        self.clip_denoised = _check_clip(clip_denoised)

    def make_timesteps(self, schedule: Any) -> Tensor:
        """The level indices from ``L-1`` down to 0, each repeated ``steps_per_level`` times."""
        sigmas = getattr(schedule, "sigmas", None)
        if not isinstance(sigmas, Tensor) or not hasattr(schedule, "num_levels"):
            raise TypeError(f"{type(self).__name__} runs on a NoiseLadder (a score model's noise levels), got "
                            f"{type(schedule).__name__}; a DDPM samples with ancestral, respaced or ddim")
        self._sigmas = sigmas.double().cpu().tolist()
        levels = torch.arange(schedule.num_levels - 1, -1, -1)
        return levels.repeat_interleave(self.steps_per_level or 100)

    def initial_noise(
        self, shape: Sequence[int], generator: Optional[torch.Generator] = None, device: Any = None
    ) -> Tensor:
        """x ~ N(0, sigma_max^2 I), float32, drawn from ``generator`` on its device, then moved."""
        return randn(shape, generator, device) * self._sigmas[-1]

    def step_sizes(self) -> list[float]:
        """alpha_i = step_size * sigma_i^2 / sigma_min^2 for each level (ascending, as the ladder)."""
        eps = self.step_size if self.step_size is not None else 2e-5
        return [eps * s * s / (self._sigmas[0] ** 2) for s in self._sigmas]

    def step(
        self,
        model_output: Tensor,
        t: int,
        x: Tensor,
        generator: Optional[torch.Generator] = None,
        noise: Optional[Tensor] = None,
    ) -> Tensor:
        """One Langevin update at level ``t`` with the score ``model_output = s(x, sigma_t)`` (alg. 1, line 6)."""
        _check_same_shape("model_output", model_output, x)
        if not hasattr(self, "_sigmas"):
            raise ValueError("call set_timesteps(schedule=ladder) first and step through sampler.timesteps")
        alpha = self.step_sizes()[int(t)]
        if noise is None:
            noise = randn(x.shape, generator, x.device, dtype=x.dtype)
        else:
            _check_noise(noise, x)
        return x + (0.5 * alpha) * model_output + math.sqrt(alpha) * noise

    def denoise(self, model_output: Tensor, x: Tensor) -> Tensor:
        """Tweedie's formula at the smallest level: ``x + sigma_min^2 s(x, sigma_min)`` = E[x_0 | x]."""
        return x + self._sigmas[0] ** 2 * model_output

    def finish(self, x: Tensor) -> Tensor:
        """The final state, clamped to [-1, 1] when clipping."""
        return x.clamp(-1.0, 1.0) if self.clip_denoised else x

    def sample(
        self,
        model: Denoiser,
        shape: Sequence[int],
        schedule: Any = None,
        generator: Optional[torch.Generator] = None,
        device: Any = None,
        x_T: Optional[Tensor] = None,
    ) -> Tensor:
        """Run the Langevin chain (:meth:`DiffusionSampler.sample`), then the final denoising step (when on) with
        ``model(x, 0)`` before :meth:`finish`."""
        clip, self.clip_denoised = self.clip_denoised, False  # finish() clamps only after the denoising step
        try:
            x = super().sample(model, shape, schedule, generator, device, x_T)
        finally:
            self.clip_denoised = clip
        if self.final_denoise is not False:
            with torch.no_grad():
                level = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
                x = self.denoise(full_precision(model(x, level)), x)
        return self.finish(x)


SAMPLERS: dict[str, type[DiffusionSampler]] = {
    "ancestral": AncestralSampler,
    "respaced": RespacedSampler,
    "ddim": DDIMSampler,
}


def make_sampler(name: Union[str, DiffusionSampler], **kwargs: Any) -> DiffusionSampler:
    """A sampler by name (``ancestral``, ``respaced``, ``ddim``; keyword arguments go to its constructor), or
    ``name`` itself when it is already a :class:`DiffusionSampler`."""
    if isinstance(name, DiffusionSampler):
        if kwargs:
            raise ValueError(f"make_sampler got a sampler object and arguments {sorted(kwargs)}; set them on it")
        return name
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in SAMPLERS:
        raise ValueError(
            f"Unknown sampler {name!r}. Choose one of {sorted(SAMPLERS)} or pass a DiffusionSampler "
            "(class_path: lightning_gen.diffusion.DDIMSampler, init_args: {num_steps: 50, eta: 0.0})."
        )
    return SAMPLERS[key](**kwargs)
