"""RealNVP (Dinh et al. 2017): exact maximum likelihood through an invertible flow, with dequantization for images."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.checks import value_checks_enabled
from lightning_gen.losses.elbo import standard_normal_log_prob
from lightning_gen.modules.base import (
    SingleObjectiveModule,
    batch_data,
    eval_mode,
    evaluation_generator,
    reject_unexpected_arguments,
)
from lightning_gen.modules.compile import CompileOption
from lightning_gen.nets.flows import COUPLINGS
from lightning_gen.noise import rand, truncated_randn
from lightning_gen.precision import full_precision

__all__ = ["RealNVP"]


class RealNVP(SingleObjectiveModule):
    """A normalizing flow trained by maximum likelihood: ``log p(x) = log N(f(x); 0, I) + log|det df/dx|``.

    ``flow`` maps data to latent (``forward(x) -> (z, log_det)``, ``inverse(z) -> x``, ``data_shape``), e.g.
    :class:`~lightning_gen.nets.VectorRealNVP` for toy vectors or :class:`~lightning_gen.nets.ImageRealNVP`.

    Continuous data (``dequantize=False``): :meth:`log_prob` is the exact log-density in nats, in the data's units.

    Discrete images (``dequantize=True``, Dinh et al. 2017, section 4.1): an image ``x`` in ``data_range`` is mapped
    to its integer levels ``k = round((x - lo) / (hi - lo) * (2**num_bits - 1))``, dequantized as
    ``v = (k + u) / 2**num_bits`` with ``u ~ U[0, 1)^D``, then logit-transformed
    ``y = logit(alpha + (1 - 2 alpha) v)``; the flow models ``y``. :meth:`log_prob` then returns, in nats per image,
    the one-sample estimate ``log p_V(v) - D * num_bits * log 2`` of the variational lower bound
    ``E_u[log p_V(v)] - D * num_bits * log 2 <= log P(k)`` on the log-probability that the model gives the discrete
    image ``k`` (``p_V`` includes the logit Jacobian). :meth:`bits_per_dim` is ``-log_prob / (D log 2)``, the number
    reported in the paper. Samples are mapped back to ``data_range`` (the centre of level ``k`` is
    ``lo + (hi - lo) k / (2**num_bits - 1)``) and clamped.

    Under mixed precision only the coupling nets run in bfloat16/float16: the pre/postprocessing, the
    log-determinants and the Gaussian log-density are float32, and :meth:`sample` returns float32.
    """

    # sharded training shards the coupling layers' conditioner nets only (lightning_gen.modules.sharding): the flow
    # runs its layers through inverse() too, and ActNorm initializes by writing its parameters
    supports_sharding = True

    progress_bar_keys = ("train/nll", "train/bits_per_dim")

    def __init__(
        self,
        flow: nn.Module,
        dequantize: bool = False,
        num_bits: int = 8,
        data_range: Sequence[float] = (-1.0, 1.0),
        logit_alpha: float = 0.05,
        temperature: float = 1.0,
        optimizer: Optional[OptimizerCallable] = None,
        scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Wrap ``flow``; ``dequantize`` for images stored with ``num_bits`` bits per value, spanning ``data_range``.

        Args:
            flow: an invertible net with ``forward(x) -> (z, log_det)``, ``inverse(z)`` and ``data_shape``.
            dequantize: treat the data as ``num_bits``-bit images in ``data_range`` (uniform dequantization and the
                logit transform with ``logit_alpha``); ``False`` for continuous data.
            num_bits: bits per value of the discrete data (8 for MNIST, CIFAR-10).
            data_range: ``(lo, hi)``, the values of level 0 and level ``2**num_bits - 1`` (``(-1, 1)`` for the
                package's image data modules).
            logit_alpha: the ``alpha`` of the logit transform (0.05 as in the paper; 0 turns the logit off).
            temperature: the std of the latent Gaussian that :meth:`sample` draws from (1: the model itself).
            optimizer: callable building the optimizer (default Adam(1e-3)).
            scheduler: optional LR scheduler, stepped after every optimizer step.
            detect_non_finite: stop training with :class:`~lightning_gen.modules.base.NonFiniteLossError` when a
                training loss is NaN or infinite; no optimizer steps on it or after it, and finding it never makes a
                step wait for the device (``False`` skips the check).
            compile: compile the flow with ``torch.compile`` (``True``, or a dict of its arguments, e.g.
                ``{mode: max-autotune}``) once, at set-up: its forward, which training and :meth:`log_prob` use
                (``inverse``, for sampling, stays eager; see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__()
        if not all(hasattr(flow, name) for name in ("inverse", "data_shape")):
            raise TypeError(
                f"RealNVP needs a flow with forward(x) -> (z, log_det), inverse(z) and data_shape; "
                f"{type(flow).__name__} lacks {[n for n in ('inverse', 'data_shape') if not hasattr(flow, n)]}"
            )
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {tuple(data_range)}")
        if num_bits < 1:
            raise ValueError(f"num_bits must be >= 1, got {num_bits}")
        if not 0.0 <= logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in [0, 0.5), got {logit_alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.flow = flow
        self.dequantize = bool(dequantize)
        self.num_bits = int(num_bits)
        self.data_range = (lo, hi)
        self.logit_alpha = float(logit_alpha)
        self.temperature = float(temperature)
        self._init_objective(nets=("flow",), optimizer=optimizer, scheduler=scheduler, default_lr=1e-3,
                             detect_non_finite=detect_non_finite, compile=compile)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample (the flow's ``data_shape``)."""
        return tuple(self.flow.data_shape)

    @property
    def num_dims(self) -> int:
        """Number of values per sample, D."""
        return math.prod(self.data_shape)

    def _check_shape(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"RealNVP's flow models samples of shape {self.data_shape}, got a batch of shape {tuple(x.shape)}. "
                f"Build the flow for this data (e.g. VectorRealNVP(dim=...) or ImageRealNVP(channels=..., "
                f"image_size=...))."
            )

    # -- dequantization and the logit transform -----------------------------------------------------------------
    def _levels(self, x: Tensor) -> Tensor:
        """Integer levels ``k`` (as floats) of data in ``data_range``."""
        lo, hi = self.data_range
        top = 2**self.num_bits - 1
        return torch.round((x - lo) / (hi - lo) * top).clamp(0, top)

    def preprocess(self, x: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Map data to the flow's input ``y`` and return ``(y, log|dy/dx|)`` per sample, where for images ``x`` is
        the dequantized ``v`` in [0, 1)^D and the term includes ``-D num_bits log 2`` (see the class docstring).
        Low-precision data is promoted to float32 first."""
        x = full_precision(x)
        if not self.dequantize:
            return x, x.new_zeros(x.shape[0])
        lo, hi = self.data_range
        # the range check waits for the device: not in the training batches that neither start an epoch nor log
        if x.numel() and value_checks_enabled() and (
            float(x.min()) < lo - 1e-3 * (hi - lo) or float(x.max()) > hi + 1e-3 * (hi - lo)
        ):
            raise ValueError(
                f"RealNVP(dequantize=True) expects data in data_range {self.data_range}, got values in "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; set data_range to the range of your images."
            )
        u = rand(x.shape, generator, x.device, dtype=x.dtype)
        v = (self._levels(x) + u) / 2**self.num_bits
        log_det = x.new_full((x.shape[0],), -self.num_dims * self.num_bits * math.log(2.0))
        if self.logit_alpha == 0.0:
            return v, log_det
        a = self.logit_alpha
        s = a + (1 - 2 * a) * v
        y = torch.log(s) - torch.log1p(-s)
        log_det = log_det + (math.log(1 - 2 * a) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return y, log_det

    def postprocess(self, y: Tensor) -> Tensor:
        """Map the flow's output back to data: the inverse of the logit transform, then into ``data_range``
        (float32 for a low-precision ``y``)."""
        y = full_precision(y)
        if not self.dequantize:
            return y
        a = self.logit_alpha
        v = (torch.sigmoid(y) - a) / (1 - 2 * a) if a > 0 else y
        lo, hi = self.data_range
        levels = 2**self.num_bits
        return (lo + (hi - lo) * (v * levels - 0.5) / (levels - 1)).clamp(lo, hi)

    # -- densities ----------------------------------------------------------------------------------------------
    def log_prob(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Per-sample log-likelihood in nats, ``(B,)``: exact for continuous data; for ``dequantize=True`` the
        one-sample dequantization lower-bound estimate on ``log P(image)`` (``generator`` draws its noise; the
        global RNG without one). Float32 (or the data's float64) even when the flow runs under autocast."""
        self._check_shape(x)
        y, log_det_pre = self.preprocess(x, generator)
        z, log_det = self.flow(y)
        return standard_normal_log_prob(full_precision(z)) + full_precision(log_det) + log_det_pre

    def bits_per_dim(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Per-sample ``-log_prob(x) / (D log 2)``, ``(B,)``: bits per value of the discrete image when
        ``dequantize=True`` (the paper's number), or of the continuous density otherwise."""
        return -self.log_prob(x, generator) / (self.num_dims * math.log(2.0))

    def sharding_units(self) -> list[nn.Module]:
        """The coupling layers' conditioner nets: each runs through its ``forward`` in both directions."""
        return [layer.net for layer in self.flow.modules() if isinstance(layer, COUPLINGS)]

    # -- sampling -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None,
        **condition: Any,
    ) -> Tensor:
        """Draw ``z ~ N(0, temperature^2 I)`` (from ``generator`` when given) and return ``flow.inverse(z)`` in data
        space, shape ``(num_samples, *data_shape)``; images are clamped to ``data_range``. Float32 (or the flow's
        float64) also under autocast. ``truncation``: the standard-normal draws are truncated to
        ``[-truncation, truncation]`` before the temperature scales them (the truncation trick, Brock et al. 2019)."""
        reject_unexpected_arguments(self, condition, hint="the model is unconditional")
        dtype = next(self.flow.parameters()).dtype
        z = truncated_randn((num_samples, *self.data_shape), truncation, generator, self.device, dtype=dtype)
        z = z * self.temperature
        with eval_mode(self):
            return self.postprocess(self.flow.inverse(z))

    # -- training and evaluation --------------------------------------------------------------------------------
    def _nll_terms(self, data: Tensor, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        nll = -self.log_prob(data, generator)
        terms = {"nll": nll.mean()}
        if self.dequantize:
            terms["bits_per_dim"] = terms["nll"] / (self.num_dims * math.log(2.0))
        return terms

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean negative log-likelihood (nats per sample); logs ``nll`` and, for images, ``bits_per_dim``."""
        terms = self._nll_terms(data)
        return terms["nll"], terms

    def _evaluate(self, batch: Any, batch_idx: int, stage: str) -> None:
        data = batch_data(batch)
        # a fixed dequantization noise per batch index: evaluation neither depends on nor moves the global RNG
        generator = evaluation_generator(batch_idx)
        terms = self._nll_terms(data, generator)
        self.log_dict({f"{stage}/{k}": v for k, v in terms.items()}, batch_size=data.shape[0], sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``val/nll`` (nats per sample) and, for images, ``val/bits_per_dim``."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``test/nll`` (nats per sample) and, for images, ``test/bits_per_dim``."""
        self._evaluate(batch, batch_idx, "test")
