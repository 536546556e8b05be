"""Image-to-image translation with manual optimization: pix2pix (paired) and CycleGAN (unpaired).

Both modules take dict batches ``{"a": (B, C, H, W), "b": (B, C, H, W)}`` in [-1, 1] (see
:mod:`lightning_gen.data.paired`), make one generator step and one discriminator step per batch (per
``accumulate_grad_batches`` batches), and count ``trainer.global_step`` in generator steps. They are games on
:class:`~lightning_gen.modules.adversarial.AdversarialModule`, which does the plumbing: per-player DDP gradient
averaging (a plain ``strategy: ddp`` works without ``find_unused_parameters``), gradient clipping after unscaling,
one loss scaler per player under ``16-mixed``, accumulation, and schedulers stepped after their optimizer's step.

Loss scaling follows the reference implementations: the discriminator objective is halved (pix2pix sec. 3.3,
CycleGAN's code ``0.5 * (real + fake)``). This library's ``least_squares`` pair (``half_weighted``) already carries
Mao's 1/2 (``dis = 1/2 E[(D(x)-1)^2] + 1/2 E[D(G)^2]``, ``gen = 1/2 E[(D(G)-1)^2]``), so for it the discriminator loss is used
as is and the generator's term is doubled to the papers' ``E[(D(G(x))-1)^2]``, keeping its balance against the
L1 terms (lambda = 10 or 100) exactly as published.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.losses.adversarial import AdversarialLoss, get_adversarial_loss
from lightning_gen.losses.cycle import cycle_consistency_loss, identity_loss, l1_reconstruction_loss
from lightning_gen.modules.adversarial import AdversarialModule
from lightning_gen.modules.base import eval_mode, reject_unexpected_arguments
from lightning_gen.modules.compile import CompileOption
from lightning_gen.nets.image_pool import ImagePool
from lightning_gen.precision import full_precision

__all__ = ["Pix2Pix", "CycleGAN"]

Direction = Literal["AtoB", "BtoA"]

_OBJECT_ARGS = ["loss", "generator_optimizer", "discriminator_optimizer", "generator_scheduler", "discriminator_scheduler"]


def _adam() -> OptimizerCallable:
    """The papers' optimizer: Adam(2e-4, (0.5, 0.999)) (pix2pix sec. 3.3, CycleGAN sec. 7.1)."""
    return partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))


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


