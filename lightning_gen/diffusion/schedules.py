"""DDPM noise schedules with the forward process q(x_t | x_0) and the ancestral reverse step (Ho et al. 2020).

Indexing: a schedule of ``T`` steps has indices ``t = 0 .. T-1``; index ``t`` is DDPM's step ``t + 1``. The state at
index ``t`` is ``x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)``, and one reverse step at index
``t`` maps it to the state at index ``t - 1`` (the data itself when ``t == 0``). Methods take ``t`` as a LongTensor of
shape ``(B,)``, one step per sample broadcast over the remaining dimensions of ``x``, or as an int for the whole batch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from lightning_gen.checks import value_checks_enabled
from lightning_gen.noise import randint, randn

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

Timesteps = Union[Tensor, int]
VARIANCES = ("beta", "beta_tilde")


class GaussianMoments(NamedTuple):
    """Mean, variance and log-variance of a diagonal Gaussian; variances are shaped ``(B, 1, ..., 1)``."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor


class ReverseMoments(NamedTuple):
    """Moments of the reverse step p(x_{t-1} | x_t) plus the x_0 prediction they were built from."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    pred_x0: Tensor


class NoiseSchedule(nn.Module):
    """A DDPM variance schedule beta_0..beta_{T-1} and the closed-form quantities derived from it, as buffers."""

    # declared for type checkers; registered as buffers in __init__
    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    def __init__(self, betas: Union[Tensor, Sequence[float]]) -> None:
        """Derive every buffer from ``betas`` (1-D, each in (0, 1)) in float64, then store them as float32."""
        super().__init__()
        b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if b.dim() != 1 or b.numel() < 1:
            raise ValueError(
                f"NoiseSchedule needs a 1-D sequence of at least one beta, got shape {tuple(b.shape)}; "
                "pass one beta per diffusion step"
            )
        if not torch.isfinite(b).all() or not ((b > 0) & (b < 1)).all():
            raise ValueError(
                f"every beta must lie in the open interval (0, 1), got min {b.min().item():.6g} and max "
                f"{b.max().item():.6g}; clip them (e.g. cosine_schedule's max_beta) or use more steps"
            )
        alphas = 1.0 - b
        ab = torch.cumprod(alphas, dim=0)  # alpha_bar_t = prod_{s<=t} (1 - beta_s), Ho et al. 2020 eq. 4
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])  # alpha_bar_{t-1}, with alpha_bar = 1 for the data
        # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, Ho et al. 2020 eq. 7; 0 at t = 0
        post_var = b * (1.0 - ab_prev) / (1.0 - ab)
        # log(beta_tilde) is -inf at t = 0: clip it to beta_tilde_1 as the DDPM reference code does (with T = 1
        # there is no beta_tilde_1 and the value is never used for sampling, so fall back to beta_0)
        first = post_var[1:2] if b.numel() > 1 else b[:1]
        post_log_var = torch.log(torch.cat([first, post_var[1:]]))
        # mu_tilde_t(x_t, x_0) = coef1 * x_0 + coef2 * x_t, Ho et al. 2020 eq. 7
        coef1 = b * ab_prev.sqrt() / (1.0 - ab)
        coef2 = (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab)
        buffers = {
            "betas": b,
            "alphas": alphas,
            "alphas_cumprod": ab,
            "alphas_cumprod_prev": ab_prev,
            "sqrt_alphas_cumprod": ab.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ab).sqrt(),
            "sqrt_recip_alphas_cumprod": ab.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ab - 1.0).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_log_var,
            "posterior_mean_coef1": coef1,
            "posterior_mean_coef2": coef2,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32))

    @property
    def num_steps(self) -> int:
        """The number of diffusion steps T."""
        return self.betas.shape[0]

    def extra_repr(self) -> str:
        """Summary shown by ``repr``."""
        betas = self.betas
        return f"num_steps={self.num_steps}, beta_min={betas.min().item():.4g}, beta_max={betas.max().item():.4g}"

    # ------------------------------------------------------------------ helpers
    def _timesteps(self, t: Timesteps, x: Tensor) -> Tensor:
        """Validate ``t`` against ``x``'s batch and the schedule length; return it as a LongTensor of shape (B,)."""
        if x.dim() < 1:
            raise ValueError("x must have a leading batch dimension, got a 0-d tensor; use x.reshape(1) for one scalar")
        batch = x.shape[0]
        if isinstance(t, bool):
            raise TypeError("t must be an int or a LongTensor of shape (batch,), got a bool")
        if isinstance(t, int):
            t = torch.full((batch,), t, dtype=torch.long, device=self.betas.device)
        elif not isinstance(t, Tensor):
            raise TypeError(f"t must be an int or a LongTensor of shape (batch,), got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer step indices (e.g. torch.long), got dtype {t.dtype}; use t.long()")
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},), one step index per sample of x, got {tuple(t.shape)}")
        if batch > 0 and value_checks_enabled():  # reading the range waits for the device
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= self.num_steps:
                raise ValueError(
                    f"step indices must lie in 0..{self.num_steps - 1} (this schedule has {self.num_steps} steps; "
                    f"index t is DDPM's step t+1), got values in [{lo}, {hi}]"
                )
        return t.to(device=self.betas.device, dtype=torch.long)

    @staticmethod
    def _gather(buffer: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """``buffer[t]`` shaped ``(B, 1, ..., 1)`` to broadcast over ``x``, on ``x``'s device and dtype."""
        out = buffer.index_select(0, t).to(device=x.device, dtype=x.dtype)
        return out.reshape((x.shape[0],) + (1,) * (x.dim() - 1))

    @staticmethod
    def _same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
        """Raise if ``a`` and ``b`` differ in shape (silent broadcasting would give wrong maths)."""
        if a.shape != b.shape:
            raise ValueError(
                f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )

    # ------------------------------------------------------------------ forward process
    def sample_timesteps(
        self, batch: int, generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None
    ) -> Tensor:
        """Step indices drawn uniformly from 0..T-1, a LongTensor of shape ``(batch,)`` on ``device`` (default: the
        schedule's) (Ho et al. 2020, alg. 1); ``generator`` draws them on its own device."""
        if batch < 0:
            raise ValueError(f"batch must be >= 0, got {batch}")
        device = self.betas.device if device is None else device
        return randint(self.num_steps, (batch,), generator, device)

    def q_mean_variance(self, x0: Tensor, t: Timesteps) -> GaussianMoments:
        """Moments of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. 2020, eq. 4)."""
        t = self._timesteps(t, x0)
        one_minus = self._gather(1.0 - self.alphas_cumprod, t, x0)
        return GaussianMoments(self._gather(self.sqrt_alphas_cumprod, t, x0) * x0, one_minus, one_minus.log())

    def q_sample(
        self, x0: Tensor, t: Timesteps, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Draw x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with eps ~ N(0, I) (Ho et al. 2020, eq. 4)."""
        t = self._timesteps(t, x0)
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, dtype=x0.dtype)
        else:
            self._same_shape("noise", noise, "x0", x0)
        signal = self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
        return signal + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Timesteps) -> GaussianMoments:
        """Moments of the forward posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) (Ho et al. eq. 6-7)."""
        self._same_shape("x0", x0, "x_t", x_t)
        return self._q_posterior(x0, x_t, self._timesteps(t, x_t))

    def _q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> GaussianMoments:
        """q_posterior_mean_variance for already validated inputs."""
        coef1, coef2 = self._gather(self.posterior_mean_coef1, t, x_t), self._gather(self.posterior_mean_coef2, t, x_t)
        mean = coef1 * x0 + coef2 * x_t
        return GaussianMoments(
            mean,
            self._gather(self.posterior_variance, t, x_t),
            self._gather(self.posterior_log_variance_clipped, t, x_t),
        )

    # ------------------------------------------------------------------ reverse process
    def predict_x0_from_eps(self, x_t: Tensor, t: Timesteps, eps: Tensor) -> Tensor:
        """Invert q_sample: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (Ho et al. 2020, eq. 4)."""
        self._same_shape("eps", eps, "x_t", x_t)
        return self._predict_x0(x_t, self._timesteps(t, x_t), eps)

    def _predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """predict_x0_from_eps for already validated inputs."""
        recip = self._gather(self.sqrt_recip_alphas_cumprod, t, x_t)
        recipm1 = self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t)
        return recip * x_t - recipm1 * eps

    def p_mean_variance(
        self,
        eps_pred: Tensor,
        x_t: Tensor,
        t: Timesteps,
        clip_x0: Optional[tuple[float, float]] = None,
        variance: str = "beta",
    ) -> ReverseMoments:
        """Moments of p(x_{t-1} | x_t) for an epsilon-prediction model: mu_tilde(x_t, x0_hat(eps)) (Ho et al. eq. 11).

        ``clip_x0=(lo, hi)`` clamps the x_0 prediction before it enters the mean (DDPM clips images to (-1, 1)).
        ``variance`` is "beta" (sigma_t^2 = beta_t) or "beta_tilde" (sigma_t^2 = posterior variance, eq. 7); Ho et
        al. 2020, sec. 3.2, report similar samples with both, "beta" being optimal for x_0 ~ N(0, I) and
        "beta_tilde" for a point mass. The default "beta" is the DDPM CIFAR-10 setting ("fixedlarge").
        """
        self._check_reverse_args(eps_pred, x_t, clip_x0, variance)
        return self._p_mean_variance(eps_pred, x_t, self._timesteps(t, x_t), clip_x0, variance)

    def _check_reverse_args(
        self, eps_pred: Tensor, x_t: Tensor, clip_x0: Optional[tuple[float, float]], variance: str
    ) -> None:
        """Validate the arguments shared by p_mean_variance and p_sample_step."""
        if variance not in VARIANCES:
            raise ValueError(f"Unknown variance {variance!r}. Choose one of {list(VARIANCES)}.")
        self._same_shape("eps_pred", eps_pred, "x_t", x_t)
        if clip_x0 is not None:
            if len(clip_x0) != 2 or not clip_x0[0] < clip_x0[1]:
                raise ValueError(
                    f"clip_x0 must be (low, high) with low < high, got {clip_x0}; "
                    "e.g. (-1.0, 1.0) for images in [-1, 1]"
                )

    def _p_mean_variance(
        self, eps_pred: Tensor, x_t: Tensor, t: Tensor, clip_x0: Optional[tuple[float, float]], variance: str
    ) -> ReverseMoments:
        """p_mean_variance for already validated inputs."""
        pred_x0 = self._predict_x0(x_t, t, eps_pred)
        if clip_x0 is not None:
            pred_x0 = pred_x0.clamp(clip_x0[0], clip_x0[1])
        mean, post_var, post_log_var = self._q_posterior(pred_x0, x_t, t)
        if variance == "beta":
            betas = self._gather(self.betas, t, x_t)
            return ReverseMoments(mean, betas, betas.log(), pred_x0)
        return ReverseMoments(mean, post_var, post_log_var, pred_x0)

    def p_sample_step(
        self,
        eps_pred: Tensor,
        x_t: Tensor,
        t: Timesteps,
        generator: Optional[torch.Generator] = None,
        clip_x0: Optional[tuple[float, float]] = None,
        variance: str = "beta",
        noise: Optional[Tensor] = None,
    ) -> Tensor:
        """One ancestral step x_{t-1} = mu + sigma_t z, z ~ N(0, I), with z = 0 where t == 0 (Ho et al. alg. 2).

        ``z`` is drawn with ``generator`` unless given as ``noise``; see p_mean_variance for ``clip_x0`` and ``variance``.
        """
        self._check_reverse_args(eps_pred, x_t, clip_x0, variance)
        t = self._timesteps(t, x_t)
        mean, var, _, _ = self._p_mean_variance(eps_pred, x_t, t, clip_x0, variance)
        if noise is None:
            noise = randn(x_t.shape, generator, x_t.device, dtype=x_t.dtype)
        else:
            self._same_shape("noise", noise, "x_t", x_t)
        nonzero = (t != 0).to(device=x_t.device, dtype=x_t.dtype).reshape(var.shape)
        return mean + nonzero * var.sqrt() * noise


def _check_steps(num_steps: int) -> None:
    """Raise unless ``num_steps`` is a positive int."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (the number of diffusion steps T), got {num_steps!r}")


