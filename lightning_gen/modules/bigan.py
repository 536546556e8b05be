"""BiGAN / ALI (Donahue et al. 2017; Dumoulin et al. 2017): a GAN with an encoder, judged on (data, code) pairs.

An encoder ``E`` joins the generator ``G``; the discriminator ``D(x, z)`` scores data pairs ``(x, E(x))`` against
sample pairs ``(G(z), z)``. At the optimum of the game the two joint distributions agree, so ``E`` inverts ``G``
(BiGAN, theorems 1-2). ``G`` and ``E`` are one player (one optimizer over both, as in both papers), ``D`` the other.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.losses.adversarial import AdversarialLoss, get_adversarial_loss
from lightning_gen.modules.adversarial import AdversarialModule
from lightning_gen.modules.base import batch_data, eval_mode, evaluation_generator, reject_unexpected_arguments
from lightning_gen.modules.compile import CompileOption
from lightning_gen.modules.shapes import (
    declared_data_shape,
    generator_output_problem,
    input_problem,
    raise_shape_problems,
)
from lightning_gen.noise import check_truncation, truncated_randn
from lightning_gen.precision import full_precision

__all__ = ["BiGAN"]


class BiGAN(AdversarialModule):
    """BiGAN / ALI on :class:`~lightning_gen.modules.adversarial.AdversarialModule`: generator, encoder, joint critic.

    Per batch ``x`` (the labels of ``(x, y)`` batches are ignored) with noise ``z``: one discriminator step on
    ``dis(D(x, E(x)), D(G(z), z))`` (data pairs labelled real), then one (counted) step of the ``generator`` player --
    ``G`` and ``E`` under one optimizer -- with ``D`` frozen, on :meth:`generator_encoder_loss`; each every
    ``accumulate_grad_batches`` batches. ``trainer.global_step`` counts the generator player's steps.

    The loss is any :class:`AdversarialLoss` (or registered name). For the generator player, data pairs play the part
    of the fakes with the labels swapped: its loss is ``gen(D(G(z), z)) + gen(2m - D(x, E(x)))``, ``m`` being the
    loss's ``label_midpoint``. With ``minimax`` that is the papers' value function ``V(D, E, G)`` (eq. 3 of BiGAN,
    which G and E minimize); with ``nonsaturating`` it is the "inverted labels" objective both papers train with;
    ``wasserstein`` and ``hinge`` give ``E f(x, E(x)) - E f(G(z), z)``; ``least_squares`` pushes data pairs to the
    fake label 0. Relativistic losses already compare the two kinds of pair, so their generator loss
    ``gen(D(G(z), z), D(x, E(x)))`` is used as is.

    :meth:`sample` draws ``G(z)``, :meth:`encode` gives ``E(x)`` and :meth:`reconstruct` ``G(E(x))``, in eval mode.
    """

    def __init__(
        self,
        generator: nn.Module,
        encoder: nn.Module,
        discriminator: nn.Module,
        loss: Union[str, AdversarialLoss] = "nonsaturating",
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
        """Build the game from injected nets.

        Args:
            generator: maps ``(B, generator.latent_dim)`` noise to samples shaped like the data (e.g.
                ``MLPGenerator``, ``DCGANGenerator``).
            encoder: maps data ``(B, *data_shape)`` to codes ``(B, latent_dim)`` (``MLPEncoder`` / ``ConvEncoder`` with
                ``out_dim = latent_dim``).
            discriminator: scores pairs, ``discriminator(x, z) -> (B,)`` raw scores (``JointMLPDiscriminator``,
                ``JointConvDiscriminator``).
            loss: an :class:`AdversarialLoss` or a registered name (``nonsaturating``, ``minimax``, ``wasserstein``,
                ``hinge``, ``least_squares``, ``relativistic``, ``relativistic_average``).
            generator_optimizer: builds the one optimizer over the generator's and the encoder's parameters (default
                Adam(2e-4, (0.5, 0.999)), BiGAN sec. 4).
            discriminator_optimizer: the same for the discriminator.
            generator_scheduler: optional LR scheduler, stepped after every generator/encoder step.
            discriminator_scheduler: optional LR scheduler, stepped after every discriminator step.
            accumulate_grad_batches: batches accumulated into each step of each player.
            gradient_clip_val: clip each player's gradients before its step, after unscaling (``None``: off).
            gradient_clip_algorithm: ``norm`` or ``value``.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss; no optimizer steps on it
                or after it.
            compile: compile the three nets with ``torch.compile`` (``True``, or a dict of its arguments) once, at
                set-up (see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__(accumulate_grad_batches, gradient_clip_val, gradient_clip_algorithm, detect_non_finite,
                         compile=compile)
        if not hasattr(generator, "latent_dim"):
            raise ValueError(f"the generator ({type(generator).__name__}) needs a `latent_dim` attribute giving its noise size")
        for role, net in (("encoder", encoder), ("discriminator", discriminator)):
            size = getattr(net, "out_dim" if role == "encoder" else "latent_dim", None)
            if size is not None and int(size) != int(generator.latent_dim):
                option = "out_dim" if role == "encoder" else "latent_dim"
                raise ValueError(
                    f"the {role} ({type(net).__name__}) has {option}={size} but the generator's latent_dim is "
                    f"{generator.latent_dim}: set `{option}: {generator.latent_dim}` in `model.init_args.{role}.init_args`"
                )
        self.save_init_hyperparameters(["generator", "encoder", "discriminator", "loss", "generator_optimizer",
                                        "discriminator_optimizer", "generator_scheduler", "discriminator_scheduler"])
        self.generator = generator
        self.encoder = encoder
        self.discriminator = discriminator
        self.loss = loss if isinstance(loss, AdversarialLoss) else get_adversarial_loss(loss)
        adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
        # one optimizer over G and E (Donahue et al. 2017, sec. 3.4; Dumoulin et al. 2017, algorithm 1)
        self.add_player("generator", [generator, encoder], generator_optimizer or adam, generator_scheduler,
                        counts_global_step=True)
        self.add_player("discriminator", [discriminator], discriminator_optimizer or adam, discriminator_scheduler)

    # -- public API ---------------------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Size of the noise vector and of the codes."""
        return int(self.generator.latent_dim)

    def noise(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None
    ) -> Tensor:
        """Standard normal noise ``(num_samples, latent_dim)`` on this module's device (from ``generator`` if given),
        truncated to ``[-truncation, truncation]`` when given (the truncation trick)."""
        return truncated_randn((num_samples, self.latent_dim), truncation, generator, self.device)

    def forward(self, z: Tensor) -> Tensor:
        """Run the (training-mode) generator on noise ``z``."""
        return self.generator(z)

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """``G(z)`` in eval mode without gradients (float32); modes are restored. BiGAN is unconditional: ``labels``
        (taken for the interpolation callback's sake) must be ``None``."""
        if labels is not None:
            raise ValueError(f"{type(self).__name__} is unconditional (num_classes 0) but got labels")
        with eval_mode(self.generator):
            return full_precision(self.generator(z.to(self.device)))

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None,
        **condition: Any,
    ) -> Tensor:
        """``num_samples`` samples ``G(z)``, ``z ~ N(0, I)`` (from ``generator`` if given; truncated to
        ``[-truncation, truncation]`` when given), in eval mode."""
        reject_unexpected_arguments(self, condition)
        check_truncation(truncation)
        return self.generate(self.noise(num_samples, generator, truncation))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The codes ``E(x)`` ``(B, latent_dim)`` in eval mode without gradients (float32); modes are restored."""
        with eval_mode(self.encoder):
            return self._codes(full_precision(self.encoder(x.to(self.device))))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``G(E(x))`` in eval mode without gradients: the data as the generator redraws it from its codes."""
        return self.generate(self.encode(x))

    def _codes(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"the encoder ({type(self.encoder).__name__}) must return (B, {self.latent_dim}) codes (the generator's "
                f"latent_dim), got {tuple(z.shape)}: set its out_dim to {self.latent_dim}"
            )
        return z

    # -- the game -----------------------------------------------------------------------------------------------
    def pair_scores(self, x: Tensor, codes: Tensor, fakes: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(D(x, E(x)), D(G(z), z))``: the scores of the data pairs and of the sample pairs."""
        return self.discriminator(x, codes), self.discriminator(fakes, z)

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """The discriminator's loss: data pairs labelled real, sample pairs fake."""
        return self.loss.discriminator_loss(real_out, fake_out)

    def generator_encoder_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """The generator player's loss: sample pairs towards real and data pairs towards fake (see the class)."""
        if self.loss.needs_real_scores:
            return self.loss.generator_loss(fake_out, real_out)
        mirrored = 2.0 * self.loss.label_midpoint - full_precision(real_out)
        return self.loss.generator_loss(fake_out) + self.loss.generator_loss(mirrored)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One discriminator step on detached pairs, then one (counted) generator/encoder step with ``D`` frozen."""
        x = batch_data(batch)
        z = self.noise(x.shape[0])
        codes = self._codes(self.encoder(x))
        fakes = self.generator(z)
        self._check_shape(fakes, x)
        real_out, fake_out = self.pair_scores(x, codes.detach(), fakes.detach(), z)
        loss_d = self.discriminator_loss(real_out, fake_out)
        self.player_backward("discriminator", loss_d)
        self.player_step("discriminator")
        with self.frozen("discriminator"):
            real_out, fake_out = self.pair_scores(x, codes, fakes, z)
            loss_ge = self.generator_encoder_loss(real_out, fake_out)
            self.player_backward("generator", loss_ge)
        self.player_step("generator")
        if self.should_log(batch_idx):
            self.log_training({"train/loss_dis": loss_d.detach(), "train/loss_gen": loss_ge.detach()}, x.shape[0])

    def _check_shape(self, fakes: Tensor, x: Tensor) -> None:
        if fakes.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"The generator ({type(self.generator).__name__}) makes samples of shape {tuple(fakes.shape[1:])} but "
                f"the data has shape {tuple(x.shape[1:])}: set its output shape (output_shape, or image_size and "
                "channels) in `model.init_args.generator.init_args`."
            )

    def setup(self, stage: str) -> None:
        """Also check the three nets against the shape the data module declares, before any training."""
        super().setup(stage)
        wanted = declared_data_shape(self.trainer.datamodule) if self._trainer is not None else None
        if wanted is None or stage == "predict":
            return
        name = type(self.trainer.datamodule).__name__
        codes = torch.zeros(2, self.latent_dim)
        call_d: Callable[[Tensor], Tensor] = lambda x: self.discriminator(x, codes.to(x.device))  # noqa: E731
        raise_shape_problems(
            generator_output_problem(self.generator, self.generator, self.latent_dim, wanted, name),
            input_problem(self.encoder, self.encoder, wanted, name, "encoder"),
            input_problem(self.discriminator, call_d, wanted, name, "discriminator"),
        )

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> None:
        x = batch_data(batch)
        # fixed noise per batch index: evaluation neither depends on nor moves the global RNG
        z = self.noise(x.shape[0], evaluation_generator(batch_idx))
        codes = self._codes(full_precision(self.encoder(x)))
        real_out, fake_out = self.pair_scores(x, codes, self.generator(z), z)
        recon = full_precision(self.generator(codes))
        self.log_dict({
            f"{prefix}/loss_dis": self.discriminator_loss(real_out, fake_out),
            f"{prefix}/loss_gen": self.generator_encoder_loss(real_out, fake_out),
            f"{prefix}/reconstruction_mse": (recon - x).pow(2).flatten(1).sum(1).mean(),
        }, sync_dist=True, batch_size=x.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Both players' losses and ``val/reconstruction_mse`` (per-sample squared error of ``G(E(x))``)."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Both players' losses and ``test/reconstruction_mse`` on test data."""
        self._evaluate(batch, batch_idx, "test")
