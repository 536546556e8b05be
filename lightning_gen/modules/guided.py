"""Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022)."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_gen.checks import value_checks_enabled
from lightning_gen.diffusion.guidance import ClassifierFreeGuidance, check_guidance_scale, drop_labels
from lightning_gen.diffusion.samplers import DiffusionSampler
from lightning_gen.modules.base import batch_data, reject_unexpected_arguments
from lightning_gen.modules.diffusion import _EVAL_SEED, DDPM

__all__ = ["GuidedDDPM"]


class GuidedDDPM(DDPM):
    """A class-conditional DDPM sampled with classifier-free guidance (Ho & Salimans 2022).

    One denoiser ``denoiser(x_t, t, labels)`` (:class:`~lightning_gen.nets.UNet` or
    :class:`~lightning_gen.nets.MLPDenoiser` with ``num_classes``) learns both the conditional and the unconditional
    noise prediction: in training each label of an ``(images, labels)`` batch is replaced by the null label
    (``num_classes``) with probability ``label_dropout`` (p_uncond = 0.1 in the paper, alg. 1). Sampling runs
    DDPM's samplers on the guided prediction

        eps~ = (1 + w) eps(x_t, t, y) - w eps(x_t, t, null)          (eq. 6)

    with ``w = guidance_scale``: 0 is plain conditional sampling, -1 unconditional sampling, larger ``w`` trades
    diversity for samples that look more like their class (at the cost of one more denoiser evaluation per step, in
    the same batched call). Every other argument is :class:`~lightning_gen.DDPM`'s (schedule, sampler, EMA, ...).
    """

    _conditional = True

    def __init__(
        self,
        denoiser: nn.Module,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """Build the model around a class-conditional denoiser.

        Args:
            denoiser: net ``(x_t, t, labels) -> eps_pred`` with ``num_classes`` and ``data_shape`` attributes, labels
                ``0 .. num_classes - 1`` and the null label ``num_classes``.
            label_dropout: probability that a training label is replaced by the null label (Ho & Salimans' p_uncond).
            guidance_scale: the default w of :meth:`sample` (``sample(..., guidance_scale=w)`` overrides it).
            **kwargs: :class:`~lightning_gen.DDPM`'s arguments.
        """
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(
                f"label_dropout must lie in [0, 1) (0.1 in Ho & Salimans 2022; 0 never trains the unconditional "
                f"prediction that guidance needs), got {label_dropout}"
            )
        guidance_scale = check_guidance_scale(guidance_scale)
        super().__init__(denoiser, **kwargs)
        self.label_dropout = float(label_dropout)
        self.guidance_scale = guidance_scale
        self._batch_labels: Optional[Tensor] = None

    @property
    def num_classes(self) -> int:
        """The number of classes (the null label is ``num_classes``)."""
        return int(self.denoiser.num_classes)

    # -- training -------------------------------------------------------------------------------------------------
    def batch_labels(self, batch: Any) -> Tensor:
        """The labels of an ``(images, labels)`` batch, checked to lie in ``0 .. num_classes - 1``."""
        if not (isinstance(batch, (list, tuple)) and len(batch) > 1):
            raise ValueError(
                f"{type(self).__name__} is class-conditional (num_classes {self.num_classes}) and needs (images, labels) "
                "batches; the data module yields no labels."
            )
        labels = torch.as_tensor(batch[1]).reshape(-1)
        if value_checks_enabled() and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"batch labels must lie in 0..{self.num_classes - 1} for num_classes={self.num_classes}, got "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        return labels.long()

    def diffusion_loss(
        self,
        data: Tensor,
        generator: Optional[torch.Generator] = None,
        net: Optional[nn.Module] = None,
        labels: Optional[Tensor] = None,
    ) -> Tensor:
        """DDPM's L_simple of ``net(x_t, t, labels')``, ``labels'`` the ``labels`` with each replaced by the null label
        with probability ``label_dropout``; the dropout, then t and eps are drawn from ``generator`` when given, else
        from the global RNG."""
        if labels is None:
            raise ValueError(f"{type(self).__name__}.diffusion_loss needs the batch's labels")
        labels = drop_labels(labels.to(data.device), self.label_dropout, self.num_classes, generator)
        return super().diffusion_loss(data, generator, net, labels)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """DDPM's training step on ``(images, labels)`` batches, with label dropout."""
        with self.deferred_value_checks():
            self._batch_labels = self.batch_labels(batch)
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self._batch_labels = None

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The epsilon-prediction loss with label dropout, logged as ``loss``."""
        loss = self.diffusion_loss(data, labels=self._batch_labels)
        return loss, {"loss": loss.detach()}

    def _eval_loss(self, batch: Any, batch_idx: int, stage: str) -> Tensor:
        data = batch_data(batch)
        generator = torch.Generator().manual_seed(_EVAL_SEED + batch_idx)
        loss = self.diffusion_loss(data, generator=generator, net=self.sampling_denoiser, labels=self.batch_labels(batch))
        self.log(f"{stage}/loss", loss, batch_size=data.shape[0], sync_dist=True)
        return loss

    # -- sampling -------------------------------------------------------------------------------------------------
    def sampling_labels(self, labels: Any, num_samples: int) -> Tensor:
        """The labels ``sample()`` uses: ``arange(num_samples) % num_classes`` when ``None``, one label repeated, or
        one per sample; each in ``0 .. num_classes - 1`` (the null label is reached through ``guidance_scale=-1``)."""
        if labels is None:
            return torch.arange(num_samples, device=self.device) % self.num_classes
        labels = torch.as_tensor(labels, device=self.device).reshape(-1)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.long()
        if labels.numel() == 1:
            labels = labels.expand(num_samples)
        if labels.numel() != num_samples:
            raise ValueError(f"got {labels.numel()} labels for {num_samples} samples")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in 0..{self.num_classes - 1}, got {int(labels.min())}..{int(labels.max())} (for "
                "unconditional samples pass guidance_scale=-1)"
            )
        return labels

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: Optional[torch.Generator] = None,
        sampler: Union[str, DiffusionSampler, None] = None,
        labels: Any = None,
        guidance_scale: Optional[float] = None,
        **condition: Any,
    ) -> Tensor:
        """Draw ``(num_samples, *data_shape)`` samples of the given classes with classifier-free guidance.

        ``labels`` (one int, or one per sample) picks the classes; without them sample ``i`` gets class
        ``i % num_classes``. ``guidance_scale`` is w for this call (default: the module's): 0 conditional, -1
        unconditional, > 0 guided. ``generator`` and ``sampler`` work as in :meth:`DDPM.sample`; the same generator
        gives the same x_T and noise whatever w.
        """
        reject_unexpected_arguments(self, condition, hint="it takes labels and guidance_scale")
        w = self.guidance_scale if guidance_scale is None else check_guidance_scale(guidance_scale)
        guided = ClassifierFreeGuidance(self.sampling_denoiser, self.sampling_labels(labels, num_samples), w,
                                        self.num_classes)
        return self._run_sampler(guided, num_samples, generator, sampler)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """One sample per element of the batch, with the labels of ``(indices, labels)`` batches when present."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        labels = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        return self.sample(len(first), labels=labels)

