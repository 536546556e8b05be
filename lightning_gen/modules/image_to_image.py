"""Image-to-image translation with manual optimization: pix2pix (paired) and CycleGAN (unpaired).

Both modules take dict batches ``{"a": (B, C, H, W), "b": (B, C, H, W)}`` in [-1, 1] (see
:mod:`lightning_gen.data.paired`), make one generator step and one discriminator step per batch, and count
``trainer.global_step`` in generator steps (the discriminator step bypasses Lightning's step counter, as in
:class:`~lightning_gen.modules.gan.GAN`). Under DDP each net's gradients are averaged by the module, so a plain
``strategy: ddp`` works without ``find_unused_parameters``. Learning-rate schedulers (e.g. the papers' linear decay
as a ``LambdaLR`` from YAML) are stepped by the module after their optimizer's step.

Loss scaling follows the reference implementations: the discriminator objective is halved (pix2pix sec. 3.3,
CycleGAN's code ``0.5 * (real + fake)``). This library's ``least_squares`` pair already carries Mao's 1/2
(``dis = 1/2 E[(D(x)-1)^2] + 1/2 E[D(G)^2]``, ``gen = 1/2 E[(D(G)-1)^2]``), so for it the discriminator loss is used
as is and the generator's term is doubled to the papers' ``E[(D(G(x))-1)^2]``, keeping its balance against the
L1 terms (lambda = 10 or 100) exactly as published.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack
from functools import partial
from typing import Any, Literal, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn

from lightning_gen.losses.adversarial import AdversarialLoss, get_adversarial_loss
from lightning_gen.losses.cycle import cycle_consistency_loss, identity_loss, l1_reconstruction_loss
from lightning_gen.modules.base import GenerativeModule, eval_mode
from lightning_gen.modules.gan import GAN, NonFiniteLossError, _frozen
from lightning_gen.nets.image_pool import ImagePool

__all__ = ["Pix2Pix", "CycleGAN"]

Direction = Literal["AtoB", "BtoA"]

_NET_AND_CALLABLE_ARGS = ["loss", "generator_optimizer", "discriminator_optimizer", "generator_scheduler",
                          "discriminator_scheduler"]


def _adam() -> OptimizerCallable:
    """The papers' optimizer: Adam(2e-4, (0.5, 0.999)) (pix2pix sec. 3.3, CycleGAN sec. 7.1)."""
    return partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))


def _paper_scales(loss: AdversarialLoss) -> tuple[float, float]:
    """``(generator scale, discriminator scale)`` that turn this library's loss pair into the papers' objectives."""
    if loss.name == "least_squares":
        return 2.0, 1.0  # gen: 1/2 E[(D-1)^2] -> E[(D-1)^2]; dis already 1/2 (real + fake)
    return 1.0, 0.5


def _pair(batch: Any, who: str) -> tuple[Tensor, Tensor]:
    """The ``(a, b)`` images of a ``{"a": ..., "b": ...}`` batch (an ``(a, b)`` tuple is accepted too)."""
    if isinstance(batch, dict):
        if "a" not in batch or "b" not in batch:
            raise ValueError(f"{who} needs batches {{'a': images, 'b': images}}; got keys {sorted(batch)}")
        return batch["a"], batch["b"]
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        f"{who} needs dict batches {{'a': images, 'b': images}} (e.g. from PairedImageDataModule or "
        f"UnpairedImageDataModule), got {type(batch).__name__}"
    )


