"""The GAN game on the adversarial base: k critic steps per generator step, any loss pair, stabilizers."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gen.losses.adversarial import AdversarialLoss, get_adversarial_loss
from lightning_gen.losses.regularizers import (
    clip_weights_,
    get_regularizer,
    orthogonal_regularization,
    orthogonal_weights,
)
from lightning_gen.losses.stabilizers import (
    add_instance_noise,
    feature_matching_loss,
    historical_averaging_penalty,
    instance_noise_std,
)
from lightning_gen.modules.adversarial import AdversarialModule
from lightning_gen.modules.base import NonFiniteLossError, evaluation_generator, reject_unexpected_arguments
from lightning_gen.modules.compile import CompileOption, eager
from lightning_gen.modules.shapes import (
    declared_data_shape,
    generator_output_problem,
    input_problem,
    raise_shape_problems,
    shape_settings,
)
from lightning_gen.nets.ema import ExponentialMovingAverage
from lightning_gen.precision import full_precision
from lightning_gen.noise import check_truncation, truncated_randn

__all__ = ["GAN", "ConditionalGAN", "WGAN", "WGANGP", "DRAGAN", "LSGAN", "HingeGAN", "NonFiniteLossError"]

Regularizer = Callable[..., Tensor]


class _ParameterAverage(nn.Module):
    """Running mean of a net's parameters over its optimizer steps, kept in float32 buffers so checkpoints hold it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        for i, p in enumerate(net.parameters()):
            self.register_buffer(f"mean_{i}", p.detach().clone().float())
        self.register_buffer("count", torch.ones((), dtype=torch.long))
        self._count: Optional[int] = 1  # host mirror of count, so an update never waits for the device

    def means(self) -> list[Tensor]:
        """The running means, one per parameter of the net."""
        return [b for name, b in self.named_buffers() if name.startswith("mean_")]

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Fold the net's current parameters into the means."""
        count = (int(self.count) if self._count is None else self._count) + 1  # read once after loading
        self.count += 1
        self._count = count
        torch._foreach_lerp_(self.means(), [p.detach().float() for p in net.parameters()], 1.0 / float(count))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._count = None


