"""SRGAN's content losses as pure functions (Ledig et al. 2017, sec. 2.2): the pixel-wise MSE (eq. 4) and the MSE
between feature maps of a fixed network (eq. 5, the "VGG loss"), and the perceptual loss's weights.

``content_loss`` picks one: the feature MSE when a feature network is given, the pixel MSE when not. The paper
rescales the VGG feature maps by ``1/12.75`` so the VGG loss is on the scale of the pixel MSE; the adversarial term
has weight ``1e-3`` (eq. 3).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

__all__ = [
    "SRGAN_ADVERSARIAL_WEIGHT",
    "SRGAN_VGG_FEATURE_SCALE",
    "content_loss",
    "feature_mse_loss",
    "pixel_mse_loss",
]

SRGAN_ADVERSARIAL_WEIGHT: float = 1e-3
SRGAN_VGG_FEATURE_SCALE: float = 1.0 / 12.75


def _same_shape(a: Tensor, b: Tensor, name: str, a_name: str, b_name: str) -> None:
    if a.shape != b.shape:  # broadcasting would silently average the wrong differences
        raise ValueError(f"{name} needs {a_name} and {b_name} of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def pixel_mse_loss(fake: Tensor, target: Tensor) -> Tensor:
    """Pixel-wise MSE ``mean (G(x) - y)^2`` over all elements (eq. 4)."""
    _same_shape(fake, target, "pixel_mse_loss", "fake", "target")
    return (fake - target).pow(2).mean()


def feature_mse_loss(fake_features: Tensor, target_features: Tensor, scale: float = 1.0) -> Tensor:
    """Feature-map MSE ``mean (scale * (phi(G(x)) - phi(y)))^2`` over all elements (eq. 5, features rescaled)."""
    _same_shape(fake_features, target_features, "feature_mse_loss", "fake_features", "target_features")
    return (scale * (fake_features - target_features)).pow(2).mean()


def content_loss(
    fake: Tensor, target: Tensor, feature_network: Optional[nn.Module] = None,
    feature_scale: float = SRGAN_VGG_FEATURE_SCALE,
) -> Tensor:
    """SRGAN content loss: :func:`feature_mse_loss` of ``feature_network``'s maps (gradients flow through
    ``fake`` only; the target's maps are computed without a graph), or :func:`pixel_mse_loss` when it is ``None``."""
    if feature_network is None:
        return pixel_mse_loss(fake, target)
    _same_shape(fake, target, "content_loss", "fake", "target")
    with torch.no_grad():
        target_features = feature_network(target)
    return feature_mse_loss(feature_network(fake).float(), target_features.float(), feature_scale)