class _ImageToImageModule(GenerativeModule):
    """Shared machinery: optimizers, module-stepped schedulers, DDP gradient averaging, finite checks, logging."""

    # reused from GAN: backward outside DDP's reducer, per-net gradient all-reduce, strategy check, log cadence
    _backward = GAN._backward
    _average_gradients = GAN._average_gradients
    _should_log = GAN._should_log
    setup = GAN.setup

    def _init_game(
        self,
        loss: Union[str, AdversarialLoss],
        generator_optimizer: Optional[OptimizerCallable],
        discriminator_optimizer: Optional[OptimizerCallable],
        generator_scheduler: Optional[LRSchedulerCallable],
        discriminator_scheduler: Optional[LRSchedulerCallable],
        detect_non_finite: bool,
    ) -> None:
        self.automatic_optimization = False
        self.loss = loss if isinstance(loss, AdversarialLoss) else get_adversarial_loss(loss)
        self._gen_scale, self._dis_scale = _paper_scales(self.loss)
        self._optimizer_factories = (generator_optimizer or _adam(), discriminator_optimizer or _adam())
        self._scheduler_factories = (generator_scheduler, discriminator_scheduler)
        self.detect_non_finite = detect_non_finite

    @staticmethod
    def _hparams_ignore(nets: list[str]) -> list[str]:
        """Nets and callables are saved only when the CLI recorded them as config (so ``load_model`` rebuilds them)."""
        return [] if _given_hyperparameters.get() is not None else [*nets, *_NET_AND_CALLABLE_ARGS]

    def _generator_nets(self) -> list[nn.Module]:
        raise NotImplementedError

    def _discriminator_nets(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def generator_steps(self) -> int:
        """Generator optimizer steps taken so far (equals ``trainer.global_step`` while fitting)."""
        return self.trainer.global_step if self._trainer is not None else 0

    def configure_optimizers(self) -> Any:
        """One optimizer over all generator parameters (first) and one over all discriminator parameters."""
        gen = itertools.chain(*(n.parameters() for n in self._generator_nets()))
        dis = itertools.chain(*(n.parameters() for n in self._discriminator_nets()))
        opt_g = self._optimizer_factories[0](gen)
        opt_d = self._optimizer_factories[1](dis)
        schedulers = [f(o) for f, o in zip(self._scheduler_factories, (opt_g, opt_d)) if f is not None]
        return [opt_g, opt_d], schedulers

    def _schedulers(self) -> tuple[Optional[Any], Optional[Any]]:
        schedulers = self.lr_schedulers()
        schedulers = [] if schedulers is None else (schedulers if isinstance(schedulers, list) else [schedulers])
        it = iter(schedulers)
        return tuple(next(it) if f is not None else None for f in self._scheduler_factories)  # type: ignore[return-value]

    def _step(self, optimizer: Any, nets: list[nn.Module], scheduler: Optional[Any], counted: bool) -> None:
        """Average the nets' gradients across ranks, step (``counted``: advances ``global_step``), zero, schedule."""
        for net in nets:
            self._average_gradients(net)
        if counted:
            optimizer.step()
        else:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()

    def _check_finite(self, loss: Tensor, name: str) -> None:
        if not self.detect_non_finite:
            return
        bad = not bool(torch.isfinite(loss).all())
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NonFiniteLossError(
                f"The {name} loss of {type(self).__name__} became non-finite at generator step {self.generator_steps}; "
                "training stopped before stepping on it. Try a lower learning rate."
            )

    def _to_device(self, x: Tensor) -> Tensor:
        return torch.as_tensor(x).to(self.device)


class Pix2Pix(_ImageToImageModule):
    """pix2pix (Isola et al. 2017): a conditional GAN translating aligned pairs A -> B with an L1 term.

    Per batch: one discriminator step on ``D(cat(a, b))`` vs ``D(cat(a, G(a).detach()))`` (objective halved), then
    one generator step on ``gen(D(cat(a, G(a)))) + l1_weight * E|G(a) - b|`` (eq. 4, lambda = 100). The default
    ``nonsaturating`` loss is the paper's binary cross-entropy on PatchGAN logits (averaged over patches).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: Union[str, AdversarialLoss] = "nonsaturating",
        l1_weight: float = 100.0,
        generator_optimizer: Optional[OptimizerCallable] = None,
        discriminator_optimizer: Optional[OptimizerCallable] = None,
        generator_scheduler: Optional[LRSchedulerCallable] = None,
        discriminator_scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
    ) -> None:
        """Build pix2pix from injected nets.

        Args:
            generator: maps A images ``(B, C_a, H, W)`` to B images ``(B, C_b, H, W)`` (e.g. ``UNetGenerator``).
            discriminator: conditional PatchGAN with ``in_channels = C_a + C_b``, scoring ``cat(a, b)``.
            loss: adversarial loss name or :class:`AdversarialLoss` (``nonsaturating`` = the paper's BCE).
            l1_weight: lambda of the L1 term (100 in the paper).
            generator_optimizer: callable building the generator's optimizer (default Adam(2e-4, (0.5, 0.999))).
            discriminator_optimizer: the same for the discriminator.
            generator_scheduler: optional LR scheduler, stepped after every generator step.
            discriminator_scheduler: optional LR scheduler, stepped after every discriminator step.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss (one host sync per loss).
        """
        super().__init__()
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be >= 0, got {l1_weight}")
        self.save_hyperparameters(ignore=self._hparams_ignore(["generator", "discriminator"]))
        self.generator = generator
        self.discriminator = discriminator
        self.l1_weight = float(l1_weight)
        self._init_game(loss, generator_optimizer, discriminator_optimizer, generator_scheduler,
                        discriminator_scheduler, detect_non_finite)

    def _generator_nets(self) -> list[nn.Module]:
        return [self.generator]

    def _discriminator_nets(self) -> list[nn.Module]:
        return [self.discriminator]

    # -- public API ---------------------------------------------------------------------------------------------
    def forward(self, a: Tensor) -> Tensor:
        """Run the (training-mode) generator on A images."""
        return self.generator(a)

    @torch.no_grad()
    def translate(self, a: Tensor) -> Tensor:
        """Translate A images to B images in eval mode without gradients (dropout off); modes are restored."""
        with eval_mode(self.generator):
            return self.generator(self._to_device(a))

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, a: Optional[Tensor] = None,
        **condition: Any,
    ) -> Tensor:
        """Translate the ``num_samples`` A images ``a`` (the required condition); ``generator`` is unused (eval
        mode is deterministic)."""
        if condition:
            raise TypeError(f"Pix2Pix.sample got unexpected arguments {sorted(condition)}; pass the A images as `a`")
        if a is None:
            raise TypeError("Pix2Pix.sample needs the A images to translate: sample(num_samples, a=images)")
        if a.shape[0] != num_samples:
            raise ValueError(f"Pix2Pix.sample got num_samples={num_samples} but {a.shape[0]} A images")
        return self.translate(a)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Translate the batch's A images (``batch["a"]``)."""
        a = batch["a"] if isinstance(batch, dict) else (batch[0] if isinstance(batch, (list, tuple)) else batch)
        return self.translate(a)

    def discriminator_loss(self, a: Tensor, b: Tensor, fake_b: Tensor) -> Tensor:
        """The halved conditional discriminator objective on real pairs ``(a, b)`` and fake pairs ``(a, fake_b)``."""
        real_out = self.discriminator(torch.cat([a, b], 1))
        fake_out = self.discriminator(torch.cat([a, fake_b.detach()], 1))
        return self._dis_scale * self.loss.dis(real_out, fake_out)

    def generator_loss(self, a: Tensor, b: Tensor, fake_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator objective (adversarial + weighted L1) and its detached parts."""
        adv = self._gen_scale * self.loss.gen(self.discriminator(torch.cat([a, fake_b], 1)))
        l1 = l1_reconstruction_loss(fake_b, b, self.l1_weight) if self.l1_weight else fake_b.new_zeros(())
        return adv + l1, {"loss_gen_adv": adv.detach(), "loss_gen_l1": l1.detach()}

    # -- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One discriminator step, then one (counted) generator step."""
        a, b = _pair(batch, "Pix2Pix")
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self._schedulers()
        fake_b = self.generator(a)
        if fake_b.shape != b.shape:
            raise ValueError(
                f"The generator maps A images {tuple(a.shape)} to {tuple(fake_b.shape)} but the B images are "
                f"{tuple(b.shape)}: set its out_channels to the B images' channels."
            )
        loss_d = self.discriminator_loss(a, b, fake_b)
        self._check_finite(loss_d, "discriminator")
        self._backward(loss_d)
        self._step(opt_d, [self.discriminator], sched_d, counted=False)

        with _frozen(self.discriminator):
            loss_g, parts = self.generator_loss(a, b, fake_b)
            self._check_finite(loss_g, "generator")
            self._backward(loss_g)
        self._step(opt_g, [self.generator], sched_g, counted=True)

        if self._should_log(batch_idx):
            logs = {"train/loss_dis": loss_d.detach(), "train/loss_gen": loss_g.detach(),
                    **{f"train/{k}": v for k, v in parts.items()}}
            self.log_dict(logs, batch_size=a.shape[0])

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, prefix: str) -> None:
        a, b = _pair(batch, "Pix2Pix")
        l1 = (self.translate(a) - b).abs().mean()
        self.log(f"{prefix}/l1", l1, sync_dist=True, batch_size=a.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``val/l1`` = mean |G(a) - b|."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``test/l1`` = mean |G(a) - b|."""
        self._evaluate(batch, "test")


class CycleGAN(_ImageToImageModule):
    """CycleGAN (Zhu et al. 2017): two generators A -> B and B -> A trained on unpaired images.

    Per batch: one (counted) generator step on both generators with the discriminators frozen --
    ``gen(D_b(G_ab(a))) + gen(D_a(G_ba(b)))`` (LSGAN, as the paper: ``E[(D(G(x)) - 1)^2]``) plus the cycle terms
    ``cycle_weight * (E|G_ba(G_ab(a)) - a| + E|G_ab(G_ba(b)) - b|)`` plus the identity terms
    ``identity_weight * cycle_weight * (E|G_ab(b) - b| + E|G_ba(a) - a|)``; then one discriminator step on both
    discriminators with ``0.5 * (real + fake)`` per discriminator, the fakes drawn from two :class:`ImagePool`
    histories of ``pool_size`` images (submodules, so checkpoints keep them). As in the reference code one optimizer
    steps both generators and one steps both discriminators.

    ``discriminator_a`` judges domain A (real ``a`` vs ``G_ba(b)``), ``discriminator_b`` judges domain B.
    """

    def __init__(
        self,
        generator_ab: nn.Module,
        generator_ba: nn.Module,
        discriminator_a: nn.Module,
        discriminator_b: nn.Module,
        loss: Union[str, AdversarialLoss] = "least_squares",
        cycle_weight: float = 10.0,
        identity_weight: float = 0.5,
        pool_size: int = 50,
        paired_validation: bool = False,
        generator_optimizer: Optional[OptimizerCallable] = None,
        discriminator_optimizer: Optional[OptimizerCallable] = None,
        generator_scheduler: Optional[LRSchedulerCallable] = None,
        discriminator_scheduler: Optional[LRSchedulerCallable] = None,
        detect_non_finite: bool = True,
    ) -> None:
        """Build CycleGAN from injected nets.

        Args:
            generator_ab: maps A images to B images (e.g. ``ResnetGenerator``).
            generator_ba: maps B images to A images.
            discriminator_a: scores A images (PatchGAN with ``in_channels = C_a``).
            discriminator_b: scores B images.
            loss: adversarial loss name or :class:`AdversarialLoss` (``least_squares`` as the paper).
            cycle_weight: lambda of the cycle-consistency terms (10 in the paper).
            identity_weight: identity-loss weight *relative to* ``cycle_weight`` (0.5 as the paper/reference code,
                i.e. an absolute weight of 5); 0 disables it (needed when the domains' channels differ).
            pool_size: fake-image history per discriminator (50 in the paper; 0 uses the current fakes only).
            paired_validation: the val/test pairs are aligned (e.g. a synthetic or paired set), so also log
                ``val/l1_ab`` = mean |G_ab(a) - b| and ``val/l1_ba`` = mean |G_ba(b) - a|.
            generator_optimizer: callable building the optimizer of both generators (default Adam(2e-4, (0.5,
                0.999))).
            discriminator_optimizer: the same for both discriminators.
            generator_scheduler: optional LR scheduler, stepped after every generator step (e.g. the paper's linear
                decay as a ``LambdaLR``).
            discriminator_scheduler: optional LR scheduler, stepped after every discriminator step.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss (one host sync per loss).
        """
        super().__init__()
        for name, value in (("cycle_weight", cycle_weight), ("identity_weight", identity_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if identity_weight:
            for name, net in (("generator_ab", generator_ab), ("generator_ba", generator_ba)):
                c_in, c_out = getattr(net, "in_channels", None), getattr(net, "out_channels", None)
                if c_in is not None and c_out is not None and c_in != c_out:
                    raise ValueError(
                        f"identity_weight needs generators that keep the channel count, but {name} maps {c_in} to "
                        f"{c_out} channels; set identity_weight: 0"
                    )
        self.save_hyperparameters(
            ignore=self._hparams_ignore(["generator_ab", "generator_ba", "discriminator_a", "discriminator_b"])
        )
        self.generator_ab = generator_ab
        self.generator_ba = generator_ba
        self.discriminator_a = discriminator_a
        self.discriminator_b = discriminator_b
        self.cycle_weight = float(cycle_weight)
        self.identity_weight = float(identity_weight)
        self.paired_validation = bool(paired_validation)
        self.pool_a = ImagePool(pool_size)  # past fake A images, G_ba(b), for discriminator_a
        self.pool_b = ImagePool(pool_size)  # past fake B images, G_ab(a), for discriminator_b
        self._init_game(loss, generator_optimizer, discriminator_optimizer, generator_scheduler,
                        discriminator_scheduler, detect_non_finite)

    def _generator_nets(self) -> list[nn.Module]:
        return [self.generator_ab, self.generator_ba]

    def _discriminator_nets(self) -> list[nn.Module]:
        return [self.discriminator_a, self.discriminator_b]

    # -- public API ---------------------------------------------------------------------------------------------
    def forward(self, a: Tensor) -> Tensor:
        """Run the (training-mode) A -> B generator."""
        return self.generator_ab(a)

    @torch.no_grad()
    def translate(self, x: Tensor, direction: Direction = "AtoB") -> Tensor:
        """Translate images A -> B (``"AtoB"``) or B -> A (``"BtoA"``) in eval mode without gradients."""
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
        net = self.generator_ab if direction == "AtoB" else self.generator_ba
        with eval_mode(net):
            return net(self._to_device(x))

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, a: Optional[Tensor] = None,
        b: Optional[Tensor] = None, **condition: Any,
    ) -> Tensor:
        """Translate the ``num_samples`` given images: ``a`` to domain B, or ``b`` to domain A (exactly one);
        ``generator`` is unused (translation is deterministic)."""
        if condition:
            raise TypeError(f"CycleGAN.sample got unexpected arguments {sorted(condition)}; pass `a` or `b` images")
        if (a is None) == (b is None):
            raise TypeError("CycleGAN.sample needs exactly one of `a` (translated to B) or `b` (translated to A)")
        x, direction = (a, "AtoB") if a is not None else (b, "BtoA")
        assert x is not None
        if x.shape[0] != num_samples:
            raise ValueError(f"CycleGAN.sample got num_samples={num_samples} but {x.shape[0]} images")
        return self.translate(x, direction)  # type: ignore[arg-type]

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Translate the batch's A images to B (or its B images to A when it has no ``"a"``)."""
        if isinstance(batch, dict) and "a" not in batch and "b" in batch:
            return self.translate(batch["b"], "BtoA")
        a = batch["a"] if isinstance(batch, dict) else (batch[0] if isinstance(batch, (list, tuple)) else batch)
        return self.translate(a, "AtoB")

    def generator_loss(self, a: Tensor, b: Tensor) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor]]:
        """The generators' objective on one batch, its detached parts, and the fakes ``(G_ba(b), G_ab(a))``."""
        fake_b = self.generator_ab(a)
        fake_a = self.generator_ba(b)
        adv_ab = self._gen_scale * self.loss.gen(self.discriminator_b(fake_b))
        adv_ba = self._gen_scale * self.loss.gen(self.discriminator_a(fake_a))
        cycle_a = cycle_consistency_loss(a, self.generator_ba(fake_b), self.cycle_weight)
        cycle_b = cycle_consistency_loss(b, self.generator_ab(fake_a), self.cycle_weight)
        total = adv_ab + adv_ba + cycle_a + cycle_b
        parts = {"loss_gen_adv_ab": adv_ab.detach(), "loss_gen_adv_ba": adv_ba.detach(),
                 "loss_cycle_a": cycle_a.detach(), "loss_cycle_b": cycle_b.detach()}
        if self.identity_weight:
            weight = self.identity_weight * self.cycle_weight
            idt_b = identity_loss(b, self.generator_ab(b), weight)
            idt_a = identity_loss(a, self.generator_ba(a), weight)
            total = total + idt_a + idt_b
            parts.update(loss_identity_a=idt_a.detach(), loss_identity_b=idt_b.detach())
        return total, parts, (fake_a, fake_b)

    def discriminator_loss(
        self, a: Tensor, b: Tensor, fake_a: Tensor, fake_b: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Both discriminators' objectives, ``0.5 * (real + fake)`` each, on fakes drawn through the image pools."""
        pooled_a = self.pool_a.query(fake_a.detach())
        pooled_b = self.pool_b.query(fake_b.detach())
        loss_a = self._dis_scale * self.loss.dis(self.discriminator_a(a), self.discriminator_a(pooled_a))
        loss_b = self._dis_scale * self.loss.dis(self.discriminator_b(b), self.discriminator_b(pooled_b))
        return loss_a + loss_b, {"loss_dis_a": loss_a.detach(), "loss_dis_b": loss_b.detach()}

    # -- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One (counted) generator step with the discriminators frozen, then one discriminator step on pooled fakes."""
        a, b = _pair(batch, "CycleGAN")
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self._schedulers()
        with ExitStack() as stack:
            for net in self._discriminator_nets():
                stack.enter_context(_frozen(net))
            loss_g, parts_g, (fake_a, fake_b) = self.generator_loss(a, b)
            self._check_finite(loss_g, "generator")
            self._backward(loss_g)
        self._step(opt_g, self._generator_nets(), sched_g, counted=True)

        loss_d, parts_d = self.discriminator_loss(a, b, fake_a, fake_b)
        self._check_finite(loss_d, "discriminator")
        self._backward(loss_d)
        self._step(opt_d, self._discriminator_nets(), sched_d, counted=False)

        if self._should_log(batch_idx):
            logs = {"train/loss_gen": loss_g.detach(), "train/loss_dis": loss_d.detach(),
                    **{f"train/{k}": v for k, v in {**parts_g, **parts_d}.items()}}
            self.log_dict(logs, batch_size=a.shape[0])

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, prefix: str) -> None:
        a, b = _pair(batch, "CycleGAN")
        fake_b, fake_a = self.translate(a, "AtoB"), self.translate(b, "BtoA")
        cycle_a = (self.translate(fake_b, "BtoA") - a).abs().mean()
        cycle_b = (self.translate(fake_a, "AtoB") - b).abs().mean()
        logs = {f"{prefix}/cycle_l1_a": cycle_a, f"{prefix}/cycle_l1_b": cycle_b,
                f"{prefix}/cycle_l1": 0.5 * (cycle_a + cycle_b)}
        if self.paired_validation:
            logs[f"{prefix}/l1_ab"] = (fake_b - b).abs().mean()
            logs[f"{prefix}/l1_ba"] = (fake_a - a).abs().mean()
        self.log_dict(logs, sync_dist=True, batch_size=a.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``val/cycle_l1`` (and its A/B parts); with ``paired_validation`` also ``val/l1_ab``, ``val/l1_ba``."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``test/cycle_l1`` (and its A/B parts); with ``paired_validation`` also ``test/l1_ab``, ``test/l1_ba``."""
        self._evaluate(batch, "test")
