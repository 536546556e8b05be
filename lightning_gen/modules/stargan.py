"""StarGAN (Choi et al. 2018): one generator ``G(x, c)`` translating images into any of several domains.

The game, on :class:`~lightning_gen.modules.adversarial.AdversarialModule` (which does the plumbing: per-player DDP
averaging, accumulation, clipping, one loss scaler per player under ``16-mixed``, schedulers, counters, resume):

- the discriminator ``D`` has a critic head ``D_src`` and a domain-classification head ``D_cls`` on one trunk. Its
  loss (eq. 5) is the adversarial term on real images and translations ``G(x, c')`` to random target domains ``c'``,
  plus ``lambda_cls * L_cls^r`` (cross-entropy of ``D_cls`` on the real images' domains), plus the WGAN-GP gradient
  penalty ``lambda_gp = 10`` on ``D_src`` (sec. 4.1);
- every ``n_critic = 5`` discriminator steps the generator steps once on ``adv(D_src(G(x, c'))) +
  lambda_cls * L_cls^f(D_cls(G(x, c')), c') + lambda_rec * E|x - G(G(x, c'), c)|`` (eqs. 4 and 6; lambda_cls = 1,
  lambda_rec = 10), with ``D`` frozen.

As the reference code, the target domains of a batch are its own domains in random order (``randperm``), so
targets follow the data's domain frequencies. Both optimizers are Adam(1e-4, (0.5, 0.999)) (sec. 4.4).

Domains come as the second item of ``(images, domains)`` batches: integer indices ``(B,)`` for single-label domains
(one folder per domain: ``ImageFolderDataModule``; ``MNISTDomainsDataModule``) or 0/1 float attributes ``(B, K)``
for multi-label domains (``CelebADataModule(attributes=[...])``, with ``multi_label: true``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.checks import value_checks_enabled
from lightning_gen.losses.adversarial import AdversarialLoss, get_adversarial_loss
from lightning_gen.losses.cycle import cycle_consistency_loss
from lightning_gen.losses.domain import CLASSIFICATION_WEIGHT, RECONSTRUCTION_WEIGHT, domain_classification_loss
from lightning_gen.losses.regularizers import gradient_penalty
from lightning_gen.modules.adversarial import AdversarialModule
from lightning_gen.modules.base import eval_mode, reject_unexpected_arguments
from lightning_gen.modules.compile import CompileOption, eager
from lightning_gen.modules.shapes import declared_data_shape, input_problem, raise_shape_problems
from lightning_gen.precision import full_precision

__all__ = ["StarGAN"]

Domains = Union[int, Tensor]


class StarGAN(AdversarialModule):
    """StarGAN on the adversarial base: one generator for all domains, a critic with a domain classifier.

    Batches are ``(images, domains)`` (see the module docstring). Per batch: one discriminator micro-batch; a
    discriminator step every ``accumulate_grad_batches`` batches; the batches that feed every ``n_critic``-th
    discriminator step also feed the generator, which steps right after that discriminator step (with
    ``accumulate_grad_batches: 1`` exactly the reference code's ``(i + 1) % n_critic == 0``).
    ``trainer.global_step`` counts generator steps.

    :meth:`translate` maps images to given target domains, :meth:`translate_to_each_domain` to every domain (the
    grid of :class:`~lightning_gen.callbacks.DomainTranslationGridCallback`); ``sample(n, a=images, domains=...)``
    follows the image-to-image convention.
    """

    translates_inputs = True  # predict_step translates the data module's images into every domain

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        multi_label: bool = False,
        loss: Union[str, AdversarialLoss] = "wasserstein",
        gp_weight: float = 10.0,
        n_critic: int = 5,
        classification_weight: float = CLASSIFICATION_WEIGHT,
        reconstruction_weight: float = RECONSTRUCTION_WEIGHT,
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
        """Build StarGAN from injected nets.

        Args:
            generator: ``generator(x, c)`` maps images and float domain vectors ``(B, K)`` to images of the same shape
                (``StarGANGenerator``); it must have ``num_domains``.
            discriminator: ``discriminator(x)`` returns ``(critic scores, domain logits (B, K))``
                (``StarGANDiscriminator``).
            multi_label: domains are 0/1 attribute vectors (CelebA attributes) rather than one index per image.
            loss: adversarial loss name or :class:`AdversarialLoss` (``wasserstein`` with the gradient penalty, as the
                paper; ``nonsaturating``, ``least_squares`` and ``hinge`` also work).
            gp_weight: lambda_gp of the WGAN-GP penalty on the critic head (10; 0 turns it off).
            n_critic: discriminator steps per generator step (5).
            classification_weight: lambda_cls of both domain-classification terms (1).
            reconstruction_weight: lambda_rec of the cycle term ``E|x - G(G(x, c'), c)|`` (10).
            generator_optimizer: callable building the generator's optimizer (default Adam(1e-4, (0.5, 0.999))).
            discriminator_optimizer: the same for the discriminator.
            generator_scheduler: optional LR scheduler, stepped after every generator step (the paper decays the rate
                linearly to 0 over the second half of training).
            discriminator_scheduler: optional LR scheduler, stepped after every discriminator step.
            accumulate_grad_batches: batches accumulated into each step of each player.
            gradient_clip_val: clip each player's gradients before its step, after unscaling (``None``: off).
            gradient_clip_algorithm: ``norm`` or ``value``.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss; no optimizer steps on it or
                after it.
            compile: compile both nets with ``torch.compile`` (``True``, or a dict of its arguments) once, at set-up
                (the gradient penalty runs the critic eagerly: compiled graphs have no double backward).
        """
        super().__init__(accumulate_grad_batches, gradient_clip_val, gradient_clip_algorithm, detect_non_finite,
                         compile=compile)
        for name, value in (("gp_weight", gp_weight), ("classification_weight", classification_weight),
                            ("reconstruction_weight", reconstruction_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1 (discriminator steps per generator step), got {n_critic}")
        num_domains = getattr(generator, "num_domains", None)
        if num_domains is None:
            raise ValueError(f"the generator ({type(generator).__name__}) needs a `num_domains` attribute (the length of "
                             "its domain vectors), as StarGANGenerator has")
        d_domains = getattr(discriminator, "num_domains", None)
        if d_domains is not None and int(d_domains) != int(num_domains):
            raise ValueError(
                f"the discriminator has num_domains={d_domains} but the generator {num_domains}: set `num_domains: "
                f"{num_domains}` in `model.init_args.discriminator.init_args`"
            )
        self.save_init_hyperparameters(["generator", "discriminator", "loss", "generator_optimizer",
                                        "discriminator_optimizer", "generator_scheduler", "discriminator_scheduler"])
        self.generator = generator
        self.discriminator = discriminator
        self.multi_label = bool(multi_label)
        self.loss = loss if isinstance(loss, AdversarialLoss) else get_adversarial_loss(loss)
        if self.loss.needs_real_scores:
            raise ValueError(f"StarGAN does not support the {self.loss.name!r} loss (it needs real scores in the "
                             "generator's loss); use wasserstein, nonsaturating, least_squares or hinge")
        self.gp_weight = float(gp_weight)
        self.n_critic = int(n_critic)
        self.classification_weight = float(classification_weight)
        self.reconstruction_weight = float(reconstruction_weight)
        adam = partial(torch.optim.Adam, lr=1e-4, betas=(0.5, 0.999))
        self.add_player("discriminator", [discriminator], discriminator_optimizer or adam, discriminator_scheduler)
        self.add_player("generator", [generator], generator_optimizer or adam, generator_scheduler,
                        counts_global_step=True)

    # -- domains ------------------------------------------------------------------------------------------------
    @property
    def num_domains(self) -> int:
        """Length ``K`` of the domain vectors: the number of domains (or of attributes, for multi-label data)."""
        return int(self.generator.num_domains)

    def steps_per_generator_step(self, name: str) -> int:
        """The discriminator steps ``n_critic`` times per generator step, the generator once."""
        return self.n_critic if name == "discriminator" else 1

    def check_domains(self, domains: Tensor, batch_size: int) -> Tensor:
        """Validate a batch's domains -- indices ``(B,)`` (single-label) or 0/1 attributes ``(B, K)`` (multi-label) --
        and return them on this module's device."""
        domains = torch.as_tensor(domains, device=self.device)
        name = type(self).__name__
        if self.multi_label:
            if not torch.is_floating_point(domains) or domains.shape != (batch_size, self.num_domains):
                raise ValueError(
                    f"{name} with multi_label: true needs float 0/1 attributes of shape (B, {self.num_domains}) per "
                    f"batch, got {domains.dtype} {tuple(domains.shape)}; for one domain index per image set "
                    "multi_label: false"
                )
            if value_checks_enabled() and batch_size and bool(((domains != 0) & (domains != 1)).any()):
                raise ValueError(f"{name} needs attribute values 0 or 1")
            return domains
        if torch.is_floating_point(domains) or domains.shape != (batch_size,):
            hint = (" (these look like multi-label attributes: set multi_label: true)"
                    if domains.dim() == 2 and domains.shape[1] == self.num_domains else "")
            raise ValueError(
                f"{name} needs one integer domain index per image, shape ({batch_size},), got {domains.dtype} "
                f"{tuple(domains.shape)}{hint}"
            )
        if value_checks_enabled() and batch_size and bool(((domains < 0) | (domains >= self.num_domains)).any()):
            raise ValueError(f"{name} needs domain indices in [0, {self.num_domains}) (num_domains={self.num_domains}), "
                             f"got values from {int(domains.min())} to {int(domains.max())}")
        return domains.long()

    def domain_vectors(self, domains: Tensor) -> Tensor:
        """The generator's float condition ``(B, K)``: one-hot vectors of indices, or the attributes themselves."""
        if self.multi_label:
            return domains.float()
        # a comparison, not F.one_hot, which reads the indices' range on the host (a device sync)
        return (domains.unsqueeze(1) == torch.arange(self.num_domains, device=domains.device)).float()

    def domain_target(self, domains: Tensor, k: int) -> Tensor:
        """Target domains "domain ``k``" for images of ``domains``: index ``k`` (single-label), or the images' own
        attributes with attribute ``k`` flipped (multi-label, as the paper's CelebA figures)."""
        if not 0 <= k < self.num_domains:
            raise ValueError(f"domain {k} is out of range for num_domains={self.num_domains}")
        if not self.multi_label:
            return torch.full_like(domains, k)
        flipped = domains.clone()
        flipped[:, k] = 1.0 - flipped[:, k]
        return flipped

    def _targets(self, domains: Union[Domains, Any], batch_size: int) -> Tensor:
        """Parse user target domains: an index (all images), indices ``(N,)``, attributes ``(K,)`` or ``(N, K)``."""
        if isinstance(domains, int) and not isinstance(domains, bool):
            if self.multi_label:
                raise TypeError("a multi-label StarGAN needs target attributes (K,) or (N, K), not one index")
            return self.check_domains(torch.full((batch_size,), domains, dtype=torch.long), batch_size)
        domains = torch.as_tensor(domains)
        if self.multi_label and domains.dim() == 1:
            domains = domains.expand(batch_size, -1)
        return self.check_domains(domains, batch_size)

    # -- public API ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, domains: Tensor) -> Tensor:
        """Run the (training-mode) generator: images ``x`` to the target ``domains`` (indices or attributes)."""
        return self.generator(x, self.domain_vectors(self.check_domains(domains, x.shape[0])))

    @torch.no_grad()
    def translate(self, x: Tensor, target_domains: Domains) -> Tensor:
        """Translate images ``(N, C, H, W)`` in [-1, 1] to ``target_domains`` -- one index for all, indices ``(N,)``
        (single-label), or attributes ``(K,)`` / ``(N, K)`` (multi-label) -- in eval mode, float32."""
        x = torch.as_tensor(x).to(self.device)
        c = self.domain_vectors(self._targets(target_domains, x.shape[0]))
        with eval_mode(self.generator):
            return full_precision(self.generator(x, c))

    @torch.no_grad()
    def translate_to_each_domain(self, x: Tensor, domains: Optional[Tensor] = None) -> Tensor:
        """``(N, K, C, H, W)``: the images translated to each domain ``k`` in turn (see :meth:`domain_target`); the
        source ``domains`` are needed for multi-label data (each column flips one attribute)."""
        x = torch.as_tensor(x).to(self.device)
        if self.multi_label:
            if domains is None:
                raise TypeError("a multi-label StarGAN needs the images' own attributes to flip one at a time: "
                                "translate_to_each_domain(x, domains=attributes)")
            source = self.check_domains(domains, x.shape[0])
        else:
            source = torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
        return torch.stack([self.translate(x, self.domain_target(source, k)) for k in range(self.num_domains)], 1)

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, a: Optional[Tensor] = None,
        domains: Optional[Domains] = None, **condition: Any,
    ) -> Tensor:
        """Translate the ``num_samples`` images ``a`` to the target ``domains`` (both required; see :meth:`translate`);
        ``generator`` is unused (translation is deterministic)."""
        reject_unexpected_arguments(self, condition, "pass the images as `a` and the target domains as `domains`")
        if a is None or domains is None:
            raise TypeError("StarGAN.sample needs the images and their target domains: sample(n, a=images, "
                            "domains=targets)")
        if a.shape[0] != num_samples:
            raise ValueError(f"StarGAN.sample got num_samples={num_samples} but {a.shape[0]} images")
        return self.translate(a, domains)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Translate a batch's images into every domain: ``(B, K, C, H, W)`` (see :meth:`translate_to_each_domain`)."""
        x, domains = self._split(batch)
        return self.translate_to_each_domain(x, domains if self.multi_label else None)

    def _split(self, batch: Any) -> tuple[Tensor, Tensor]:
        if not (isinstance(batch, (list, tuple)) and len(batch) >= 2 and isinstance(batch[0], Tensor)
                and batch[0].dim() == 4):
            raise TypeError(
                f"StarGAN needs (images (B, C, H, W), domains) batches, got {type(batch).__name__}"
                + (f" with a first item of shape {tuple(batch[0].shape)}" if isinstance(batch, (list, tuple)) and batch
                   and isinstance(batch[0], Tensor) else "")
                + ": use a data module with domain labels (ImageFolderDataModule with one folder per domain, "
                "MNISTDomainsDataModule, CelebADataModule(attributes=...))"
            )
        return batch[0], self.check_domains(batch[1], batch[0].shape[0])

    # -- the game -----------------------------------------------------------------------------------------------
    def critic(self, x: Tensor) -> Tensor:
        """The critic head ``D_src(x)`` alone (what the gradient penalty differentiates)."""
        return self.discriminator(x)[0]

    def discriminator_loss(self, x: Tensor, domains: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``adv(D_src(x), D_src(fake)) + lambda_cls * L_cls^r + lambda_gp * GP`` and its detached parts."""
        real_scores, real_logits = self.discriminator(x)
        fake_scores, _ = self.discriminator(fake.detach())
        adv = self.loss.discriminator_loss(real_scores, fake_scores)
        cls = domain_classification_loss(real_logits, domains)
        total = adv + self.classification_weight * cls
        parts = {"loss_dis_adv": adv.detach(), "loss_dis_cls": cls.detach()}
        if self.gp_weight:
            with eager(self.discriminator):  # compiled graphs have no double backward
                penalty = gradient_penalty(self.critic, x, fake, grad_scale=self.gradient_scale("discriminator"))
            parts["penalty"] = penalty.detach()
            total = total + self.gp_weight * penalty
        return total, parts

    def generator_loss(self, x: Tensor, domains: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``adv(D_src(G(x, c'))) + lambda_cls * L_cls^f + lambda_rec * E|x - G(G(x, c'), c)|`` and its parts."""
        fake = self.generator(x, self.domain_vectors(targets))
        scores, logits = self.discriminator(fake)
        adv = self.loss.generator_loss(scores)
        cls = domain_classification_loss(logits, targets)
        rec = cycle_consistency_loss(x, full_precision(self.generator(fake, self.domain_vectors(domains))),
                                     self.reconstruction_weight)
        total = adv + self.classification_weight * cls + rec
        return total, {"loss_gen_adv": adv.detach(), "loss_gen_cls": cls.detach(), "loss_gen_rec": rec.detach()}

    def random_targets(self, domains: Tensor) -> Tensor:
        """The batch's own domains in random order (the reference code's ``label_org[randperm(B)]``)."""
        return domains[torch.randperm(domains.shape[0], device=domains.device)]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One discriminator micro-batch; after every ``n_critic``-th discriminator step, a generator step."""
        with self.deferred_value_checks():
            x, domains = self._split(batch)
            targets = self.random_targets(domains)
            # this batch feeds the generator when it feeds the discriminator step that completes n_critic of them
            feeds_generator = (self.players["discriminator"].steps + 1) % self.n_critic == 0
            with torch.no_grad():
                fake = self.generator(x, self.domain_vectors(targets))
            if fake.shape != x.shape:
                raise ValueError(f"the generator maps images {tuple(x.shape)} to {tuple(fake.shape)}: it must keep "
                                 "the shape (set its channels to the data's)")
            loss_d, parts = self.discriminator_loss(x, domains, fake)
            if self.gradient_scale("discriminator") is not None and "penalty" in parts:
                # under a loss scaler an overflowed penalty is a scaling artefact the scaler skips; check the rest
                self.check_finite(parts["loss_dis_adv"] + self.classification_weight * parts["loss_dis_cls"],
                                  "discriminator")
            else:
                self.check_finite(loss_d, "discriminator")
            self.player_backward("discriminator", loss_d, check_finite=False)
            self.player_step("discriminator")
            logs = {"train/loss_dis": loss_d.detach(), **{f"train/{k}": v for k, v in parts.items()}}
            if feeds_generator:
                with self.frozen("discriminator"):
                    loss_g, parts_g = self.generator_loss(x, domains, self.random_targets(domains))
                    self.player_backward("generator", loss_g)
                self.player_step("generator")
                logs.update({"train/loss_gen": loss_g.detach(), **{f"train/{k}": v for k, v in parts_g.items()}})
        if self.should_log(batch_idx):
            self.log_training(logs, x.shape[0])

    def setup(self, stage: str) -> None:
        """Also check the data module's domains (count, single- or multi-label) and image shape against the nets."""
        super().setup(stage)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None:
            return
        data_name = type(datamodule).__name__
        names = list(getattr(datamodule, "domain_names", None) or [])
        count = len(names) or int(getattr(datamodule, "num_classes", 0) or 0)
        data_multi = bool(getattr(datamodule, "multi_label", False))
        if hasattr(datamodule, "domain_names") or hasattr(datamodule, "num_classes"):
            if count == 0:
                raise ValueError(
                    f"{data_name} gives no domain labels: StarGAN needs (images, domains) batches. Use one folder per "
                    "domain (ImageFolderDataModule), MNISTDomainsDataModule, or CelebADataModule(attributes=[...])."
                )
            if data_multi != self.multi_label:
                raise ValueError(
                    f"{data_name}'s domains are {'multi' if data_multi else 'single'}-label but the model has "
                    f"multi_label: {str(self.multi_label).lower()}; set `multi_label: {str(data_multi).lower()}` in "
                    "`model.init_args`"
                )
            if count != self.num_domains:
                listed = f" ({', '.join(names)})" if names else ""
                raise ValueError(
                    f"{data_name} has {count} domains{listed} but the nets have num_domains={self.num_domains}: set "
                    f"`num_domains: {count}` in the generator's and the discriminator's `init_args`"
                )
        wanted = declared_data_shape(datamodule)
        if wanted is None or stage == "predict":
            return
        c = torch.zeros(2, self.num_domains)
        raise_shape_problems(
            input_problem(self.generator, lambda x: self.generator(x, c.to(x.device)), wanted, data_name, "generator"),
            input_problem(self.discriminator, self.discriminator, wanted, data_name, "discriminator"),
        )

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _accuracy(self, logits: Tensor, domains: Tensor) -> Tensor:
        if self.multi_label:
            return ((logits > 0).float() == domains).float().mean()
        return (logits.argmax(1) == domains).float().mean()

    def _evaluate(self, batch: Any, prefix: str) -> None:
        x, domains = self._split(batch)
        c_source = self.domain_vectors(domains)
        real_scores, real_logits = self.discriminator(x)
        adv, accuracy, reconstruction = [], [], []
        for k in range(self.num_domains):
            target = self.domain_target(domains, k)
            fake = self.generator(x, self.domain_vectors(target))
            fake_scores, fake_logits = self.discriminator(fake)
            adv.append(self.loss.discriminator_loss(real_scores, fake_scores))
            accuracy.append(self._accuracy(fake_logits, target))
            reconstruction.append((full_precision(self.generator(fake, c_source)) - x).abs().mean())
        self.log_dict({
            f"{prefix}/loss_dis_adv": torch.stack(adv).mean(),
            f"{prefix}/domain_accuracy_real": self._accuracy(real_logits, domains),
            f"{prefix}/domain_accuracy_translated": torch.stack(accuracy).mean(),
            f"{prefix}/reconstruction_l1": torch.stack(reconstruction).mean(),
        }, sync_dist=True, batch_size=x.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log, over translations of each image to each domain: ``val/domain_accuracy_translated`` (the
        discriminator's classifier on them), ``val/reconstruction_l1`` (``|G(G(x, c_k), c) - x|``),
        ``val/loss_dis_adv``; and ``val/domain_accuracy_real`` (the classifier on the real images)."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """The validation values on the test split, under ``test/``."""
        self._evaluate(batch, "test")