def _takes_grad_scale(fn: Callable[..., Any]) -> bool:
    """Whether a regularizer accepts ``grad_scale`` (the built-in penalties do; custom callables may not)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "grad_scale" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class GAN(AdversarialModule):
    """A generator/discriminator game on :class:`~lightning_gen.modules.adversarial.AdversarialModule`.

    Each training batch is one critic micro-batch; every ``accumulate_grad_batches`` micro-batches make one critic
    step, and every ``n_critic`` critic steps are followed by one generator step (Goodfellow 2014, algorithm 1),
    whose gradients are accumulated over ``accumulate_grad_batches`` fresh noise batches. ``trainer.global_step`` --
    and so ``max_steps``, checkpoint names and step-based callbacks -- counts generator steps; ``critic_steps``
    counts critic steps. Each learning-rate scheduler steps with its own optimizer.

    The players are ``generator`` (with the optional EMA) and ``discriminator``; the base averages their gradients
    under DDP (a plain ``strategy: ddp`` works), unscales and clips them under ``16-mixed`` with one loss scaler per
    player, and keeps the counters in checkpoints. The critic's regularizer is computed with the critic's loss scale
    (see :mod:`lightning_gen.losses.regularizers`).

    Conditional nets (``generator.num_classes > 0``) make a conditional GAN: batches are ``(images, labels)``, fakes
    for a batch are drawn with the batch's labels, and both nets are called as ``net(input, labels)``.

    Stabilizers (each off by default): one-sided ``label_smoothing`` (Salimans 2016), annealed ``instance_noise``
    (Sønderby 2017), ``feature_matching_weight`` and ``historical_averaging_weight`` (Salimans 2016), the
    generator's ``orthogonal_reg`` (BigGAN, Brock 2019), and an
    exponential moving average of the generator (``ema_decay``; Yazıcı 2019) that :meth:`sample`,
    :meth:`generate`, validation and prediction use. Minibatch-std is a discriminator option
    (``DCGANDiscriminator(minibatch_std=True)``).

    To change the game, pass another loss (any registered name, e.g. ``relativistic_average``, or an
    :class:`AdversarialLoss`), or override :meth:`critic_loss` and/or :meth:`generator_loss`; while training,
    ``current_real`` holds the running step's real micro-batch.
    """

    EMA_BATCH_NORM_BATCHES = 16  # batches of 64 noise draws that re-estimate an EMA generator's BatchNorm statistics
    EMA_BATCH_NORM_SEED = 2  # their fixed noise stream (``evaluation_generator(0, seed)``)

    # Arguments a named game fixes when it calls ``GAN.__init__``; they are not saved as its hyperparameters.
    _pinned_hparams: tuple[str, ...] = ()

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
        label_smoothing: float = 0.0,
        instance_noise: float = 0.0,
        instance_noise_anneal_steps: Optional[int] = None,
        feature_matching_weight: float = 0.0,
        historical_averaging_weight: float = 0.0,
        orthogonal_reg: float = 0.0,
        ema_decay: Optional[float] = None,
        ema_warmup: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Build the game from injected nets, a loss pair, an optional critic regularizer and two optimizers.

        Args:
            generator: maps ``(B, generator.latent_dim)`` noise to samples shaped like the data.
            discriminator: maps a batch to one raw score per sample.
            loss: an :class:`AdversarialLoss` or one of ``minimax``, ``nonsaturating``, ``wasserstein``, ``hinge``,
                ``least_squares``, ``relativistic`` (RSGAN), ``relativistic_average`` (RaGAN).
            regularizer: ``gradient_penalty``, ``dragan``, ``r1`` or a callable ``(critic, real, fake) -> Tensor``
                (it gets ``grad_scale=`` under ``16-mixed`` when its signature takes it).
            regularizer_weight: multiplies the regularizer (lambda of WGAN-GP/DRAGAN, gamma of R1).
            n_critic: critic steps per generator step (5 for WGAN and WGAN-GP).
            clip_value: clamp the critic's weights to ``[-c, c]`` after each critic step (WGAN: 0.01).
            generator_optimizer: callable building the generator's optimizer (default Adam(2e-4, (0.5, 0.999))).
            discriminator_optimizer: the same for the critic; a different learning rate gives TTUR.
            generator_scheduler: optional LR scheduler, stepped after every generator step.
            discriminator_scheduler: optional LR scheduler, stepped after every critic step.
            accumulate_grad_batches: micro-batches accumulated into each critic (and generator) step.
            gradient_clip_val: clip each net's gradients before its step, after unscaling (``None``: off).
            gradient_clip_algorithm: ``norm`` or ``value``.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss; no optimizer steps on it
                or after it, and finding it never makes a step wait for the device.
            label_smoothing: one-sided label smoothing ``s``: the critic's real target becomes ``1 - s`` (0.1 gives
                Salimans' 0.9); for the losses marked ``smoothable``.
            instance_noise: std of Gaussian noise added to every discriminator input, real and fake (data units).
            instance_noise_anneal_steps: decay that std linearly to 0 over this many generator steps (``None``:
                constant).
            feature_matching_weight: add ``w * ||E f(x) - E f(G(z))||^2`` to the generator loss, ``f`` being
                ``discriminator.features`` (the discriminator must have a ``features`` method).
            historical_averaging_weight: add ``w * ||theta - mean of past theta||^2`` to each player's loss.
            orthogonal_reg: BigGAN's orthogonal regularization of the generator (Brock et al. 2019, eq. 3): add
                ``beta * sum_W ||W W^T * (1 - I)||_F^2`` over its conv and linear weights (biases, norms and
                embeddings excluded) to the generator loss; the paper's beta is ``1e-4``, 0 turns it off. The
                unweighted sum is logged as ``train/orthogonal_reg``.
            ema_decay: keep an exponential moving average of the generator's weights (e.g. 0.999) and sample from it.
            ema_warmup: use ``min(ema_decay, (1 + n) / (10 + n))`` at EMA update ``n``.
            compile: compile the generator and the discriminator with ``torch.compile`` (``True``, or a dict of its
                arguments, e.g. ``{mode: max-autotune}``) once, at set-up; the regularizer's double backward runs the
                critic eagerly (see :mod:`lightning_gen.modules.compile`).
        """
        super().__init__(accumulate_grad_batches, gradient_clip_val, gradient_clip_algorithm, detect_non_finite,
                         compile=compile)
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1 (critic steps per generator step), got {n_critic}")
        if clip_value is not None and clip_value <= 0:
            raise ValueError(f"clip_value must be positive or null, got {clip_value}")
        if not hasattr(generator, "latent_dim"):
            raise ValueError(f"the generator ({type(generator).__name__}) needs a `latent_dim` attribute giving its noise size")
        num_classes = int(getattr(generator, "num_classes", 0) or 0)
        if int(getattr(discriminator, "num_classes", 0) or 0) != num_classes:
            raise ValueError(
                f"generator and discriminator disagree on num_classes ({num_classes} vs "
                f"{getattr(discriminator, 'num_classes', 0)}): set the same `num_classes` on both nets."
            )
        if feature_matching_weight and not callable(getattr(discriminator, "features", None)):
            raise ValueError(
                f"feature_matching_weight needs a discriminator with a `features(x)` method; "
                f"{type(discriminator).__name__} has none."
            )
        for name, value in (("label_smoothing", label_smoothing), ("instance_noise", instance_noise),
                            ("feature_matching_weight", feature_matching_weight),
                            ("historical_averaging_weight", historical_averaging_weight),
                            ("orthogonal_reg", orthogonal_reg)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if orthogonal_reg and not orthogonal_weights(generator):
            raise ValueError(
                f"orthogonal_reg regularizes the generator's conv and linear weights, and "
                f"{type(generator).__name__} has none: set orthogonal_reg: 0"
            )
        if label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be < 1 (0.1 makes the real target 0.9), got {label_smoothing}")
        self.save_init_hyperparameters(
            ["generator", "discriminator", "loss", "regularizer", "generator_optimizer", "discriminator_optimizer",
             "generator_scheduler", "discriminator_scheduler"],
            pinned=self._pinned_hparams,
        )
        self.generator = generator
        self.discriminator = discriminator
        self.loss = loss if isinstance(loss, AdversarialLoss) else get_adversarial_loss(loss)
        if label_smoothing and not self.loss.smoothable:
            raise ValueError(
                f"label_smoothing applies to the losses marked smoothable (minimax, nonsaturating, least_squares, "
                f"relativistic, relativistic_average), not {self.loss.name!r}"
            )
        self.regularizer: Optional[Regularizer] = get_regularizer(regularizer) if isinstance(regularizer, str) else regularizer
        self._regularizer_takes_scale = self.regularizer is not None and _takes_grad_scale(self.regularizer)
        self.regularizer_weight = float(regularizer_weight)
        self.n_critic = int(n_critic)
        self.clip_value = clip_value
        self.label_smoothing = float(label_smoothing)
        self.instance_noise = float(instance_noise)
        self.instance_noise_anneal_steps = instance_noise_anneal_steps
        instance_noise_std(self.instance_noise, 0, instance_noise_anneal_steps)  # validates the schedule now
        self.feature_matching_weight = float(feature_matching_weight)
        self.historical_averaging_weight = float(historical_averaging_weight)
        self.orthogonal_reg = float(orthogonal_reg)
        self.generator_ema = ExponentialMovingAverage(generator, ema_decay, ema_warmup) if ema_decay is not None else None
        if historical_averaging_weight:
            self.generator_average: Optional[_ParameterAverage] = _ParameterAverage(generator)
            self.discriminator_average: Optional[_ParameterAverage] = _ParameterAverage(discriminator)
        else:
            self.generator_average = self.discriminator_average = None
        adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
        self.add_player("generator", [generator], generator_optimizer or adam, generator_scheduler,
                        ema=self.generator_ema, counts_global_step=True)
        self.add_player("discriminator", [discriminator], discriminator_optimizer or adam, discriminator_scheduler)
        self.current_real: Optional[Tensor] = None  # the real micro-batch of the running training step

    # -- public API ---------------------------------------------------------------------------------------------
    def steps_per_generator_step(self, name: str) -> int:
        """The discriminator steps ``n_critic`` times per generator step, the generator once."""
        return self.n_critic if name == "discriminator" else 1

    @property
    def latent_dim(self) -> int:
        """Size of the generator's noise vector."""
        return int(self.generator.latent_dim)

    @property
    def num_classes(self) -> int:
        """Number of classes the nets are conditioned on (0: unconditional)."""
        return int(getattr(self.generator, "num_classes", 0) or 0)

    @property
    def sampling_generator(self) -> nn.Module:
        """The net that :meth:`sample` and evaluation use: the EMA generator when enabled, else the generator.

        An EMA generator with BatchNorm gets running statistics of its own first (after each update or load): its
        layers are re-estimated on ``EMA_BATCH_NORM_BATCHES`` batches of 64 fixed noise draws (the same on every
        device), since statistics copied from the live generator do not fit the averaged weights.
        """
        ema = self.generator_ema
        if ema is None:
            return self.generator
        if ema.batch_norm_stale:
            draws = evaluation_generator(0, seed=self.EMA_BATCH_NORM_SEED)
            ema.recompute_batch_norm(
                (self.noise(64, draws), self._check_labels(None, 64)) if self.num_classes else (self.noise(64, draws),)
                for _ in range(self.EMA_BATCH_NORM_BATCHES))
        return ema

    @property
    def critic_steps(self) -> int:
        """Critic optimizer steps taken so far."""
        return self.players["discriminator"].steps

    def noise(
        self, num_samples: int, generator: Optional[torch.Generator] = None, truncation: Optional[float] = None
    ) -> Tensor:
        """Standard normal noise ``(num_samples, latent_dim)`` on this module's device (from ``generator`` if given);
        with ``truncation`` every value is redrawn until ``|z| <= truncation`` (Brock et al. 2019)."""
        return truncated_randn((num_samples, self.latent_dim), truncation, generator, self.device)

    def forward(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Run the (training) generator on noise ``z`` (and ``labels`` for a conditional GAN)."""
        return self._call(self.generator, z, labels)

    def _call(self, net: Any, x: Tensor, labels: Optional[Tensor]) -> Tensor:
        return net(x) if labels is None else net(x, labels)
    def _check_labels(self, labels: Optional[Tensor], num_samples: int) -> Optional[Tensor]:
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError(f"{type(self).__name__} has unconditional nets (num_classes 0) but got labels")
            return None
        if labels is None:
            return torch.arange(num_samples, device=self.device) % self.num_classes
        labels = torch.as_tensor(labels, device=self.device).long().reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(num_samples)
        if labels.numel() != num_samples:
            raise ValueError(f"got {labels.numel()} labels for {num_samples} samples")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got {labels.min()}..{labels.max()}")
        return labels

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Run the sampling generator (EMA when enabled) in eval mode on given noise ``z``; modes are restored."""
        net = self.sampling_generator
        was_training = net.training
        net.eval()
        try:
            return full_precision(self._call(net, z.to(self.device), self._check_labels(labels, z.shape[0])))
        finally:
            net.train(was_training)

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, labels: Optional[Tensor] = None,
        truncation: Optional[float] = None, **condition: Any,
    ) -> Tensor:
        """Generate ``num_samples`` samples in eval mode, from the EMA generator when enabled.

        For a conditional GAN, ``labels`` (one int, or one per sample) picks the classes; without them sample ``i``
        gets class ``i % num_classes``. ``truncation`` (the truncation trick, Brock et al. 2019): draw the noise
        from N(0, 1) truncated to ``[-truncation, truncation]``, trading variety for fidelity as it shrinks;
        ``None`` (default) draws the same untruncated noise as before for the same ``generator``.
        """
        reject_unexpected_arguments(self, condition)
        check_truncation(truncation)
        # only a truncated draw passes the argument, so a subclass whose noise() predates it still samples untruncated
        z = self.noise(num_samples, generator) if truncation is None else self.noise(num_samples, generator, truncation)
        return self.generate(z, labels)

    @torch.no_grad()
    def discriminate(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """The discriminator's raw score for each sample of ``x`` (used by plotting callbacks)."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            return self._call(self.discriminator, x.to(self.device), labels)
        finally:
            self.discriminator.train(was_training)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """One sample per element of the batch; a conditional GAN takes the labels from ``(indices, labels)``."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        labels = batch[1] if self.num_classes and isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        return self.sample(len(first), labels=labels)

    # -- training -----------------------------------------------------------------------------------------------
    def _split(self, batch: Any) -> tuple[Tensor, Optional[Tensor]]:
        """``(data, labels)`` of a batch; labels only for a conditional GAN (they must be the batch's second item)."""
        data = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.num_classes == 0:
            return data, None
        if not (isinstance(batch, (list, tuple)) and len(batch) > 1):
            raise ValueError(
                f"{type(self).__name__} has conditional nets (num_classes {self.num_classes}) and needs "
                "(images, labels) batches; the data module yields no labels."
            )
        return data, batch[1]

    def current_instance_noise(self) -> float:
        """The instance-noise std at the current generator step."""
        if not self.instance_noise:
            return 0.0
        return instance_noise_std(self.instance_noise, self.generator_steps, self.instance_noise_anneal_steps)

    def _dis_input(self, x: Tensor) -> Tensor:
        """What the discriminator sees while training: ``x`` plus the current instance noise."""
        return add_instance_noise(x, self.current_instance_noise())

    def setup(self, stage: str) -> None:
        """Also check the nets against the shape the data module declares (``data_shape`` or ``image_shape``), before
        any sanity check, metric set-up or training; data modules that declare none are checked at the first batch."""
        super().setup(stage)
        wanted = declared_data_shape(self.trainer.datamodule) if self._trainer is not None else None
        if wanted is None or stage == "predict":
            return
        data_name = type(self.trainer.datamodule).__name__
        labels = (torch.arange(2) % self.num_classes) if self.num_classes else None

        def call(net: nn.Module) -> Callable[[Tensor], Tensor]:
            return lambda x: self._call(net, x, None if labels is None else labels.to(x.device))

        raise_shape_problems(
            generator_output_problem(self.generator, call(self.generator), self.latent_dim, wanted, data_name),
            input_problem(self.discriminator, call(self.discriminator), wanted, data_name, "discriminator"),
        )

    def _check_shape(self, fake: Tensor, real: Tensor) -> None:
        if fake.shape[1:] != real.shape[1:]:
            wanted = tuple(real.shape[1:])
            fix = shape_settings(self.generator, wanted, tuple(fake.shape[1:]))
            how = ", ".join(f"{k}: {v}" for k, v in fix.items()) or f"an output shape of {wanted}"
            raise ValueError(
                f"The generator ({type(self.generator).__name__}) makes samples of shape {tuple(fake.shape[1:])} but "
                f"the data has shape {wanted}: set {how} in `model.init_args.generator.init_args`."
            )

    def critic_loss(
        self, real: Tensor, fake: Tensor, labels: Optional[Tensor] = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The critic's objective on one batch (adversarial term plus weighted regularizer) and its parts."""
        real, fake = self._dis_input(real), self._dis_input(fake)
        real_out = self._call(self.discriminator, real, labels)
        fake_out = self._call(self.discriminator, fake, labels)
        loss_adv = self.loss.discriminator_loss(real_out, fake_out, real_target=1.0 - self.label_smoothing)
        parts = {"loss_dis_adv": loss_adv.detach()}
        if self.loss.estimates_wasserstein:
            parts["wasserstein_estimate"] = -loss_adv.detach()
        total = loss_adv
        if self.regularizer is not None:
            critic = self.discriminator if labels is None else partial(self.discriminator, labels=labels)
            scale = self.gradient_scale("discriminator") if self._regularizer_takes_scale else None
            with eager(self.discriminator):  # compiled graphs have no double backward: the penalty's critic is eager
                penalty = self.regularizer(critic, real, fake) if scale is None else self.regularizer(
                    critic, real, fake, grad_scale=scale)
            parts["penalty"] = penalty.detach()
            total = total + self.regularizer_weight * penalty
        return total, parts

    def generator_loss(self, fake: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """The generator's adversarial objective on a batch of its samples (relativistic losses also score
        ``current_real``, without gradients)."""
        fake_out = self._call(self.discriminator, self._dis_input(fake), labels)
        real_out = None
        if self.loss.needs_real_scores:
            if self.current_real is None:
                raise ValueError(f"the {self.loss.name!r} loss needs a real batch: set `current_real` first")
            with torch.no_grad():
                real_out = self._call(self.discriminator, self._dis_input(self.current_real), labels)
        return self.loss.generator_loss(fake_out, real_out)

    def _historical_average(self, net: nn.Module, average: Optional[_ParameterAverage]) -> Optional[Tensor]:
        if average is None:
            return None
        return self.historical_averaging_weight * historical_averaging_penalty(list(net.parameters()), average.means())

    def _feature_matching(self, real: Tensor, fake: Tensor, labels: Optional[Tensor]) -> Tensor:
        with torch.no_grad():
            real_features = self._call(self.discriminator.features, self._dis_input(real), labels)
        fake_features = self._call(self.discriminator.features, self._dis_input(fake), labels)
        return feature_matching_loss(real_features.float(), fake_features.float())

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One critic micro-batch; a critic step every ``accumulate_grad_batches``, a generator step every ``n_critic``."""
        real, labels = self._split(batch)
        self.current_real = real
        batch_size = real.shape[0]
        # the conditional nets' label-range check waits for the device: not in batches that neither log nor start
        # an epoch
        with self.deferred_value_checks():
            with torch.no_grad():
                fake = self._call(self.generator, self.noise(batch_size), labels)
            self._check_shape(fake, real)
            loss_d, parts = self.critic_loss(real, fake, labels)
            history = self._historical_average(self.discriminator, self.discriminator_average)
            if history is not None:
                parts["historical_averaging_dis"] = history.detach()
                loss_d = loss_d + history
            # Under a loss scaler an overflowed penalty is a scaling artefact the scaler skips; check the rest.
            if self.gradient_scale("discriminator") is not None and "penalty" in parts:
                # the loss without the penalty: the scaler skips the step when the penalty is inf
                self.check_finite(parts["loss_dis_adv"] + (history.detach() if history is not None else 0.0),
                                  "discriminator")
            else:
                self.check_finite(loss_d, "discriminator")
            self.player_backward("discriminator", loss_d, check_finite=False)
            logs = {"train/loss_dis": loss_d.detach(), **{f"train/{k}": v for k, v in parts.items()}}

            if self.player_step("discriminator"):
                if self.clip_value is not None:
                    clip_weights_(self.discriminator, self.clip_value)
                if self.discriminator_average is not None:
                    self.discriminator_average.update(self.discriminator)
                if self.critic_steps % self.n_critic == 0:
                    logs.update(self._generator_step(real, labels))
        if self.should_log(batch_idx):
            logs["train/critic_steps"] = float(self.critic_steps)
            if self.instance_noise:
                logs["train/instance_noise"] = self.current_instance_noise()
            self.log_training(logs, batch_size)

    def _generator_step(self, real: Tensor, labels: Optional[Tensor]) -> dict[str, Tensor]:
        """Accumulate the generator's gradients over ``accumulate_grad_batches`` fresh batches and step it."""
        logs: dict[str, Tensor] = {}
        total = torch.zeros((), device=self.device)
        acc = self.accumulate_grad_batches
        with self.frozen("discriminator"):
            for _ in range(acc):
                fake = self._call(self.generator, self.noise(real.shape[0]), labels)
                loss_g = self.generator_loss(fake, labels)
                if self.feature_matching_weight:
                    matching = self._feature_matching(real, fake, labels)
                    logs["train/feature_matching"] = matching.detach()
                    loss_g = loss_g + self.feature_matching_weight * matching
                history = self._historical_average(self.generator, self.generator_average)
                if history is not None:
                    logs["train/historical_averaging_gen"] = history.detach()
                    loss_g = loss_g + history
                if self.orthogonal_reg:
                    orthogonal = orthogonal_regularization(self.generator)
                    logs["train/orthogonal_reg"] = orthogonal.detach()
                    loss_g = loss_g + self.orthogonal_reg * orthogonal
                self.player_backward("generator", loss_g)
                total += loss_g.detach() / acc
        self.player_step("generator")
        if self.generator_average is not None:
            self.generator_average.update(self.generator)
        logs["train/loss_gen"] = total
        return logs

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> None:
        real, labels = self._split(batch)
        # fixed noise per batch index: evaluation neither depends on nor moves the global RNG
        fake = self._call(self.sampling_generator, self.noise(real.shape[0], evaluation_generator(batch_idx)), labels)
        self._check_shape(fake, real)
        real_out = self._call(self.discriminator, real, labels)
        fake_out = self._call(self.discriminator, fake, labels)
        logs = {f"{prefix}/loss_dis": self.loss.discriminator_loss(real_out, fake_out),
                f"{prefix}/loss_gen": self.loss.generator_loss(fake_out, real_out)}
        if self.loss.estimates_wasserstein:
            logs[f"{prefix}/wasserstein_estimate"] = -logs[f"{prefix}/loss_dis"]
        self.log_dict(logs, sync_dist=True, batch_size=real.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Losses of both players on held-out real data and fresh samples."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Losses of both players on test data and fresh samples."""
        self._evaluate(batch, batch_idx, "test")


class ConditionalGAN(GAN):
    """A GAN whose nets are conditioned on class labels (Mirza & Osindero 2014); any loss or regularizer applies.

    Identical to :class:`GAN` with conditional nets, but refuses unconditional ones, so a config that forgets
    ``num_classes`` fails at once instead of silently training an unconditional model.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any) -> None:
        if not int(getattr(generator, "num_classes", 0) or 0):
            raise ValueError(
                f"ConditionalGAN needs conditional nets: set `num_classes` (e.g. 10 for MNIST) on the generator and "
                f"the discriminator ({type(generator).__name__} has num_classes 0)."
            )
        super().__init__(generator, discriminator, **kwargs)


# -- named games: the papers' fixed hyperparameters as defaults, overridable from YAML ------------------------------
def _default(factory: Optional[OptimizerCallable], optimizer: type, **kwargs: Any) -> OptimizerCallable:
    return factory if factory is not None else partial(optimizer, **kwargs)


class WGAN(GAN):
    """WGAN with weight clipping (Arjovsky et al. 2017, algorithm 1): RMSProp(5e-5), c = 0.01, n_critic = 5."""

    _pinned_hparams = ("loss",)

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

    _pinned_hparams = ("loss", "regularizer", "regularizer_weight")

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

    _pinned_hparams = ("loss", "regularizer", "regularizer_weight")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, penalty_weight: float = 10.0, **kwargs: Any) -> None:
        super().__init__(
            generator, discriminator, loss="nonsaturating", regularizer="dragan", regularizer_weight=penalty_weight,
            **kwargs,
        )


class LSGAN(GAN):
    """Least-squares GAN (Mao et al. 2017) with the a=0, b=1, c=1 coding and Adam(2e-4, (0.5, 0.999))."""

    _pinned_hparams = ("loss",)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any) -> None:
        super().__init__(generator, discriminator, loss="least_squares", **kwargs)


class HingeGAN(GAN):
    """Hinge-loss GAN as used by SNGAN (Miyato et al. 2018); pair it with a spectrally normalized discriminator."""

    _pinned_hparams = ("loss",)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any) -> None:
        super().__init__(generator, discriminator, loss="hinge", **kwargs)
