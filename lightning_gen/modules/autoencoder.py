"""Autoencoders: plain and denoising autoencoders (sampling through a Gaussian fitted to their codes) and the VAE.

Nets are injected: an encoder ``(B, *data_shape) -> (B, out_dim)`` and a decoder ``(B, latent_dim) -> (B,
*data_shape)`` raw outputs (see :mod:`lightning_gen.nets.autoencoder`). Data lie in ``data_range`` ((-1, 1) for the
image data modules) or are unbounded (``data_range: null``, e.g. the toy mixtures).

Under mixed precision the nets' outputs are cast to float32 before every loss and log-density term, and ``sample()``
returns float32.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.losses.elbo import (
    bernoulli_log_likelihood,
    gaussian_kl,
    gaussian_log_likelihood,
    gaussian_log_prob,
    importance_weighted_bound,
    reparameterize,
    standard_normal_log_prob,
)
from lightning_gen.modules.base import (
    SingleObjectiveModule,
    batch_data,
    eval_mode,
    evaluation_generator,
    reject_unexpected_arguments,
)
from lightning_gen.modules.compile import CompileOption
from lightning_gen.modules.shapes import (
    declared_data_shape,
    generator_output_problem,
    input_problem,
    raise_shape_problems,
)
from lightning_gen.noise import check_truncation, rand, randn, truncated_randn
from lightning_gen.precision import full_precision

__all__ = ["Autoencoder", "DenoisingAutoencoder", "VAE"]

_LIKELIHOODS = ("bernoulli", "gaussian")


class _LatentVariableModule(SingleObjectiveModule):
    """What autoencoders and VAEs share: nets, the data range, decoding to data space, ``generate``/``noise``."""

    supports_sharding = True  # every net runs through its forward (lightning_gen.modules.sharding)

    def _init_nets(
        self, encoder: nn.Module, decoder: nn.Module, likelihood: str, data_range: Optional[Sequence[float]]
    ) -> None:
        if likelihood not in _LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
        if not hasattr(decoder, "latent_dim"):
            raise TypeError(f"the decoder ({type(decoder).__name__}) needs a `latent_dim` attribute")
        if data_range is not None:
            lo, hi = (float(v) for v in data_range)
            if not lo < hi:
                raise ValueError(f"data_range must be (low, high) with low < high, got {tuple(data_range)}")
            self.data_range: Optional[tuple[float, float]] = (lo, hi)
        else:
            self.data_range = None
        if likelihood == "bernoulli" and self.data_range is None:
            raise ValueError("a Bernoulli decoder needs a bounded `data_range` (e.g. [-1, 1] for the image data modules)")
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood

    @property
    def latent_dim(self) -> int:
        """Size of the latent code."""
        return int(self.decoder.latent_dim)

    def setup(self, stage: str) -> None:
        """Check the encoder and decoder against the shape the data module declares (``data_shape`` or
        ``image_shape``) before any sanity check, metric set-up or training; others are checked at the first batch."""
        super().setup(stage)
        wanted = declared_data_shape(self.trainer.datamodule) if self._trainer is not None else None
        if wanted is None or stage == "predict":
            return
        data_name = type(self.trainer.datamodule).__name__
        raise_shape_problems(
            input_problem(self.encoder, self.encoder, wanted, data_name, "encoder"),
            generator_output_problem(self.decoder, self.decoder, self.latent_dim, wanted, data_name, "decoder"),
        )

    def _to_unit(self, x: Tensor) -> Tensor:
        """Map data in ``data_range`` to [0, 1] (Bernoulli targets), clamping rounding errors."""
        assert self.data_range is not None
        lo, hi = self.data_range
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def _from_unit(self, p: Tensor) -> Tensor:
        assert self.data_range is not None
        lo, hi = self.data_range
        return lo + (hi - lo) * p

    def decode_mean(self, z: Tensor) -> Tensor:
        """The decoder's mean in data space: ``sigmoid(logits)`` mapped to ``data_range`` for a Bernoulli decoder,
        the raw output (clamped to ``data_range`` when there is one) for a Gaussian one; float32."""
        out = full_precision(self.decoder(z))
        if self.likelihood == "bernoulli":
            return self._from_unit(torch.sigmoid(out))
        return out.clamp(*self.data_range) if self.data_range is not None else out

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Decode given codes ``z`` in eval mode to data-space means (used by the interpolation callback)."""
        if labels is not None:
            raise ValueError(f"{type(self).__name__} is unconditional but got labels")
        with eval_mode(self.decoder):
            return self.decode_mean(z.to(self.device))


