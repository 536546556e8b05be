"""Small layers and helpers shared by the image GAN nets: minibatch std, labels, DCGAN init, spectral norm."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from lightning_gen.checks import value_checks_enabled

__all__ = [
    "MinibatchStdDev",
    "minibatch_group_size",
    "ConditionalBatchNorm2d",
    "check_labels",
    "check_images",
    "one_hot",
    "init_dcgan_weights_",
    "maybe_spectral_norm",
]

M = TypeVar("M", bound=nn.Module)
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def minibatch_group_size(batch_size: int, group_size: int) -> int:
    """Group size MinibatchStdDev uses: the largest divisor of ``batch_size`` up to ``group_size`` (else the batch)."""
    if batch_size <= group_size:
        return batch_size
    for g in range(group_size, 1, -1):
        if batch_size % g == 0:
            return g
    return batch_size  # batch size prime and > group_size: groups of one carry no statistic, use the whole batch


class MinibatchStdDev(nn.Module):
    """Append the average per-group standard deviation as one extra feature map (Karras et al. 2018, sec. 3).

    The batch is split into groups of ``group_size`` samples (sample ``i`` belongs to group ``i % (B // G)``, as in
    the ProGAN code); within each group the std over samples is taken for every feature and pixel
    (``sqrt(var + 1e-8)``, biased variance), averaged over features and pixels, and broadcast as a constant map
    to that group's samples. Batches not divisible by ``group_size`` use the largest divisor of the batch size
    that is at most ``group_size``; a batch no larger than ``group_size``, or one with no divisor other than 1
    below it, forms a single group. Output: ``(B, C + 1, H, W)``.
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a std needs at least two samples), got {group_size}")
        self.group_size = int(group_size)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` with the minibatch-std feature map concatenated along channels."""
        if x.dim() != 4:
            raise ValueError(f"MinibatchStdDev expects (B, C, H, W) inputs, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        g = minibatch_group_size(n, self.group_size)
        y = x.reshape(g, n // g, c, h, w)
        y = (y.var(dim=0, unbiased=False) + self.eps).sqrt()  # (B // G, C, H, W)
        y = y.mean(dim=(1, 2, 3)).repeat(g)  # (B,): sample i gets the value of group i % (B // G)
        return torch.cat([x, y.view(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        """Show the group size in the module's repr."""
        return f"group_size={self.group_size}"


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d whose scale and shift are looked up per class (categorical conditional BN, de Vries et al. 2017).

    Normalization statistics are shared by all classes; ``gamma[y] ~ N(1, 0.02)`` (like DCGAN's BatchNorm init, so
    the classes differ slightly from the start) and ``beta[y] = 0``.
    """

    def __init__(self, num_features: int, num_classes: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ConditionalBatchNorm2d needs num_classes >= 1, got {num_classes}")
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.bn = nn.BatchNorm2d(num_features, affine=False, momentum=momentum, eps=eps)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        self.reset_affine_()

    def reset_affine_(self, std: float = 0.02) -> None:
        """Re-draw the per-class scales ``gamma[y] ~ N(1, std)`` and zero the shifts ``beta[y]``."""
        nn.init.normal_(self.gamma.weight, 1.0, std)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Normalize ``x`` and apply the scale and shift of each sample's class."""
        out = self.bn(x)
        shape = (-1, self.num_features, 1, 1)
        return self.gamma(labels).view(shape) * out + self.beta(labels).view(shape)


def check_labels(labels: Tensor | None, num_classes: int, batch_size: int, net: str) -> Tensor | None:
    """Validate the ``labels`` given to net ``net`` and return them as int64 (None for an unconditional net).

    Conditional nets (``num_classes > 0``) need an integer tensor of shape ``(batch_size,)`` with values in
    ``[0, num_classes)``; unconditional nets accept only ``labels=None``. The range check reads the labels on the host
    (a device sync), so it runs only where :func:`~lightning_gen.checks.value_checks_enabled` (not in the training
    batches that neither start an epoch nor log).
    """
    if num_classes == 0:
        if labels is not None:
            raise ValueError(
                f"{net} is unconditional (num_classes=0) but was given labels; build it with num_classes set to "
                "the number of classes to condition on them, or pass labels=None"
            )
        return None
    if labels is None:
        raise ValueError(
            f"{net} is conditional (num_classes={num_classes}) and needs labels: an int64 tensor of shape (B,) "
            f"with values in [0, {num_classes}); pass labels=..., or build it with num_classes=0 for an "
            "unconditional model"
        )
    if not isinstance(labels, Tensor) or labels.dtype not in _INT_DTYPES:
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{net} needs integer class labels (int64 tensor of shape (B,)), got {got}")
    if labels.shape != (batch_size,):
        raise ValueError(f"{net} needs labels of shape ({batch_size},) (one per sample), got {tuple(labels.shape)}")
    if batch_size > 0 and value_checks_enabled():
        _check_label_range(labels, num_classes, net)
    return labels.long()


@torch.compiler.disable
def _check_label_range(labels: Tensor, num_classes: int, net: str) -> None:
    # never traced by torch.compile: traced, the host read would specialize the compiled net on the batch's smallest
    # and largest label, compiling it again for each new pair
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{net} was built with num_classes={num_classes}, so labels must lie in [0, {num_classes}); "
            f"got values in [{lo}, {hi}]. Set num_classes to the number of classes in your data"
        )


def check_images(x: Tensor, image_shape: tuple[int, int, int], net: str) -> None:
    """Raise a ValueError saying which argument to set when ``x`` is not a ``(B, *image_shape)`` batch."""
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        c, h, w = image_shape
        raise ValueError(
            f"{net} expects images of shape (B, {c}, {h}, {w}) (channels={c}, image_size={h}), got "
            f"{tuple(x.shape)}; set channels and image_size to match your data"
        )


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode int64 ``labels`` of shape ``(B,)`` to a ``(B, num_classes)`` tensor of ``dtype``.

    A comparison with ``arange(num_classes)``, which never waits for the device (``F.one_hot`` reads the labels' range
    on the host); labels outside ``[0, num_classes)`` give all-zero rows (:func:`check_labels` rejects them).
    """
    classes = torch.arange(num_classes, device=labels.device)
    return (labels.long().unsqueeze(-1) == classes).to(dtype)


def init_dcgan_weights_(module: M, std: float = 0.02) -> M:
    """Initialize in place as in DCGAN (Radford et al. 2016) and return ``module``.

    Conv, transposed-conv, linear and embedding weights ~ N(0, std); affine BatchNorm weights and the per-class
    scales of a :class:`ConditionalBatchNorm2d` ~ N(1, std); all their biases (and per-class shifts) 0. Call it
    before spectral norm is applied: on an already spectrally normalized module it
    initializes the unnormalized weight, and the power-iteration vectors only catch up over the next forward passes.
    """
    # a conditional BatchNorm's embeddings are its gains and biases, not weights to draw around 0
    affine_tables = {id(t) for m in module.modules() if isinstance(m, ConditionalBatchNorm2d) for t in (m.gamma, m.beta)}
    for m in module.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            m.reset_affine_(std)
        elif id(m) in affine_tables:
            continue
        elif isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)):
            weight = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            nn.init.normal_(weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def maybe_spectral_norm(module: M, enabled: bool) -> M:
    """Wrap ``module``'s weight with spectral normalization (Miyato et al. 2018) when ``enabled``; else return it."""
    return spectral_norm(module) if enabled else module
