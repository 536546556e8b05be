"""Adversarial training with manual optimization: k critic steps per generator step, honest step counters."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.distributed as dist
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.strategies import DDPStrategy, ParallelStrategy, SingleDeviceStrategy
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from lightning_gen.losses.adversarial import AdversarialLoss, get_adversarial_loss
from lightning_gen.losses.regularizers import clip_weights_, get_regularizer
from lightning_gen.modules.base import GenerativeModule

__all__ = ["GAN", "WGAN", "WGANGP", "DRAGAN", "LSGAN", "HingeGAN", "NonFiniteLossError"]

Regularizer = Callable[..., Tensor]


class NonFiniteLossError(RuntimeError):
    """Raised on every rank when a loss becomes NaN or infinite, before any optimizer steps on it."""


@contextmanager
def _frozen(net: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` for ``net``'s parameters (no wasted weight gradients), then restore it."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)


class GAN(GenerativeModule):
    """A generator/discriminator game trained with manual optimization.

    Each training batch is one critic micro-batch; every ``accumulate_grad_batches`` micro-batches make one critic
    step, and every ``n_critic`` critic steps are followed by one generator step (Goodfellow 2014, algorithm 1).
    ``trainer.global_step`` -- and so ``max_steps``, checkpoint names and step-based callbacks -- counts generator
    steps; ``critic_steps`` counts critic steps. Each learning-rate scheduler steps with its own optimizer.

    Under DDP the gradients of the net being stepped are averaged across ranks by this module, so no
    ``find_unused_parameters`` is needed; a plain ``strategy: ddp`` works.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: Union[str, AdversarialLoss] = "nonsaturating",
        regularizer: Optional[Union[str, Regularizer]] = None,
        regularizer_weight: float = 10.0,
        n_critic: int = 1,
        clip_value: Optional[float] = None,
        generator_optimizer: Optional[OptimizerCallable] = None,
        discriminator_optimizer: Optional[OptimizerCallable] = None,
        generator_scheduler: Optional[LRSchedulerCallable] = None,
        discriminator_scheduler: Optional[LRSchedulerCallable] = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: str = "norm",
        detect_non_finite: bool = True,
    ) -> None:
        """Build the game from injected nets, a loss pair, an optional critic regularizer and two optimizers.

        Args:
            generator: maps ``(B, generator.latent_dim)`` noise to samples shaped like the data.
            discriminator: maps a batch to one raw score per sample.
            loss: an :class:`AdversarialLoss` or one of ``minimax``, ``nonsaturating``, ``wasserstein``, ``hinge``,
                ``least_squares``.
            regularizer: ``gradient_penalty``, ``dragan``, ``r1`` or a callable ``(critic, real, fake) -> Tensor``.
            regularizer_weight: multiplies the regularizer (lambda of WGAN-GP/DRAGAN, gamma of R1).
            n_critic: critic steps per generator step (5 for WGAN and WGAN-GP).
            clip_value: clamp the critic's weights to ``[-c, c]`` after each critic step (WGAN: 0.01).
            generator_optimizer: callable building the generator's optimizer (default Adam(2e-4, (0.5, 0.999))).
            discriminator_optimizer: the same for the critic; a different learning rate gives TTUR.
            generator_scheduler: optional LR scheduler, stepped after every generator step.
            discriminator_scheduler: optional LR scheduler, stepped after every critic step.
            accumulate_grad_batches: micro-batches accumulated into each critic (and generator) step.
            gradient_clip_val: clip each net's gradients before its step (``None``: off).
            gradient_clip_algorithm: ``norm`` or ``value``.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss (one host sync per loss).
        """
        super().__init__()
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1 (critic steps per generator step), got {n_critic}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if clip_value is not None and clip_value <= 0:
            raise ValueError(f"clip_value must be positive or null, got {clip_value}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")
        if not hasattr(generator, "latent_dim"):
            raise ValueError(f"the generator ({type(generator).__name__}) needs a `latent_dim` attribute giving its noise size")
        # Nets and callables are not plain hyperparameters unless the CLI recorded them as config.
        from_cli = _given_hyperparameters.get() is not None
        self.save_hyperparameters(
            ignore=[] if from_cli else ["generator", "discriminator", "loss", "regularizer", "generator_optimizer",
                                         "discriminator_optimizer", "generator_scheduler", "discriminator_scheduler"]
        )
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.loss = loss if isinstance(loss, AdversarialLoss) else get_adversarial_loss(loss)
        self.regularizer: Optional[Regularizer] = get_regularizer(regularizer) if isinstance(regularizer, str) else regularizer
        self.regularizer_weight = float(regularizer_weight)
        self.n_critic = int(n_critic)
        self.clip_value = clip_value
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.detect_non_finite = detect_non_finite
        self._optimizer_factories = (
            generator_optimizer or partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
            discriminator_optimizer or partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
        )
        self._scheduler_factories = (generator_scheduler, discriminator_scheduler)
        self.critic_steps = 0
        self._micro_batches = 0

    # -- public API ---------------------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Size of the generator's noise vector."""
        return int(self.generator.latent_dim)

    @property
    def generator_steps(self) -> int:
        """Generator optimizer steps taken so far (equals ``trainer.global_step`` while fitting)."""
        return self.trainer.global_step if self._trainer is not None else 0

    def noise(self, num_samples: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Standard normal noise ``(num_samples, latent_dim)`` on this module's device."""
        if generator is None:
            return torch.randn(num_samples, self.latent_dim, device=self.device)
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=generator.device)
        return z.to(self.device)

    def forward(self, z: Tensor) -> Tensor:
        """Run the generator on noise ``z``."""
        return self.generator(z)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, **condition: Any) -> Tensor:
        """Generate ``num_samples`` samples in eval mode (the nets' train/eval modes are restored afterwards)."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(self.noise(num_samples, generator))
        finally:
            self.generator.train(was_training)

    @torch.no_grad()
    def discriminate(self, x: Tensor) -> Tensor:
        """The discriminator's raw score for each sample of ``x`` (used by plotting callbacks)."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            return self.discriminator(x.to(self.device))
        finally:
            self.discriminator.train(was_training)

    # -- optimizers ---------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Two optimizers, generator first; schedulers (if any) are stepped by this module, not by Lightning."""
        opt_g = self._optimizer_factories[0](self.generator.parameters())
        opt_d = self._optimizer_factories[1](self.discriminator.parameters())
        schedulers = [f(o) for f, o in zip(self._scheduler_factories, (opt_g, opt_d)) if f is not None]
        return [opt_g, opt_d], schedulers

    def setup(self, stage: str) -> None:
        """Reject strategies whose parameter sharding this module's gradient averaging cannot handle."""
        if self._trainer is None:
            return
        strategy = self.trainer.strategy
        if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)) and self.trainer.world_size > 1:
            raise NotImplementedError(
                f"{type(self).__name__} supports single-device and DDP training (`strategy: ddp`); got "
                f"{type(strategy).__name__}. Use `strategy: ddp` for several devices or nodes."
            )

    # -- training -----------------------------------------------------------------------------------------------
    def _real(self, batch: Any) -> Tensor:
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def _check_shape(self, fake: Tensor, real: Tensor) -> None:
        if fake.shape[1:] != real.shape[1:]:
            raise ValueError(
                f"The generator makes samples of shape {tuple(fake.shape[1:])} but the data has shape "
                f"{tuple(real.shape[1:])}: set the generator's output size (e.g. `output_shape`) to match the data."
            )

    def _check_finite(self, loss: Tensor, name: str) -> None:
        if not self.detect_non_finite:
            return
        bad = not bool(torch.isfinite(loss).all())
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            ckpt = getattr(self.trainer.checkpoint_callback, "dirpath", None)
            raise NonFiniteLossError(
                f"The {name} loss became {loss.detach().float().cpu().item() if loss.numel() == 1 else 'non-finite'} "
                f"at generator step {self.generator_steps}, critic step {self.critic_steps}. Training stopped before "
                f"stepping on it; the last good checkpoint is kept{f' in {ckpt}' if ckpt else ''}. Try a lower learning "
                "rate, gradient_clip_val, or a critic regularizer."
            )

    def _backward(self, loss: Tensor) -> None:
        """Backward without DDP's reducer: gradients are averaged per net in :meth:`_step`."""
        strategy = self.trainer.strategy
        ctx = strategy.block_backward_sync() if isinstance(strategy, ParallelStrategy) else nullcontext()
        with ctx:
            self.manual_backward(loss)

    def _average_gradients(self, net: nn.Module) -> None:
        world = self.trainer.world_size
        if world <= 1 or not (dist.is_available() and dist.is_initialized()):
            return
        params = [p for p in net.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(world)
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def _step(self, optimizer: Any, net: nn.Module, scheduler: Optional[Any], counted: bool) -> None:
        self._average_gradients(net)
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
        if counted:
            optimizer.step()  # a LightningOptimizer step: advances trainer.global_step
        else:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()

    def _schedulers(self) -> tuple[Optional[Any], Optional[Any]]:
        schedulers = self.lr_schedulers()
        schedulers = [] if schedulers is None else (schedulers if isinstance(schedulers, list) else [schedulers])
        it = iter(schedulers)
        return tuple(next(it) if f is not None else None for f in self._scheduler_factories)  # type: ignore[return-value]

    def critic_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The critic's objective on one batch (adversarial term plus weighted regularizer) and its parts."""
        loss_adv = self.loss.dis(self.discriminator(real), self.discriminator(fake))
        parts = {"loss_dis_adv": loss_adv.detach()}
        if self.loss.name == "wasserstein":
            parts["wasserstein_estimate"] = -loss_adv.detach()
        total = loss_adv
        if self.regularizer is not None:
            penalty = self.regularizer(self.discriminator, real, fake)
            parts["penalty"] = penalty.detach()
            total = total + self.regularizer_weight * penalty
        return total, parts

    def generator_loss(self, fake: Tensor) -> Tensor:
        """The generator's objective on a batch of its samples."""
        return self.loss.gen(self.discriminator(fake))

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One critic micro-batch; a critic step every ``accumulate_grad_batches``, a generator step every ``n_critic``."""
        real = self._real(batch)
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self._schedulers()
        acc = self.accumulate_grad_batches
        batch_size = real.shape[0]

        with torch.no_grad():
            fake = self.generator(self.noise(batch_size))
        self._check_shape(fake, real)
        loss_d, parts = self.critic_loss(real, fake)
        self._check_finite(loss_d, "discriminator")
        self._backward(loss_d / acc)
        self._micro_batches += 1
        logs = {"train/loss_dis": loss_d.detach(), **{f"train/{k}": v for k, v in parts.items()}}

        if self._micro_batches % acc == 0:
            self._step(opt_d, self.discriminator, sched_d, counted=False)
            if self.clip_value is not None:
                clip_weights_(self.discriminator, self.clip_value)
            self.critic_steps += 1
            if self.critic_steps % self.n_critic == 0:
                with _frozen(self.discriminator):
                    loss_g_total = torch.zeros((), device=self.device)
                    for _ in range(acc):
                        loss_g = self.generator_loss(self.generator(self.noise(batch_size)))
                        self._check_finite(loss_g, "generator")
                        self._backward(loss_g / acc)
                        loss_g_total += loss_g.detach() / acc
                self._step(opt_g, self.generator, sched_g, counted=True)
                logs["train/loss_gen"] = loss_g_total
        if self._should_log(batch_idx):
            logs["train/critic_steps"] = float(self.critic_steps)
            logs["train/generator_steps"] = float(self.generator_steps)
            self.log_dict(logs, prog_bar=False, batch_size=batch_size)

    def _should_log(self, batch_idx: int) -> bool:
        # Lightning's per-call logging costs about 1 ms per key on a CPU, as much as a toy training step, and step
        # values are only written every `log_every_n_steps` batches, so log just those batches.
        every = self.trainer.log_every_n_steps
        return every > 0 and (batch_idx + 1) % every == 0

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, prefix: str) -> None:
        real = self._real(batch)
        fake = self.generator(self.noise(real.shape[0]))
        self._check_shape(fake, real)
        real_out, fake_out = self.discriminator(real), self.discriminator(fake)
        logs = {f"{prefix}/loss_dis": self.loss.dis(real_out, fake_out), f"{prefix}/loss_gen": self.loss.gen(fake_out)}
        if self.loss.name == "wasserstein":
            logs[f"{prefix}/wasserstein_estimate"] = -logs[f"{prefix}/loss_dis"]
        self.log_dict(logs, sync_dist=True, batch_size=real.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Losses of both players on held-out real data and fresh samples."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Losses of both players on test data and fresh samples."""
        self._evaluate(batch, "test")

    # -- counters survive checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the critic-step and micro-batch counters next to the RNG states."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_gen_counters"] = {"critic_steps": self.critic_steps, "micro_batches": self._micro_batches}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the counters written by :meth:`on_save_checkpoint`."""
        super().on_load_checkpoint(checkpoint)
        counters = checkpoint.get("lightning_gen_counters", {})
        self.critic_steps = int(counters.get("critic_steps", 0))
        self._micro_batches = int(counters.get("micro_batches", 0))


# -- named games: the papers' fixed hyperparameters as defaults, overridable from YAML ------------------------------
def _default(factory: Optional[OptimizerCallable], optimizer: type, **kwargs: Any) -> OptimizerCallable:
    return factory if factory is not None else partial(optimizer, **kwargs)


class WGAN(GAN):
    """WGAN with weight clipping (Arjovsky et al. 2017, algorithm 1): RMSProp(5e-5), c = 0.01, n_critic = 5."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        clip_value: float = 0.01,
        n_critic: int = 5,
        generator_optimizer: Optional[OptimizerCallable] = None,
        discriminator_optimizer: Optional[OptimizerCallable] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            generator, discriminator, loss="wasserstein", clip_value=clip_value, n_critic=n_critic,
            generator_optimizer=_default(generator_optimizer, torch.optim.RMSprop, lr=5e-5),
            discriminator_optimizer=_default(discriminator_optimizer, torch.optim.RMSprop, lr=5e-5),
            **kwargs,
        )


class WGANGP(GAN):
    """WGAN-GP (Gulrajani et al. 2017, algorithm 1): gradient penalty lambda = 10, n_critic = 5, Adam(1e-4, (0, 0.9))."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        gp_weight: float = 10.0,
        n_critic: int = 5,
        generator_optimizer: Optional[OptimizerCallable] = None,
        discriminator_optimizer: Optional[OptimizerCallable] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            generator, discriminator, loss="wasserstein", regularizer="gradient_penalty", regularizer_weight=gp_weight,
            n_critic=n_critic,
            generator_optimizer=_default(generator_optimizer, torch.optim.Adam, lr=1e-4, betas=(0.0, 0.9)),
            discriminator_optimizer=_default(discriminator_optimizer, torch.optim.Adam, lr=1e-4, betas=(0.0, 0.9)),
            **kwargs,
        )


class DRAGAN(GAN):
    """DRAGAN (Kodali et al. 2017): non-saturating game plus a gradient penalty around perturbed real data, lambda = 10."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, penalty_weight: float = 10.0, **kwargs: Any) -> None:
        super().__init__(
            generator, discriminator, loss="nonsaturating", regularizer="dragan", regularizer_weight=penalty_weight,
            **kwargs,
        )


class LSGAN(GAN):
    """Least-squares GAN (Mao et al. 2017) with the a=0, b=1, c=1 coding and Adam(2e-4, (0.5, 0.999))."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any) -> None:
        super().__init__(generator, discriminator, loss="least_squares", **kwargs)


class HingeGAN(GAN):
    """Hinge-loss GAN as used by SNGAN (Miyato et al. 2018); pair it with a spectrally normalized discriminator."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any) -> None:
        super().__init__(generator, discriminator, loss="hinge", **kwargs)