def linear_schedule(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, scale_with_num_steps: bool = True
) -> NoiseSchedule:
    """Betas linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020, sec. 4), rescaled by 1000 / T by default.

    DDPM used exactly 1e-4 .. 0.02 with T = 1000. With ``scale_with_num_steps`` (the default, as in Nichol & Dhariwal
    2021's code) both endpoints are multiplied by 1000 / T: T = 1000 gives DDPM's schedule unchanged and smaller T keep
    alpha_bar_{T-1} of the same order as DDPM's 4.0e-5 (2.0e-5 at T = 100), whereas unscaled betas with T = 100 leave
    alpha_bar_{T-1} = 0.36, far from pure noise. Scaled betas must stay below 1, so scaling needs T >= 21.
    """
    _check_steps(num_steps)
    scale = 1000.0 / num_steps if scale_with_num_steps else 1.0
    start, end = beta_start * scale, beta_end * scale
    if not (0.0 < start <= end < 1.0):
        hint = (
            f" (after scaling by 1000/num_steps = {scale:.4g}; use more steps or scale_with_num_steps=False)"
            if scale_with_num_steps
            else ""
        )
        raise ValueError(
            "linear_schedule needs 0 < beta_start <= beta_end < 1, "
            f"got beta_start={start:.6g}, beta_end={end:.6g}{hint}"
        )
    return NoiseSchedule(torch.linspace(start, end, num_steps, dtype=torch.float64))


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Cosine schedule alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2) (Nichol & Dhariwal eq. 17).

    Index t holds alpha_bar((t + 1) / T); betas are 1 - alpha_bar_t / alpha_bar_{t-1}, clipped at ``max_beta``
    (0.999 in the paper) to avoid the singularity at t = T, so only the clipped steps deviate from eq. 17.
    """
    _check_steps(num_steps)
    if not s >= 0:
        raise ValueError(f"the cosine offset s must be >= 0 (the paper uses 0.008), got {s}")
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must lie in (0, 1) (the paper uses 0.999), got {max_beta}")
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    return NoiseSchedule(betas)


SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {"linear": linear_schedule, "cosine": cosine_schedule}


def make_schedule(name: str, num_steps: int = 1000, **kwargs: Any) -> NoiseSchedule:
    """Build a schedule by name ("linear" or "cosine"); extra keyword arguments go to its constructor."""
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in SCHEDULES:
        raise ValueError(
            f"Unknown noise schedule {name!r}. Choose one of {sorted(SCHEDULES)} or build NoiseSchedule(betas)."
        )
    return SCHEDULES[key](num_steps, **kwargs)
