"""InfoGAN (Chen et al. 2016): a GAN whose generator input carries latent codes that a Q head must recover."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from lightning_gen.losses.infogan import (
    categorical_code_loss,
    infogan_information_loss,
    information_lower_bound,
)
from lightning_gen.modules.base import (
    GenerativeModule,
    eval_mode,
    evaluation_generator,
    reject_unexpected_arguments,
)
from lightning_gen.modules.gan import GAN
from lightning_gen.nets.layers import one_hot
from lightning_gen.noise import check_truncation, rand, randint, truncated_randn
from lightning_gen.precision import full_precision

__all__ = ["InfoGAN"]

_CODE_KEYS = ("categorical", "continuous")


class InfoGAN(GAN):
    """InfoGAN (Chen et al. 2016, eq. 5): ``min_{G,Q} max_D V(D, G) - lambda L_I(G, Q)`` on the GAN game.

    The generator's input is ``concat(z, one_hot(c), c_cont)``: ``z`` standard normal noise (``noise_dim`` =
    ``generator.latent_dim - num_categories - num_continuous``), ``c`` a uniform categorical code of
    ``num_categories`` classes and ``c_cont`` ``num_continuous`` codes uniform in [-1, 1]. The code sizes come from
    the discriminator (:class:`~lightning_gen.nets.MLPInfoGANDiscriminator`,
    :class:`~lightning_gen.nets.DCGANInfoGANDiscriminator`, or any net with ``num_categories``, ``num_continuous``,
    ``q(x)`` and a ``q_head`` submodule), whose Q head shares the discriminator's trunk and predicts categorical logits
    and the continuous codes' means (a factored Gaussian with std fixed at 1, the paper's choice, or learned with
    ``learn_std=True``).

    Training is GAN's: ``n_critic`` discriminator steps, then a generator step whose loss is the adversarial loss plus
    ``categorical_weight * CE(Q logits, c) + continuous_weight * NLL(c_cont | Q means)``
    (:func:`~lightning_gen.losses.infogan_information_loss`), computed from one trunk pass over the fakes. As in the
    paper, Q's parameters (the ``q_head``) are trained with the generator step, by the generator's optimizer; the
    shared trunk and the score head are the discriminator's and are frozen in that step. The weights default to the
    paper's MNIST setting (1 for the categorical code) and 1 for the continuous codes with the std fixed at 1, as in
    the authors' released code; with a learned std, whose NLL can grow large, a smaller continuous weight (e.g. 0.1)
    is the usual choice.

    Logged on training batches: ``train/info_loss`` (the weighted term), ``train/info_categorical`` (CE, nats),
    ``train/info_continuous`` (NLL, nats) and ``train/mi_bound`` = ``log k - CE``, the lower bound on
    ``I(c; G(z, c))`` for the categorical code (at most ``log k``); ``train/loss_gen`` includes the weighted term.

    ``sample(n, codes={"categorical": ..., "continuous": ...})`` fixes codes (the parts left out are drawn at random);
    :meth:`infer_codes` reads Q's posterior on data. ``historical_averaging_weight`` is not supported (the Q head
    lives in the discriminator net but is the generator's player).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        categorical_weight: float = 1.0,
        continuous_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """Build InfoGAN from a generator and an InfoGAN discriminator; ``kwargs`` are :class:`GAN`'s (loss, optimizers,
        ``n_critic``, stabilizers, ...).

        Args:
            generator: maps ``(B, noise_dim + num_categories + num_continuous)`` inputs to samples.
            discriminator: an InfoGAN discriminator (``forward(x) -> score``, ``q(x)``, ``q_head``).
            categorical_weight: lambda of the categorical code's term (1 in the paper).
            continuous_weight: lambda of the continuous codes' term (1 with the std fixed at 1).
        """
        missing = [name for name in ("num_categories", "num_continuous", "q", "q_head") if not hasattr(discriminator, name)]
        if missing:
            raise ValueError(
                f"InfoGAN needs an InfoGAN discriminator (e.g. lightning_gen.nets.MLPInfoGANDiscriminator or "
                f"DCGANInfoGANDiscriminator); {type(discriminator).__name__} has no {', '.join(missing)}"
            )
        if int(getattr(generator, "num_classes", 0) or 0):
            raise ValueError("InfoGAN is unconditional: build the generator with num_classes 0 (its codes replace labels)")
        if kwargs.get("historical_averaging_weight"):
            raise ValueError("InfoGAN does not support historical_averaging_weight (the Q head is the generator's player)")
        for name, value in (("categorical_weight", categorical_weight), ("continuous_weight", continuous_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        num_categories, num_continuous = int(discriminator.num_categories), int(discriminator.num_continuous)
        latent_dim = int(getattr(generator, "latent_dim", 0))
        if latent_dim <= num_categories + num_continuous:
            raise ValueError(
                f"the generator's latent_dim ({latent_dim}) must exceed the codes' size, num_categories + num_continuous "
                f"= {num_categories} + {num_continuous}: its input is concat(noise, one_hot(c), c_cont); set latent_dim "
                f"to noise_dim + {num_categories + num_continuous} (e.g. {62 + num_categories + num_continuous} for 62 "
                "noise dimensions)"
            )
        super().__init__(generator, discriminator, **kwargs)
        self.categorical_weight = float(categorical_weight)
        self.continuous_weight = float(continuous_weight)
        self.num_categories = num_categories
        self.num_continuous = num_continuous
        self.noise_dim = latent_dim - num_categories - num_continuous
        q_head = discriminator.q_head
        if discriminator._parameters:
            raise ValueError(f"{type(discriminator).__name__} holds parameters outside its submodules; InfoGAN needs "
                             "them in submodules (the Q head's in `q_head`) to split them between the players")
        # Q's parameters are the generator's player (the paper's min over G and Q); the trunk and score head the critic's
        self.players["generator"].nets = (generator, q_head)
        self.players["discriminator"].nets = tuple(m for m in discriminator.children() if m is not q_head)
        self.current_codes: Optional[tuple[Optional[Tensor], Tensor]] = None  # codes of the latest noise() draw
        self._info_logs: dict[str, Tensor] = {}

    # -- codes --------------------------------------------------------------------------------------------------
    def nets_to_compile(self) -> list[nn.Module]:
        """The generator and the whole discriminator (its ``forward``; ``q`` runs eagerly)."""
        return [self.generator, self.discriminator]

    def sample_codes(
        self, num_samples: int, generator: Optional[torch.Generator] = None, codes: Optional[Mapping[str, Any]] = None,
        truncation: Optional[float] = None,
    ) -> dict[str, Optional[Tensor]]:
        """Noise and codes for ``num_samples`` inputs: ``{"noise", "categorical", "continuous"}``, drawn in that order
        from ``generator``; the codes given in ``codes`` replace the drawn ones (the noise is the same either way).
        ``truncation``: the noise (not the codes) from N(0, 1) truncated to ``[-truncation, truncation]``."""
        n = int(num_samples)
        noise = truncated_randn((n, self.noise_dim), truncation, generator, self.device)
        categorical = randint(self.num_categories, (n,), generator, self.device) if self.num_categories else None
        continuous = rand((n, self.num_continuous), generator, self.device) * 2 - 1
        if codes:
            unknown = sorted(set(codes) - set(_CODE_KEYS))
            if unknown:
                raise ValueError(f"unknown code names {unknown}; InfoGAN's codes are {list(_CODE_KEYS)}")
            if codes.get("categorical") is not None:
                categorical = self._fixed_categorical(codes["categorical"], n)
            if codes.get("continuous") is not None:
                continuous = self._fixed_continuous(codes["continuous"], n)
        return {"noise": noise, "categorical": categorical, "continuous": continuous}

    def _fixed_categorical(self, value: Any, n: int) -> Tensor:
        if not self.num_categories:
            raise ValueError("this InfoGAN has no categorical code (num_categories 0)")
        c = torch.as_tensor(value, device=self.device)
        if c.is_floating_point():
            raise ValueError(f"categorical codes must be integers in [0, {self.num_categories}), got {c.dtype}")
        c = c.long().reshape(-1)
        if c.numel() == 1:
            c = c.expand(n)
        if c.numel() != n:
            raise ValueError(f"got {c.numel()} categorical codes for {n} samples (give one, or one per sample)")
        if n and (int(c.min()) < 0 or int(c.max()) >= self.num_categories):
            raise ValueError(f"categorical codes must lie in [0, {self.num_categories - 1}], got {int(c.min())}..{int(c.max())}")
        return c

    def _fixed_continuous(self, value: Any, n: int) -> Tensor:
        c = torch.as_tensor(value, device=self.device, dtype=torch.get_default_dtype())
        m = self.num_continuous
        if c.dim() == 1 and c.numel() == m:
            c = c.expand(n, m)
        if c.shape != (n, m):
            raise ValueError(f"continuous codes must have shape ({m},) or ({n}, {m}), got {tuple(c.shape)}")
        return c

    def generator_input(self, noise: Tensor, categorical: Optional[Tensor], continuous: Tensor) -> Tensor:
        """``concat(noise, one_hot(categorical), continuous)``, the generator's input ``(B, latent_dim)``."""
        parts = [noise]
        if self.num_categories:
            assert categorical is not None
            parts.append(one_hot(categorical, self.num_categories, noise.dtype))
        parts.append(continuous.to(noise.dtype))
        return torch.cat(parts, dim=1)

    def noise(self, num_samples: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Generator inputs with random codes (from ``generator`` if given); their codes are kept in ``current_codes``
        for the generator step's information loss."""
        parts = self.sample_codes(num_samples, generator)
        self.current_codes = (parts["categorical"], parts["continuous"])
        return self.generator_input(**parts)

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None,
        codes: Optional[Mapping[str, Any]] = None, truncation: Optional[float] = None, **condition: Any,
    ) -> Tensor:
        """Generate ``num_samples`` samples in eval mode (EMA generator when enabled).

        ``codes={"categorical": int or (n,) ints, "continuous": (m,) or (n, m)}`` fixes codes; the parts left out are
        drawn at random, and the noise is the same for the same ``generator`` whichever codes are fixed.
        ``truncation``: the truncation trick on the noise ``z`` only (the codes keep their distributions).
        """
        reject_unexpected_arguments(self, condition, 'InfoGAN takes codes={"categorical": ..., "continuous": ...}')
        check_truncation(truncation)
        return self.generate(self.generator_input(**self.sample_codes(num_samples, generator, codes, truncation)))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """One sample per element of the batch (random codes)."""
        return GenerativeModule.predict_step(self, batch, batch_idx, dataloader_idx)

    @torch.no_grad()
    def infer_codes(self, x: Tensor, batch_size: int = 1024) -> dict[str, Tensor]:
        """Q's posterior on data ``x`` in eval mode: ``categorical`` (argmax, ``(B,)``), ``probabilities`` (``(B, k)``),
        ``continuous`` (the means, ``(B, m)``) and, with a learned std, ``continuous_std``."""
        outs = []
        with eval_mode(self.discriminator):
            for chunk in x.to(self.device).split(batch_size):
                outs.append(self.discriminator.q(chunk))
        logits = full_precision(torch.cat([o.logits for o in outs]))
        result = {"continuous": full_precision(torch.cat([o.means for o in outs]))}
        if self.num_categories:
            result["probabilities"] = logits.softmax(dim=1)
            result["categorical"] = logits.argmax(dim=1)
        if outs and outs[0].log_std is not None:
            result["continuous_std"] = full_precision(torch.cat([o.log_std for o in outs])).exp()
        return result

    # -- training -----------------------------------------------------------------------------------------------
    def generator_loss(self, fake: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """The adversarial loss plus the weighted information loss of the codes in ``current_codes``, from one pass of
        the discriminator's trunk over ``fake``."""
        if self.current_codes is None or self.current_codes[1].shape[0] != fake.shape[0]:
            raise ValueError("InfoGAN.generator_loss needs the codes of `fake`: draw its input with noise() first")
        out = self.discriminator.q(self._dis_input(fake))
        real_out = None
        if self.loss.needs_real_scores:
            if self.current_real is None:
                raise ValueError(f"the {self.loss.name!r} loss needs a real batch: set `current_real` first")
            with torch.no_grad():
                real_out = self.discriminator(self._dis_input(self.current_real))
        adversarial = self.loss.generator_loss(out.score, real_out)
        categorical, continuous = self.current_codes
        info, parts = infogan_information_loss(
            out.logits, categorical, out.means, continuous, out.log_std, self.categorical_weight, self.continuous_weight)
        logs = {"train/info_loss": info.detach()}
        if "categorical" in parts:
            logs["train/info_categorical"] = parts["categorical"]
            logs["train/mi_bound"] = information_lower_bound(self.num_categories, parts["categorical"])
        if "continuous" in parts:
            logs["train/info_continuous"] = parts["continuous"]
        self._info_logs = logs
        return adversarial + info

    def log_training(self, logs: dict[str, Any], batch_size: int) -> None:
        """Also log the information terms of the latest generator step."""
        super().log_training({**logs, **self._info_logs}, batch_size)

    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> None:
        """GAN's evaluation, plus the categorical code's cross-entropy and MI bound on fresh fakes."""
        super()._evaluate(batch, batch_idx, prefix)
        if not self.num_categories:
            return
        real, _ = self._split(batch)
        # fixed noise per batch index (another stream than GAN's evaluation): the global RNG is left alone
        z = self.noise(real.shape[0], evaluation_generator(batch_idx, seed=1))
        categorical = self.current_codes[0]
        out = self.discriminator.q(self._call(self.sampling_generator, z, None))
        ce = categorical_code_loss(out.logits, categorical)
        self.log_dict({f"{prefix}/info_categorical": ce, f"{prefix}/mi_bound": information_lower_bound(self.num_categories, ce)},
                      sync_dist=True, batch_size=real.shape[0])
