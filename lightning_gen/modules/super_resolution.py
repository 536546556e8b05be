"""Single-image super-resolution: SRGAN and its pixel-loss baseline SRResNet (Ledig et al. 2017).

Batches are dicts ``{"a": low-resolution (B, C, h, w), "b": high-resolution (B, C, scale h, scale w)}`` in [-1, 1]
(see :class:`~lightning_gen.data.SuperResolutionDataModule`). SRGAN is a game on
:class:`~lightning_gen.modules.adversarial.AdversarialModule`: one (counted) generator step on the perceptual loss
(eq. 3) ``content + adversarial_weight * gen(D(G(a)))``, then one discriminator step on ``D(b)`` vs
``D(G(a).detach())``: the content term is the MSE of a feature network's maps (the
paper's VGG54, :class:`~lightning_gen.nets.VGG19Features`) or the pixel MSE when no feature network is given
(SRGAN-MSE), ``adversarial_weight = 1e-3``. With ``adversarial_weight=0`` (or no discriminator) there is no
discriminator player and the module trains SRResNet on the content loss alone; :class:`SRResNet` names that case.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Any, Optional, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lightning_gen.losses.adversarial import AdversarialLoss, get_adversarial_loss
from lightning_gen.losses.content import SRGAN_ADVERSARIAL_WEIGHT, SRGAN_VGG_FEATURE_SCALE, content_loss
from lightning_gen.modules.adversarial import AdversarialModule
from lightning_gen.modules.base import eval_mode, reject_unexpected_arguments
from lightning_gen.modules.compile import CompileOption
from lightning_gen.modules.image_to_image import _pair
from lightning_gen.precision import full_precision

__all__ = ["SRGAN", "SRResNet"]

_OBJECT_ARGS = ["generator", "discriminator", "content_network", "loss", "generator_optimizer",
                "discriminator_optimizer", "generator_scheduler", "discriminator_scheduler"]


def _adam() -> OptimizerCallable:
    """The paper's optimizer: Adam(1e-4, (0.9, 0.999)) (sec. 3.2)."""
    return partial(torch.optim.Adam, lr=1e-4, betas=(0.9, 0.999))


