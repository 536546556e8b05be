"""Restricted Boltzmann machines trained by contrastive divergence (CD-k, Hinton 2002) or persistent contrastive
divergence (PCD, Tieleman 2008), sampled by block Gibbs sampling, and scored by test log-likelihoods from an annealed
importance sampling estimate of the partition function (Salakhutdinov & Murray 2008)."""

from __future__ import annotations

from functools import partial
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_gen.checks import value_checks_enabled
from lightning_gen.losses.rbm import contrastive_divergence_loss
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
    input_problem,
    raise_shape_problems,
)
from lightning_gen.nets.rbm import BernoulliRBM, LogPartitionEstimate, ais_log_partition
from lightning_gen.noise import rand
from lightning_gen.precision import full_precision

__all__ = ["RBM"]

BINARIZATIONS = ("stochastic", "threshold")


class RBM(SingleObjectiveModule):
    """A Bernoulli-Bernoulli RBM (:class:`~lightning_gen.nets.BernoulliRBM`) trained on binarized data.

    **Training.** Each step binarizes the batch (``binarize``: ``stochastic`` draws each pixel as Bernoulli of its
    grey level afresh at every step, as in the IWAE paper's dynamic binarization; Salakhutdinov & Murray binarized
    MNIST stochastically once. ``threshold`` sets the pixels above half the range), runs ``gibbs_steps`` block Gibbs
    steps from the data (CD-k) or from ``persistent_chains`` chains kept between updates (``persistent``: PCD-k),
    and minimizes :func:`~lightning_gen.losses.contrastive_divergence_loss`, ``mean F(data) - mean F(samples)``,
    through Lightning's automatic optimization: its gradient is the (P)CD gradient. The default optimizer is
    SGD(lr 0.05, momentum 0.9). Logged: ``train/loss`` (the free-energy gap) and, on logging batches,
    ``train/free_energy`` and ``train/reconstruction_error`` (squared error of the mean-field reconstruction
    ``p(v | h = p(h | v))``, summed over pixels); validation logs the same two on held-out data (watch
    ``val/free_energy`` drift above ``train/free_energy``: overfitting, Hinton 2010 sec. 6).

    **Persistent chains** are a buffer, so checkpoints keep them. Under DDP each rank keeps its own chains (DDP leaves
    them alone; they start alike and part at the first step, each rank drawing its own noise), a checkpoint stores
    every rank's, and a resumed fit on as many processes gives each rank its own back (on another number, every rank
    starts from rank 0's). The parameters' gradient is averaged over ranks as usual.

    **Sampling.** :meth:`sample` runs ``sampling_steps`` (or ``burn_in``) Gibbs steps from visible states drawn from
    the training data's pixel means (uniform before the first epoch ends) and returns the binary visible states in
    ``data_range`` (``sample_mean``: the last ``p(v = 1 | h)`` instead, a grey image).

    **Likelihood.** :meth:`log_prob` is ``-F(v) - log Z`` with ``log Z`` from :meth:`log_partition`: an AIS estimate
    (``ais_num_chains`` runs over ``ais_num_betas`` temperatures, from the base-rate model of the training data's
    pixel means, seeded by ``ais_seed``), computed once per parameter values and reused. Its standard error is
    :meth:`estimate_log_partition`'s ``stderr``; AIS tends to underestimate ``log Z``, so the log-likelihoods lean
    high. ``test`` logs ``test/nll`` (nats per example), ``test/log_partition``, ``test/log_partition_stderr`` and
    ``test/log_partition_ess`` (how many AIS runs carry the estimate: near 1, the error is unreliable).
    """

    sharding_refusal = "Gibbs sampling and the free energy read the RBM's weights directly, outside any forward"

    progress_bar_keys = ("train/reconstruction_error",)

    def __init__(
        self,
        rbm: BernoulliRBM,
        gibbs_steps: int = 1,
        persistent: bool = False,
        persistent_chains: int = 100,
        binarize: str = "stochastic",
        data_range: Sequence[float] = (-1.0, 1.0),
        sampling_steps: int = 1000,
        sample_mean: bool = False,
        ais_num_chains: int = 100,
        ais_num_betas: int = 14500,
        ais_seed: int = 0,
        optimizer: Optional[OptimizerCallable] = None,
        scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Train ``rbm`` by CD-``gibbs_steps`` or, with ``persistent``, PCD-``gibbs_steps``.

        Args:
            rbm: the machine, e.g. ``BernoulliRBM(input_shape=(1, 28, 28), num_hidden=500)``.
            gibbs_steps: block Gibbs steps per update (the k of CD-k and PCD-k).
            persistent: keep ``persistent_chains`` Gibbs chains between updates (PCD) instead of starting from the
                data (CD).
            persistent_chains: the number of persistent chains (per process under DDP).
            binarize: ``stochastic`` (each pixel on with probability its grey level, drawn afresh each step; fixed
                seeds per batch in validation and test) or ``threshold`` (on above the middle of ``data_range``).
                Binary data stays as it is either way.
            data_range: the data's ``(low, high)``: ``low`` is "off", ``high`` "on" ((-1, 1) for the image data
                modules); samples come back in it.
            sampling_steps: Gibbs steps :meth:`sample` runs when not given ``burn_in``.
            sample_mean: :meth:`sample` returns ``p(v = 1 | h)`` of the last step instead of binary states.
            ais_num_chains: AIS runs for :meth:`log_partition` (100 in Salakhutdinov & Murray 2008).
            ais_num_betas: AIS inverse temperatures (14,500 in the paper).
            ais_seed: the seed of :meth:`log_partition`'s AIS runs (drawn on this module's device).
            optimizer: callable building the optimizer (default SGD(lr 0.05, momentum 0.9)).
            scheduler: optional LR scheduler, stepped after every optimizer step.
            detect_non_finite: stop training with :class:`~lightning_gen.modules.base.NonFiniteLossError` when a
                training loss is NaN or infinite (``False`` skips the check).
            compile: compile the machine's free energy (its ``forward``) with ``torch.compile`` (``True`` or a dict of
                its arguments); the Gibbs steps stay eager.
        """
        super().__init__()
        self._init_objective(("rbm",), optimizer, scheduler, default_lr=0.05, detect_non_finite=detect_non_finite,
                             compile=compile)
        if optimizer is None:
            self._optimizer_factory = partial(torch.optim.SGD, lr=0.05, momentum=0.9)
        if not isinstance(rbm, BernoulliRBM):
            raise TypeError(f"RBM needs a lightning_gen.nets.BernoulliRBM, got {type(rbm).__name__}")
        for name, value, least in (("gibbs_steps", gibbs_steps, 1), ("persistent_chains", persistent_chains, 1),
                                   ("sampling_steps", sampling_steps, 1), ("ais_num_chains", ais_num_chains, 2),
                                   ("ais_num_betas", ais_num_betas, 2)):
            if int(value) < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        if binarize not in BINARIZATIONS:
            raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")
        lo, hi = (float(v) for v in data_range)
        if not lo < hi:
            raise ValueError(f"data_range must be (low, high) with low < high, got {tuple(data_range)}")
        self.rbm = rbm
        self.gibbs_steps = int(gibbs_steps)
        self.persistent = bool(persistent)
        self.binarization = binarize
        self.data_range = (lo, hi)
        self.sampling_steps = int(sampling_steps)
        self.sample_mean = bool(sample_mean)
        self.ais_num_chains = int(ais_num_chains)
        self.ais_num_betas = int(ais_num_betas)
        self.ais_seed = int(ais_seed)
        v = rbm.num_visible
        # the training data's pixel means (binarized), pooled over ranks at each epoch's end: AIS's base-rate model
        # and the start of sample()'s chains
        self.register_buffer("visible_marginals", torch.full((v,), 0.5))
        self.register_buffer("marginals_fitted", torch.zeros((), dtype=torch.bool))
        if self.persistent:
            self.register_buffer("persistent_chains", (torch.rand(int(persistent_chains), v) < 0.5).float())
        self._visible_sums: Optional[list[Tensor]] = None  # [sum v, count] of this epoch on this rank
        self._log_partition_cache: Optional[tuple[tuple[Any, ...], list[Tensor], LogPartitionEstimate]] = None

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample (the machine's ``input_shape``)."""
        return self.rbm.data_shape

    # -- data -----------------------------------------------------------------------------------------------------
    def binarize(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Binary visible vectors ``(B, V)`` of data in ``data_range`` (see ``binarize`` in the constructor); the
        stochastic draws come from ``generator`` when given. Data outside ``data_range`` raises a ``ValueError``."""
        lo, hi = self.data_range
        x = self.rbm.flat(x).to(self.rbm.weight.dtype)
        if x.numel() and value_checks_enabled() and (
            float(x.min()) < lo - 1e-3 * (hi - lo) or float(x.max()) > hi + 1e-3 * (hi - lo)
        ):
            raise ValueError(f"RBM expects data in data_range {self.data_range}, got values in [{float(x.min()):.3g}, "
                             f"{float(x.max()):.3g}]; set data_range to the range of your data.")
        p = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        if self.binarization == "threshold":
            return (p > 0.5).to(p.dtype)
        return (rand(p.shape, generator, p.device, p.dtype) < p).to(p.dtype)

    def _from_unit(self, v: Tensor) -> Tensor:
        lo, hi = self.data_range
        return lo + (hi - lo) * v

    def reconstruction_error(self, v: Tensor) -> Tensor:
        """Per-example squared error ``sum_i (v_i - p_i)^2``, ``(B,)``, of the mean-field reconstruction ``p = p(v = 1
        | h = p(h = 1 | v))`` of binary visible vectors (deterministic: the same on every call)."""
        v = self.rbm.flat(v)
        probs = torch.sigmoid(self.rbm.visible_logits(torch.sigmoid(self.rbm.hidden_logits(v))))
        return ((v - probs) ** 2).sum(1)

    # -- training -------------------------------------------------------------------------------------------------
    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The CD / PCD surrogate on a binarized batch; logs ``loss`` and, on logging batches, ``free_energy`` and
        ``reconstruction_error``."""
        v = self.binarize(data)
        self._accumulate_marginals(v)
        with torch.no_grad():
            start = self.persistent_chains if self.persistent else v
            samples, _ = self.rbm.gibbs(start, self.gibbs_steps)
            if self.persistent:
                self.persistent_chains.copy_(samples)
        loss = contrastive_divergence_loss(self.rbm, v, samples)
        logs = {"loss": loss.detach()}
        if self._logging_batch:
            with torch.no_grad():
                logs["free_energy"] = self.rbm(v).mean()
                logs["reconstruction_error"] = self.reconstruction_error(v).mean()
        return loss, logs

    def _accumulate_marginals(self, v: Tensor) -> None:
        v = v.detach().double()
        if self._visible_sums is None:
            self._visible_sums = [torch.zeros_like(v[0]), torch.zeros((), dtype=v.dtype, device=v.device)]
        self._visible_sums[0] += v.sum(0)
        self._visible_sums[1] += v.shape[0]

    def on_train_epoch_start(self) -> None:
        """Start this epoch's pixel statistics."""
        super().on_train_epoch_start()
        self._visible_sums = None

    def on_train_epoch_end(self) -> None:
        """Fix the training data's pixel means from this epoch's binarized batches, pooled over all ranks."""
        super().on_train_epoch_end()
        local = self._visible_sums or [torch.zeros(self.rbm.num_visible, dtype=torch.float64, device=self.device),
                                       torch.zeros((), dtype=torch.float64, device=self.device)]
        total, count = (self.trainer.strategy.reduce(t.clone(), reduce_op="sum") for t in local)  # every rank joins
        if float(count) > 0:
            self.visible_marginals.copy_(total / count)
            self.marginals_fitted.fill_(True)

    def setup(self, stage: str) -> None:
        """Keep each rank's persistent chains its own under DDP; check the machine against the data module's
        declared shape before any training."""
        super().setup(stage)
        if self._trainer is None:
            return
        wanted = declared_data_shape(self.trainer.datamodule)
        if wanted is not None and stage != "predict":
            data_name = type(self.trainer.datamodule).__name__
            raise_shape_problems(input_problem(self.rbm, self.rbm, wanted, data_name, "rbm"))

    def rank_local_buffers(self) -> dict[str, Tensor]:
        """The persistent chains (PCD): each rank keeps, checkpoints and resumes its own."""
        return {"persistent_chains": self.persistent_chains} if self.persistent else {}

    # -- the partition function and the likelihood ----------------------------------------------------------------
    def base_rates(self) -> Optional[Tensor]:
        """The training data's pixel means once an epoch has ended (AIS's base-rate model), else ``None``."""
        return self.visible_marginals if bool(self.marginals_fitted) else None

    def estimate_log_partition(
        self, num_chains: Optional[int] = None, num_betas: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> LogPartitionEstimate:
        """Run AIS (:func:`~lightning_gen.nets.rbm.ais_log_partition`) from :meth:`base_rates` with ``num_chains``
        runs over ``num_betas`` temperatures (default ``ais_num_chains``, ``ais_num_betas``): ``log_z``, its
        ``stderr`` (nats) and the runs' log weights. Noise from ``generator`` when given, else the global RNG."""
        with eval_mode(self.rbm):
            return ais_log_partition(self.rbm, num_chains or self.ais_num_chains, num_betas or self.ais_num_betas,
                                     generator, self.base_rates())

    def log_partition(self) -> LogPartitionEstimate:
        """The AIS estimate of ``log Z`` for the current parameters with the module's settings, seeded by
        ``ais_seed``: computed once per parameter values (and base rates), then reused."""
        settings = (self.ais_num_chains, self.ais_num_betas, self.ais_seed, self.device)
        state = [t.detach() for t in (*self.rbm.parameters(), self.visible_marginals, self.marginals_fitted)]
        cached = self._log_partition_cache
        if cached is not None and cached[0] == settings and all(
            a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(cached[1], state)
        ):
            return cached[2]
        estimate = self.estimate_log_partition(generator=torch.Generator(device=self.device).manual_seed(self.ais_seed))
        self._log_partition_cache = (settings, [t.clone() for t in state], estimate)
        return estimate

    @torch.no_grad()
    def log_prob(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """``log p(v) = -F(v) - log Z`` per example, ``(B,)`` nats, of the binarized ``x`` (a stochastic binarization
        draws from ``generator``; binary data is scored as it is), with ``log Z`` from :meth:`log_partition`."""
        v = self.binarize(x.to(self.device), generator)
        return -self.rbm.free_energy(v) - self.log_partition().log_z

    # -- sampling -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, burn_in: Optional[int] = None,
        **condition: Any,
    ) -> Tensor:
        """``(num_samples, *data_shape)`` samples in ``data_range`` after ``burn_in`` (default ``sampling_steps``)
        block Gibbs steps of independent chains started from the training data's pixel means; binary, or
        ``p(v = 1 | h)`` of the last step with ``sample_mean``. All noise comes from ``generator`` when given."""
        reject_unexpected_arguments(self, condition, hint="the model is unconditional (burn_in sets the Gibbs steps)")
        steps = self.sampling_steps if burn_in is None else int(burn_in)
        if steps < 1:
            raise ValueError(f"burn_in must be >= 1 Gibbs step, got {burn_in}")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        rates = self.visible_marginals.to(self.rbm.weight.dtype)
        if not bool(self.marginals_fitted):
            rates = torch.full_like(rates, 0.5)
        with eval_mode(self.rbm):
            start = (rand((num_samples, self.rbm.num_visible), generator, rates.device, rates.dtype) < rates)
            v, probs = self.rbm.gibbs(start.to(rates.dtype), steps, generator)
        out = full_precision(probs if self.sample_mean else v)
        return self._from_unit(out).view(num_samples, *self.data_shape)

    # -- evaluation -----------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> None:
        data = batch_data(batch)
        v = self.binarize(data, evaluation_generator(batch_idx))  # never the global RNG
        with torch.no_grad():
            free_energy = self.rbm(v).mean()
            logs: dict[str, Any] = {f"{prefix}/free_energy": free_energy,
                                    f"{prefix}/reconstruction_error": self.reconstruction_error(v).mean()}
            if prefix == "test":
                estimate = self.log_partition()
                logs.update({"test/nll": free_energy + estimate.log_z, "test/log_partition": estimate.log_z,
                             "test/log_partition_stderr": estimate.stderr,
                             "test/log_partition_ess": estimate.effective_sample_size})
        self.log_dict(logs, sync_dist=True, batch_size=data.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Free energy and reconstruction error of held-out data (binarized with a fixed seed per batch)."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Also ``test/nll`` = mean free energy + AIS ``log Z`` (nats per example), the estimate's error and ESS."""
        self._evaluate(batch, batch_idx, "test")