class _ImageToImageModule(AdversarialModule):
    """What pix2pix and CycleGAN share beyond the adversarial base: the papers' loss scaling and two players."""

    translates_inputs = True  # predict_step translates the data module's images; there is nothing to draw from noise

    def _init_game(
        self,
        loss: Union[str, AdversarialLoss],
        generators: list[nn.Module],
        discriminators: list[nn.Module],
        generator_optimizer: Optional[OptimizerCallable],
        discriminator_optimizer: Optional[OptimizerCallable],
        generator_scheduler: Optional[LRSchedulerCallable],
        discriminator_scheduler: Optional[LRSchedulerCallable],
    ) -> None:
        self.loss = loss if isinstance(loss, AdversarialLoss) else get_adversarial_loss(loss)
        if self.loss.needs_real_scores:
            raise ValueError(f"{type(self).__name__} does not support the {self.loss.name!r} loss (it needs real scores "
                             "in the generator's loss); use nonsaturating, least_squares, hinge or wasserstein")
        # the papers' objectives: gen E[(D(G)-1)^2] or BCE; dis 0.5 * (real + fake). A half-weighted pair (LSGAN's
        # coding, 1/2 on every term) is used as is for the discriminator and doubled for the generator.
        self._gen_scale, self._dis_scale = (2.0, 1.0) if self.loss.half_weighted else (1.0, 0.5)
        # one optimizer over all generators (first), one over all discriminators, as in the reference code
        self.add_player("generator", generators, generator_optimizer or _adam(), generator_scheduler,
                        counts_global_step=True)
        self.add_player("discriminator", discriminators, discriminator_optimizer or _adam(), discriminator_scheduler)

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
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: str = "norm",
        detect_non_finite: bool = True,
        compile: CompileOption = False,
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
            accumulate_grad_batches: batches accumulated into each generator and discriminator step.
            gradient_clip_val: clip each player's gradients before its step, after unscaling (``None``: off).
            gradient_clip_algorithm: ``norm`` or ``value``.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss; no optimizer steps on it
                or after it, and finding it never makes a step wait for the device.
            compile: compile the generator(s) and discriminator(s) with ``torch.compile`` (``True``, or a dict of its
                arguments) once, at set-up (see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__(accumulate_grad_batches, gradient_clip_val, gradient_clip_algorithm, detect_non_finite,
                         compile=compile)
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be >= 0, got {l1_weight}")
        self.save_init_hyperparameters(["generator", "discriminator", *_OBJECT_ARGS])
        self.generator = generator
        self.discriminator = discriminator
        self.l1_weight = float(l1_weight)
        self._init_game(loss, [generator], [discriminator], generator_optimizer, discriminator_optimizer,
                        generator_scheduler, discriminator_scheduler)

    # -- public API ---------------------------------------------------------------------------------------------
    def forward(self, a: Tensor) -> Tensor:
        """Run the (training-mode) generator on A images."""
        return self.generator(a)

    @torch.no_grad()
    def translate(self, a: Tensor) -> Tensor:
        """Translate A images to B images in eval mode without gradients (dropout off); modes are restored."""
        with eval_mode(self.generator):
            return full_precision(self.generator(self._to_device(a)))

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, a: Optional[Tensor] = None,
        **condition: Any,
    ) -> Tensor:
        """Translate the ``num_samples`` A images ``a`` (the required condition); ``generator`` is unused (eval
        mode is deterministic)."""
        reject_unexpected_arguments(self, condition, "pass the A images as `a`")
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
        return self._dis_scale * self.loss.discriminator_loss(real_out, fake_out)

    def generator_loss(self, a: Tensor, b: Tensor, fake_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator objective (adversarial + weighted L1) and its detached parts."""
        adv = self._gen_scale * self.loss.generator_loss(self.discriminator(torch.cat([a, fake_b], 1)))
        l1 = l1_reconstruction_loss(fake_b.float(), b, self.l1_weight) if self.l1_weight else adv.new_zeros(())
        return adv + l1, {"loss_gen_adv": adv.detach(), "loss_gen_l1": l1.detach()}

    # -- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One discriminator step, then one (counted) generator step (each every ``accumulate_grad_batches``)."""
        a, b = _pair(batch, "Pix2Pix")
        fake_b = self.generator(a)
        if fake_b.shape != b.shape:
            raise ValueError(
                f"The generator maps A images {tuple(a.shape)} to {tuple(fake_b.shape)} but the B images are "
                f"{tuple(b.shape)}: set its out_channels to the B images' channels."
            )
        loss_d = self.discriminator_loss(a, b, fake_b)
        self.player_backward("discriminator", loss_d)
        self.player_step("discriminator")
        with self.frozen("discriminator"):
            loss_g, parts = self.generator_loss(a, b, fake_b)
            self.player_backward("generator", loss_g)
        self.player_step("generator")
        if self.should_log(batch_idx):
            logs = {"train/loss_dis": loss_d.detach(), "train/loss_gen": loss_g.detach(),
                    **{f"train/{k}": v for k, v in parts.items()}}
            self.log_training(logs, a.shape[0])

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
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: str = "norm",
        detect_non_finite: bool = True,
        compile: CompileOption = False,
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
            accumulate_grad_batches: batches accumulated into each generator and discriminator step.
            gradient_clip_val: clip each player's gradients before its step, after unscaling (``None``: off).
            gradient_clip_algorithm: ``norm`` or ``value``.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss; no optimizer steps on it
                or after it, and finding it never makes a step wait for the device.
            compile: compile the generator(s) and discriminator(s) with ``torch.compile`` (``True``, or a dict of its
                arguments) once, at set-up (see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__(accumulate_grad_batches, gradient_clip_val, gradient_clip_algorithm, detect_non_finite,
                         compile=compile)
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
        self.save_init_hyperparameters(["generator_ab", "generator_ba", "discriminator_a", "discriminator_b", *_OBJECT_ARGS])
        self.generator_ab = generator_ab
        self.generator_ba = generator_ba
        self.discriminator_a = discriminator_a
        self.discriminator_b = discriminator_b
        self.cycle_weight = float(cycle_weight)
        self.identity_weight = float(identity_weight)
        self.paired_validation = bool(paired_validation)
        self.pool_a = ImagePool(pool_size)  # past fake A images, G_ba(b), for discriminator_a
        self.pool_b = ImagePool(pool_size)  # past fake B images, G_ab(a), for discriminator_b
        self._init_game(loss, [generator_ab, generator_ba], [discriminator_a, discriminator_b], generator_optimizer,
                        discriminator_optimizer, generator_scheduler, discriminator_scheduler)

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
            return full_precision(net(self._to_device(x)))

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, a: Optional[Tensor] = None,
        b: Optional[Tensor] = None, **condition: Any,
    ) -> Tensor:
        """Translate the ``num_samples`` given images: ``a`` to domain B, or ``b`` to domain A (exactly one);
        ``generator`` is unused (translation is deterministic)."""
        reject_unexpected_arguments(self, condition, "pass `a` or `b` images")
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
        adv_ab = self._gen_scale * self.loss.generator_loss(self.discriminator_b(fake_b))
        adv_ba = self._gen_scale * self.loss.generator_loss(self.discriminator_a(fake_a))
        cycle_a = cycle_consistency_loss(a, self.generator_ba(fake_b).float(), self.cycle_weight)
        cycle_b = cycle_consistency_loss(b, self.generator_ab(fake_a).float(), self.cycle_weight)
        total = adv_ab + adv_ba + cycle_a + cycle_b
        parts = {"loss_gen_adv_ab": adv_ab.detach(), "loss_gen_adv_ba": adv_ba.detach(),
                 "loss_cycle_a": cycle_a.detach(), "loss_cycle_b": cycle_b.detach()}
        if self.identity_weight:
            weight = self.identity_weight * self.cycle_weight
            idt_b = identity_loss(b, self.generator_ab(b).float(), weight)
            idt_a = identity_loss(a, self.generator_ba(a).float(), weight)
            total = total + idt_a + idt_b
            parts.update(loss_identity_a=idt_a.detach(), loss_identity_b=idt_b.detach())
        return total, parts, (fake_a, fake_b)

    def discriminator_loss(
        self, a: Tensor, b: Tensor, fake_a: Tensor, fake_b: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Both discriminators' objectives, ``0.5 * (real + fake)`` each, on fakes drawn through the image pools."""
        pooled_a = self.pool_a.query(full_precision(fake_a.detach()))
        pooled_b = self.pool_b.query(full_precision(fake_b.detach()))
        loss_a = self._dis_scale * self.loss.discriminator_loss(self.discriminator_a(a), self.discriminator_a(pooled_a))
        loss_b = self._dis_scale * self.loss.discriminator_loss(self.discriminator_b(b), self.discriminator_b(pooled_b))
        return loss_a + loss_b, {"loss_dis_a": loss_a.detach(), "loss_dis_b": loss_b.detach()}

    # -- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One (counted) generator step with the discriminators frozen, then one discriminator step on pooled fakes."""
        a, b = _pair(batch, "CycleGAN")
        with self.frozen("discriminator"):
            loss_g, parts_g, (fake_a, fake_b) = self.generator_loss(a, b)
            self.player_backward("generator", loss_g)
        self.player_step("generator")
        loss_d, parts_d = self.discriminator_loss(a, b, fake_a, fake_b)
        self.player_backward("discriminator", loss_d)
        self.player_step("discriminator")
        if self.should_log(batch_idx):
            logs = {"train/loss_gen": loss_g.detach(), "train/loss_dis": loss_d.detach(),
                    **{f"train/{k}": v for k, v in {**parts_g, **parts_d}.items()}}
            self.log_training(logs, a.shape[0])

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