def _image_quality(fake: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Mean per-image PSNR (dB) and SSIM of images in [-1, 1], measured on the images mapped to [0, 1] (PSNR is the
    same either way; SSIM's luminance term is not shift-invariant, and [0, 1] is the standard convention)."""
    fake, target = (fake.float() + 1) / 2, (target.float() + 1) / 2
    psnr = peak_signal_noise_ratio(fake, target, data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
    ssim = structural_similarity_index_measure(fake, target, data_range=1.0)
    return {"psnr": psnr, "ssim": ssim}


class SRGAN(AdversarialModule):
    """SRGAN (Ledig et al. 2017): a generator upscaling low-resolution images, trained on a content loss plus
    ``adversarial_weight`` times a discriminator's adversarial loss (eq. 3).

    ``sample(n, a=low_res)`` / :meth:`upscale` return the super-resolved images in eval mode; validation and test
    log ``psnr`` and ``ssim`` of ``G(a)`` against ``b`` (on images mapped to [0, 1]).
    """

    translates_inputs = True  # predict_step upscales the data module's low-resolution images
    _pinned_hparams: tuple[str, ...] = ()  # arguments a named subclass fixes (never saved)

    def __init__(
        self,
        generator: nn.Module,
        discriminator: Optional[nn.Module] = None,
        content_network: Optional[nn.Module] = None,
        content_feature_scale: float = SRGAN_VGG_FEATURE_SCALE,
        adversarial_weight: float = SRGAN_ADVERSARIAL_WEIGHT,
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
        """Build SRGAN from injected nets.

        Args:
            generator: maps low-resolution images to high-resolution ones (e.g. ``SRResNetGenerator``).
            discriminator: scores high-resolution images (e.g. ``SRGANDiscriminator``); ``None`` trains the generator
                on the content loss alone (SRResNet).
            content_network: a fixed feature network for the content loss (e.g. ``VGG19Features``, the paper's
                VGG54); ``None``: the pixel MSE. It is frozen and kept in eval mode.
            content_feature_scale: factor on the feature maps before their MSE (1/12.75 in the paper).
            adversarial_weight: weight of the adversarial term (1e-3 in the paper); 0 trains no discriminator.
            loss: adversarial loss name or :class:`AdversarialLoss` (``nonsaturating``: the paper's
                ``-log D(G(x))``); relativistic losses (ESRGAN's ``relativistic_average``) score the real batch too.
            generator_optimizer: callable building the generator's optimizer (default Adam(1e-4, (0.9, 0.999))).
            discriminator_optimizer: the same for the discriminator.
            generator_scheduler: optional LR scheduler, stepped after every generator step.
            discriminator_scheduler: optional LR scheduler, stepped after every discriminator step.
            accumulate_grad_batches: batches accumulated into each generator and discriminator step.
            gradient_clip_val: clip each player's gradients before its step, after unscaling (``None``: off).
            gradient_clip_algorithm: ``norm`` or ``value``.
            detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss; no optimizer steps on it
                or after it.
            compile: compile the generator (and discriminator) with ``torch.compile`` (``True``, or a dict of its
                arguments) once, at set-up.
        """
        super().__init__(accumulate_grad_batches, gradient_clip_val, gradient_clip_algorithm, detect_non_finite,
                         compile=compile)
        if adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        if content_feature_scale <= 0:
            raise ValueError(f"content_feature_scale must be > 0, got {content_feature_scale}")
        self.save_init_hyperparameters(_OBJECT_ARGS, pinned=self._pinned_hparams)
        self.generator = generator
        self.discriminator = discriminator
        self.content_network = content_network
        if content_network is not None:
            content_network.requires_grad_(False).eval()
        self.content_feature_scale = float(content_feature_scale)
        self.adversarial_weight = float(adversarial_weight)
        self.loss = loss if isinstance(loss, AdversarialLoss) else get_adversarial_loss(loss)
        self.add_player("generator", [generator], generator_optimizer or _adam(), generator_scheduler,
                        counts_global_step=True)
        if self.adversarial:
            assert discriminator is not None
            self.add_player("discriminator", [discriminator], discriminator_optimizer or _adam(),
                            discriminator_scheduler)

    @property
    def adversarial(self) -> bool:
        """Whether a discriminator is trained (a discriminator and ``adversarial_weight > 0``)."""
        return self.discriminator is not None and self.adversarial_weight > 0

    def train(self, mode: bool = True) -> "SRGAN":
        """Set the training mode; the content network always stays in eval mode."""
        super().train(mode)
        if self.content_network is not None:
            self.content_network.eval()
        return self

    # -- public API ---------------------------------------------------------------------------------------------
    def forward(self, a: Tensor) -> Tensor:
        """Run the (training-mode) generator on low-resolution images."""
        return self.generator(a)

    @torch.no_grad()
    def upscale(self, a: Tensor) -> Tensor:
        """Super-resolve low-resolution images ``a`` in [-1, 1] in eval mode without gradients; modes are restored."""
        with eval_mode(self.generator):
            return full_precision(self.generator(torch.as_tensor(a).to(self.device)))

    def translate(self, a: Tensor) -> Tensor:
        """:meth:`upscale` under the image-to-image name (what ``TranslationGridCallback``-style callbacks call)."""
        return self.upscale(a)

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: Optional[torch.Generator] = None, a: Optional[Tensor] = None,
        **condition: Any,
    ) -> Tensor:
        """Upscale the ``num_samples`` low-resolution images ``a`` (the required condition); ``generator`` is unused
        (eval mode is deterministic)."""
        name = type(self).__name__
        reject_unexpected_arguments(self, condition, "pass the low-resolution images as `a`")
        if a is None:
            raise TypeError(f"{name}.sample needs the low-resolution images to upscale: sample(num_samples, a=images)")
        if a.shape[0] != num_samples:
            raise ValueError(f"{name}.sample got num_samples={num_samples} but {a.shape[0]} low-resolution images")
        return self.upscale(a)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Upscale the batch's low-resolution images (``batch["a"]``)."""
        a = batch["a"] if isinstance(batch, dict) else (batch[0] if isinstance(batch, (list, tuple)) else batch)
        return self.upscale(a)

    # -- losses -------------------------------------------------------------------------------------------------
    def discriminator_loss(self, b: Tensor, fake_b: Tensor) -> Tensor:
        """The discriminator's adversarial loss on real high-resolution images ``b`` and detached fakes."""
        assert self.discriminator is not None
        return self.loss.discriminator_loss(self.discriminator(b), self.discriminator(fake_b.detach()))

    def generator_loss(self, b: Tensor, fake_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The perceptual loss ``content + adversarial_weight * adversarial`` (eq. 3) and its detached parts (the
        adversarial part unweighted)."""
        content = content_loss(full_precision(fake_b), b, self.content_network, self.content_feature_scale)
        parts = {"loss_content": content.detach()}
        if not self.adversarial:
            return content, parts
        assert self.discriminator is not None
        real_out = self.discriminator(b) if self.loss.needs_real_scores else None
        adv = self.loss.generator_loss(self.discriminator(fake_b), real_out)
        parts["loss_gen_adv"] = adv.detach()
        return content + self.adversarial_weight * adv, parts

    # -- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One (counted) generator step with the discriminator frozen, then one discriminator step (when adversarial)
        on the same, detached, fakes -- the order of the common SRGAN/ESRGAN code (e.g. BasicSR). The discriminator
        steps last, so its BatchNorm statistics (also moved by the generator step's forward) are rank 0's on every
        rank after each batch under DDP."""
        a, b = _pair(batch, type(self).__name__)
        fake_b = self.generator(a)
        if fake_b.shape != b.shape:
            raise ValueError(
                f"The generator maps low-resolution images {tuple(a.shape)} to {tuple(fake_b.shape)} but the "
                f"high-resolution images are {tuple(b.shape)}: the generator's scale must equal the data module's "
                "scale (and its out_channels the images' channels)."
            )
        with self.frozen("discriminator") if self.adversarial else nullcontext():
            loss_g, parts = self.generator_loss(b, fake_b)
            self.player_backward("generator", loss_g)
        self.player_step("generator")
        logs = {"train/loss_gen": loss_g.detach(), **{f"train/{k}": v for k, v in parts.items()}}
        if self.adversarial:
            loss_d = self.discriminator_loss(b, fake_b)
            self.player_backward("discriminator", loss_d)
            self.player_step("discriminator")
            logs["train/loss_dis"] = loss_d.detach()
        if self.should_log(batch_idx):
            self.log_training(logs, a.shape[0])

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, prefix: str) -> None:
        a, b = _pair(batch, type(self).__name__)
        quality = _image_quality(self.upscale(a), b.to(self.device))
        self.log_dict({f"{prefix}/{k}": v for k, v in quality.items()}, sync_dist=True, batch_size=a.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``val/psnr`` (dB) and ``val/ssim`` of the upscaled images against the high-resolution ones."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``test/psnr`` (dB) and ``test/ssim`` of the upscaled images against the high-resolution ones."""
        self._evaluate(batch, "test")


class SRResNet(SRGAN):
    """SRResNet (Ledig et al. 2017, sec. 3.2): the SRGAN generator trained on the content loss alone (pixel MSE by
    default: SRResNet-MSE; VGG54 with a ``content_network``) -- :class:`SRGAN` without a discriminator."""

    _pinned_hparams = ("discriminator", "adversarial_weight", "loss", "discriminator_optimizer",
                       "discriminator_scheduler")

    def __init__(
        self,
        generator: nn.Module,
        content_network: Optional[nn.Module] = None,
        content_feature_scale: float = SRGAN_VGG_FEATURE_SCALE,
        generator_optimizer: Optional[OptimizerCallable] = None,
        generator_scheduler: Optional[LRSchedulerCallable] = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: str = "norm",
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Build SRResNet from an injected generator (see :class:`SRGAN` for the arguments)."""
        super().__init__(
            generator, None, content_network=content_network, content_feature_scale=content_feature_scale,
            adversarial_weight=0.0, generator_optimizer=generator_optimizer, generator_scheduler=generator_scheduler,
            accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm, detect_non_finite=detect_non_finite, compile=compile,
        )