class Autoencoder(_LatentVariableModule):
    """A deterministic autoencoder trained to reconstruct its input (with ``noise_std > 0``: a denoising one).

    ``reconstruction`` is ``"mse"`` (squared error, summed over each sample's dimensions) or ``"bernoulli"``
    (cross-entropy of the decoder's logits against the data mapped to [0, 1]). An autoencoder has no prior, so
    :meth:`sample` decodes codes drawn from a **Gaussian fitted to the codes of the training data**: the mean and
    covariance of the clean inputs' codes are accumulated during each training epoch and fixed at its end (all
    ranks pooled). Before the first epoch ends the statistics seen so far are used. :meth:`fit_latent_gaussian`
    refits them from a data loader with the final encoder. This is a convenience for looking at what the decoder
    produces, not a density model.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        reconstruction: str = "mse",
        noise_std: float = 0.0,
        data_range: Optional[Sequence[float]] = (-1.0, 1.0),
        optimizer: Optional[OptimizerCallable] = None,
        scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Build the autoencoder from injected nets.

        Args:
            encoder: maps ``(B, *data_shape)`` to ``(B, latent_dim)`` codes.
            decoder: maps codes to ``(B, *data_shape)``: values for ``mse``, logits for ``bernoulli``.
            reconstruction: ``mse`` or ``bernoulli``.
            noise_std: std of the Gaussian corruption ``x + noise_std * eps`` of the encoder's input during training
                (in data units; 0: a plain autoencoder). The target is always the clean input.
            data_range: the data's ``(low, high)``; reconstructions and samples are clamped to it. ``None``:
                unbounded data (``mse`` only).
            optimizer: callable building the optimizer (default Adam(1e-3)).
            scheduler: optional LR scheduler, stepped after every optimizer step.
            detect_non_finite: stop training with :class:`~lightning_gen.modules.base.NonFiniteLossError` when a
                training loss is NaN or infinite; no optimizer steps on it or after it, and finding it never makes a
                step wait for the device (``False`` skips the check).
            compile: compile the encoder and the decoder with ``torch.compile`` (``True``, or a dict of its
                arguments, e.g. ``{mode: max-autotune}``) once, at set-up (see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__()
        if reconstruction not in ("mse", "bernoulli"):
            raise ValueError(f"reconstruction must be 'mse' or 'bernoulli', got {reconstruction!r}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self._init_objective(("encoder", "decoder"), optimizer, scheduler, default_lr=1e-3,
                             detect_non_finite=detect_non_finite, compile=compile)
        self._init_nets(encoder, decoder, "bernoulli" if reconstruction == "bernoulli" else "gaussian", data_range)
        self.reconstruction = reconstruction
        self.noise_std = float(noise_std)
        d = self.latent_dim
        # the fitted code Gaussian (used by sample) and this epoch's running sums (float64 for a stable covariance)
        self.register_buffer("latent_mean", torch.zeros(d))
        self.register_buffer("latent_scale_tril", torch.eye(d))
        self.register_buffer("latent_fitted", torch.zeros((), dtype=torch.bool))
        # plain attributes, not buffers: DDP broadcasts rank 0's buffers at every forward, which would overwrite them
        self._code_sums: Optional[list[Tensor]] = None  # [sum z, sum z z^T, count] of this epoch, this rank

    def encode(self, x: Tensor) -> Tensor:
        """The code of each input, ``(B, latent_dim)``, in float32 when the encoder ran under autocast."""
        z = full_precision(self.encoder(x))
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"the encoder must return (B, {self.latent_dim}) codes (the decoder's latent_dim), got {tuple(z.shape)}"
            )
        return z

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Encode and decode ``x`` in eval mode; returns data-space reconstructions."""
        with eval_mode(self.encoder, self.decoder):
            return self.decode_mean(self.encode(x.to(self.device)))

    def reconstruction_loss(self, out: Tensor, x: Tensor) -> Tensor:
        """Per-sample reconstruction loss ``(B,)`` of raw decoder outputs ``out`` against clean data ``x`` (float32
        for low-precision outputs)."""
        out = full_precision(out)
        if out.shape != x.shape:
            raise ValueError(f"the decoder returned {tuple(out.shape)} for data of shape {tuple(x.shape)}")
        if self.reconstruction == "bernoulli":
            return -bernoulli_log_likelihood(out, self._to_unit(x))
        return F.mse_loss(out, x, reduction="none").flatten(1).sum(1)

    def corrupt(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """The encoder's training input: ``x + noise_std * eps`` (``x`` itself when ``noise_std`` is 0)."""
        return x + self.noise_std * randn(x.shape, generator, x.device) if self.noise_std > 0 else x

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean per-sample reconstruction loss of the (corrupted) input; accumulates the clean codes' moments."""
        z = self.encode(self.corrupt(data))
        loss = self.reconstruction_loss(self.decoder(z), data).mean()
        clean = z if self.noise_std == 0 else self._encode_no_grad(data)
        self._accumulate_codes(clean.detach())
        return loss, {"loss": loss}

    def _encode_no_grad(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.encode(x)

    def _accumulate_codes(self, z: Tensor) -> None:
        z = z.double()
        if self._code_sums is None:
            self._code_sums = [torch.zeros_like(z[0]), torch.zeros(z.shape[1], z.shape[1], dtype=z.dtype, device=z.device),
                               torch.zeros((), dtype=z.dtype, device=z.device)]
        self._code_sums[0] += z.sum(0)
        self._code_sums[1] += z.T @ z
        self._code_sums[2] += z.shape[0]

    def _fit_from_sums(self, total: Tensor, outer: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        if float(count) < 2:
            raise RuntimeError("at least 2 codes are needed to fit the latent Gaussian")
        mean = total / count
        cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
        cov = 0.5 * (cov + cov.T) + 1e-6 * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return mean.float(), torch.linalg.cholesky(cov).float()

    def on_train_epoch_start(self) -> None:
        """Start a new epoch's code statistics."""
        super().on_train_epoch_start()
        self._code_sums = None

    def on_train_epoch_end(self) -> None:
        """Fix the latent Gaussian from this epoch's codes, pooled over all ranks (after the finite-loss check)."""
        super().on_train_epoch_end()
        d = self.latent_dim
        local = self._code_sums or [torch.zeros(d, dtype=torch.float64, device=self.device),
                                    torch.zeros(d, d, dtype=torch.float64, device=self.device),
                                    torch.zeros((), dtype=torch.float64, device=self.device)]
        sums = [self.trainer.strategy.reduce(t.clone(), reduce_op="sum") for t in local]  # every rank takes part
        if float(sums[2]) >= 2:
            mean, tril = self._fit_from_sums(*sums)
            self.latent_mean.copy_(mean)
            self.latent_scale_tril.copy_(tril)
            self.latent_fitted.fill_(True)

    @torch.no_grad()
    def fit_latent_gaussian(self, dataloader: Any) -> None:
        """Refit the latent Gaussian that :meth:`sample` uses to the codes of every batch of ``dataloader``."""
        total = torch.zeros(self.latent_dim, dtype=torch.float64, device=self.device)
        outer = torch.zeros(self.latent_dim, self.latent_dim, dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        with eval_mode(self.encoder):
            for batch in dataloader:
                z = self.encode(batch_data(batch).to(self.device)).double()
                total += z.sum(0)
                outer += z.T @ z
                count += z.shape[0]
        mean, tril = self._fit_from_sums(total, outer, count)
        self.latent_mean.copy_(mean)
        self.latent_scale_tril.copy_(tril)
        self.latent_fitted.fill_(True)

    def noise(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None
    ) -> Tensor:
        """Codes drawn from the fitted latent Gaussian, ``(num_samples, latent_dim)``; ``truncation`` truncates its
        standard-normal draws to ``[-truncation, truncation]`` before the fitted mean and scale apply."""
        if bool(self.latent_fitted):
            mean, tril = self.latent_mean, self.latent_scale_tril
        elif self._code_sums is not None and float(self._code_sums[2]) >= 2:
            mean, tril = self._fit_from_sums(*self._code_sums)
        else:
            raise RuntimeError(
                f"{type(self).__name__} samples from a Gaussian fitted to its training codes, and none is fitted yet: "
                "train it for at least one batch, or call `fit_latent_gaussian(dataloader)` first."
            )
        eps = truncated_randn((num_samples, self.latent_dim), truncation, generator, self.device)
        return mean + eps @ tril.T

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None,
        **condition: Any,
    ) -> Tensor:
        """Decode ``num_samples`` codes from the fitted latent Gaussian (see the class docstring); float32.
        ``truncation``: the truncation trick (Brock et al. 2019) on the Gaussian's standard-normal draws."""
        reject_unexpected_arguments(self, condition, hint="the model is unconditional")
        return full_precision(self.generate(self.noise(num_samples, generator, check_truncation(truncation))))

    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> None:
        data = batch_data(batch)
        generator = evaluation_generator(batch_idx)  # never the global RNG, the same draws on every device
        with torch.no_grad():
            z = self.encode(self.corrupt(data, generator))
            loss = self.reconstruction_loss(self.decoder(z), data).mean()
        self.log(f"{prefix}/loss", loss, sync_dist=True, batch_size=data.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Reconstruction loss on held-out data (corruption drawn from a fixed seed per batch)."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Reconstruction loss on test data."""
        self._evaluate(batch, batch_idx, "test")


class DenoisingAutoencoder(Autoencoder):
    """An :class:`Autoencoder` trained to undo Gaussian corruption ``x + noise_std * eps`` (Vincent et al. 2008);
    ``noise_std`` (default 0.5, in data units: a quarter of the [-1, 1] image range) must be positive."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        noise_std: float = 0.5,
        detect_non_finite: bool = True,
        **kwargs: Any,
    ) -> None:
        """Build the denoising autoencoder from injected nets.

        Args:
            encoder: maps ``(B, *data_shape)`` to ``(B, latent_dim)`` codes.
            decoder: maps codes to ``(B, *data_shape)``.
            noise_std: std of the Gaussian corruption (in data units), > 0.
            detect_non_finite: stop training with :class:`~lightning_gen.modules.base.NonFiniteLossError` on a NaN
                or infinite training loss (``False`` skips the check).
            **kwargs: the other :class:`Autoencoder` arguments (``reconstruction``, ``data_range``, ``optimizer``,
                ``scheduler``, ``compile``).
        """
        if noise_std <= 0:
            raise ValueError(f"DenoisingAutoencoder needs noise_std > 0, got {noise_std} (use Autoencoder for 0)")
        super().__init__(encoder, decoder, noise_std=noise_std, detect_non_finite=detect_non_finite, **kwargs)


class VAE(_LatentVariableModule):
    """Variational autoencoder (Kingma & Welling 2014) with a standard normal prior and a diagonal Gaussian
    encoder, trained on the beta-weighted ELBO (Higgins et al. 2017); the ELBO's terms are logged one by one.

    The encoder returns ``(B, 2 * latent_dim)``: the posterior mean, then its log-variance. The decoder is
    Bernoulli (logits; data mapped from ``data_range`` to [0, 1], and with ``binarize`` each pixel is drawn as
    Bernoulli of its grey level afresh at each step: dynamic binarization, as in the IWAE paper) or Gaussian
    (mean; a fixed ``decoder_std`` or a learned per-dimension one when ``None``).

    :meth:`log_prob` is a **lower bound** on log p(x): the ELBO for ``num_samples=1`` and the importance-weighted
    bound (Burda et al. 2016) for more. ``test`` logs ``test/nll`` = minus that bound with ``test_num_samples``
    samples, in nats per example, next to ``test/elbo``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        binarize: bool = True,
        decoder_std: Optional[float] = None,
        data_range: Optional[Sequence[float]] = (-1.0, 1.0),
        test_num_samples: int = 100,
        sample_mean: bool = True,
        optimizer: Optional[OptimizerCallable] = None,
        scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Build the VAE from injected nets.

        Args:
            encoder: maps ``(B, *data_shape)`` to ``(B, 2 * latent_dim)`` (mean, log-variance).
            decoder: maps ``(B, latent_dim)`` to ``(B, *data_shape)``: logits (Bernoulli) or means (Gaussian).
            likelihood: ``bernoulli`` or ``gaussian``.
            beta: weight of the KL term (1: the ELBO).
            binarize: Bernoulli only: train and evaluate on binarized data (a Bernoulli draw of each grey level;
                fixed seeds in validation/test). Without it the grey levels are the targets, which is the usual
                relaxation but not a normalized likelihood.
            decoder_std: Gaussian only: a fixed std in data units; ``None`` learns one per data dimension.
            data_range: the data's ``(low, high)``; ``None`` for unbounded data (Gaussian only).
            test_num_samples: importance samples per test example for ``test/nll`` (the IWAE paper used 5000).
            sample_mean: :meth:`sample` returns the decoder's mean (True) or a draw from the decoder (False).
            optimizer: callable building the optimizer (default Adam(1e-3)).
            scheduler: optional LR scheduler, stepped after every optimizer step.
            detect_non_finite: stop training with :class:`~lightning_gen.modules.base.NonFiniteLossError` when a
                training loss is NaN or infinite; no optimizer steps on it or after it, and finding it never makes a
                step wait for the device (``False`` skips the check).
            compile: compile the encoder and the decoder with ``torch.compile`` (``True``, or a dict of its
                arguments, e.g. ``{mode: max-autotune}``) once, at set-up (see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if test_num_samples < 1:
            raise ValueError(f"test_num_samples must be >= 1, got {test_num_samples}")
        if decoder_std is not None and decoder_std <= 0:
            raise ValueError(f"decoder_std must be positive, got {decoder_std}")
        self._init_objective(("encoder", "decoder"), optimizer, scheduler, default_lr=1e-3,
                             detect_non_finite=detect_non_finite, compile=compile)
        self._init_nets(encoder, decoder, likelihood, data_range)
        self.beta = float(beta)
        self.binarize = bool(binarize) and likelihood == "bernoulli"
        self.test_num_samples = int(test_num_samples)
        self.sample_mean = bool(sample_mean)
        self.decoder_std = decoder_std
        if likelihood == "gaussian" and decoder_std is None:
            shape = getattr(decoder, "output_shape", None)
            if shape is None:
                raise TypeError("a learned decoder_std needs the decoder's `output_shape` attribute; or set decoder_std")
            self.decoder_logvar: Optional[nn.Parameter] = nn.Parameter(torch.zeros(*shape))
        else:
            self.decoder_logvar = None

    # -- the model's parts --------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log-variance, each ``(B, latent_dim)``, in float32 under autocast."""
        h = full_precision(self.encoder(x))
        if h.dim() != 2 or h.shape[1] != 2 * self.latent_dim:
            raise ValueError(
                f"the VAE encoder must return (B, 2 * latent_dim) = (B, {2 * self.latent_dim}) (mean, log-variance), "
                f"got {tuple(h.shape)}: set its out_dim to twice the decoder's latent_dim"
            )
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def targets(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """What the decoder scores: [0, 1] values (binarized with ``binarize``) for Bernoulli, ``x`` for Gaussian."""
        if self.likelihood == "gaussian":
            return x
        p = self._to_unit(x)
        if not self.binarize:
            return p
        u = rand(p.shape, generator, p.device)
        return (u < p).to(p.dtype)

    def log_likelihood(self, out: Tensor, target: Tensor) -> Tensor:
        """log p(x|z) per sample, ``(B,)``, of raw decoder outputs against :meth:`targets` (float32 for
        low-precision outputs)."""
        out = full_precision(out)
        if out.shape != target.shape:
            raise ValueError(f"the decoder returned {tuple(out.shape)} for data of shape {tuple(target.shape)}")
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(out, target)
        if self.decoder_logvar is not None:
            logvar: Any = self.decoder_logvar
        else:
            logvar = 2.0 * math.log(float(self.decoder_std or 1.0))
        return gaussian_log_likelihood(target, out, logvar)

    def elbo_terms(self, x: Tensor, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """One-sample per-example terms ``(B,)``: ``log_likelihood`` (E_q log p(x|z)), ``kl`` and ``elbo``."""
        target = self.targets(x, generator)
        mu, logvar = self.encode(x if self.likelihood == "gaussian" or not self.binarize else self._from_unit(target))
        z = reparameterize(mu, logvar, generator)
        ll = self.log_likelihood(self.decoder(z), target)
        kl = gaussian_kl(mu, logvar, reduction="none")
        return {"log_likelihood": ll, "kl": kl, "elbo": ll - kl}

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Minus the beta-ELBO, averaged over the batch; logs ``loss``, ``elbo``, ``reconstruction`` and ``kl``."""
        terms = self.elbo_terms(data)
        loss = -(terms["log_likelihood"] - self.beta * terms["kl"]).mean()
        return loss, {"loss": loss, "elbo": terms["elbo"].mean(), "reconstruction": -terms["log_likelihood"].mean(),
                      "kl": terms["kl"].mean()}

    @torch.no_grad()
    def log_prob(
        self, x: Tensor, num_samples: int = 1, generator: Optional[torch.Generator] = None, chunk_size: int = 64
    ) -> Tensor:
        """A lower bound on log p(x) per example, ``(B,)`` nats: the one-sample ELBO (``num_samples=1``) or the
        importance-weighted bound with ``num_samples`` posterior samples (computed ``chunk_size`` at a time).

        With ``binarize`` the scored data is a Bernoulli draw of ``x`` (deterministic when ``x`` is already
        binary, i.e. every value is ``data_range``'s low or high)."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        with eval_mode(self.encoder, self.decoder):
            x = x.to(self.device)
            if num_samples == 1:
                return self.elbo_terms(x, generator)["elbo"]
            target = self.targets(x, generator)
            mu, logvar = self.encode(x if self.likelihood == "gaussian" or not self.binarize else self._from_unit(target))
            ll_chunks, log_pz_chunks, log_qz_chunks = [], [], []
            for start in range(0, num_samples, chunk_size):
                k = min(chunk_size, num_samples - start)
                eps = randn((k, *mu.shape), generator, mu.device)
                z = mu + torch.exp(0.5 * logvar) * eps  # (k, B, d)
                out = self.decoder(z.flatten(0, 1))
                ll_chunks.append(self.log_likelihood(out, target.repeat(k, *([1] * (target.dim() - 1)))).view(k, -1))
                log_pz_chunks.append(standard_normal_log_prob(z.flatten(0, 1)).view(k, -1))
                log_qz_chunks.append(gaussian_log_prob(z.flatten(0, 1), mu.repeat(k, 1), logvar.repeat(k, 1)).view(k, -1))
            return importance_weighted_bound(torch.cat(ll_chunks), torch.cat(log_pz_chunks), torch.cat(log_qz_chunks))

    # -- sampling -----------------------------------------------------------------------------------------------
    def noise(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None
    ) -> Tensor:
        """Codes from the prior N(0, I), ``(num_samples, latent_dim)``; truncated to ``[-truncation, truncation]``
        when given."""
        return truncated_randn((num_samples, self.latent_dim), truncation, generator, self.device)

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None,
        **condition: Any,
    ) -> Tensor:
        """Decode prior codes: the decoder's mean in data space (``sample_mean``), or a draw from the decoder;
        float32. ``truncation``: draw the codes from the truncated prior (the truncation trick, Brock et al. 2019);
        the decoder's own noise is not truncated."""
        reject_unexpected_arguments(self, condition, hint="the model is unconditional")
        z = self.noise(num_samples, generator, check_truncation(truncation))
        if self.sample_mean:
            return full_precision(self.generate(z))
        with eval_mode(self.decoder):
            out = full_precision(self.decoder(z))
        if self.likelihood == "bernoulli":
            u = rand(out.shape, generator, out.device)
            return self._from_unit((u < torch.sigmoid(out)).to(out.dtype))
        std = self.decoder_std if self.decoder_logvar is None else torch.exp(0.5 * self.decoder_logvar)
        x = out + std * randn(out.shape, generator, out.device)
        return x.clamp(*self.data_range) if self.data_range is not None else x

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> None:
        data = batch_data(batch)
        generator = evaluation_generator(batch_idx)  # never the global RNG, the same draws on every device
        with torch.no_grad():
            terms = self.elbo_terms(data, generator)
        logs = {f"{prefix}/elbo": terms["elbo"].mean(), f"{prefix}/reconstruction": -terms["log_likelihood"].mean(),
                f"{prefix}/kl": terms["kl"].mean()}
        if prefix == "test":
            # the same binarization as the ELBO above: re-seed so the IW bound scores the same targets
            generator = evaluation_generator(batch_idx)
            logs["test/nll"] = -self.log_prob(data, self.test_num_samples, generator).mean()
        self.log_dict(logs, sync_dist=True, batch_size=data.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """ELBO and its terms on held-out data (binarization and posterior draws from fixed seeds)."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """ELBO terms and the importance-weighted ``test/nll`` with ``test_num_samples`` samples."""
        self._evaluate(batch, batch_idx, "test")
