"""SRGAN content losses (lightning_gen/losses/content.py) against hand computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gen.losses import (
    SRGAN_ADVERSARIAL_WEIGHT,
    SRGAN_VGG_FEATURE_SCALE,
    content_loss,
    feature_mse_loss,
    pixel_mse_loss,
)


def test_paper_weights():
    assert SRGAN_ADVERSARIAL_WEIGHT == 1e-3
    assert SRGAN_VGG_FEATURE_SCALE == pytest.approx(1 / 12.75, rel=0, abs=1e-15)


def test_pixel_mse_by_hand():
    fake = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # squared errors 1, 0, 4, 1 -> mean 6 / 4
    assert pixel_mse_loss(fake, target).item() == pytest.approx(1.5, abs=1e-7)


def test_feature_mse_scales_the_features_before_squaring():
    fake = torch.tensor([3.0, 0.0, -6.0])
    target = torch.tensor([0.0, 0.0, 0.0])
    # (0.5 * 3)^2 + 0 + (0.5 * 6)^2 = 2.25 + 9 -> mean 3.75
    assert feature_mse_loss(fake, target, scale=0.5).item() == pytest.approx(3.75, abs=1e-6)
    assert feature_mse_loss(fake, target).item() == pytest.approx(15.0, abs=1e-6)


def test_content_loss_without_a_network_is_the_pixel_mse():
    g = torch.Generator().manual_seed(0)
    fake, target = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    assert content_loss(fake, target).item() == pytest.approx(((fake - target) ** 2).mean().item(), rel=1e-6)


def test_content_loss_with_a_network_is_the_scaled_feature_mse_and_only_the_fake_gets_gradients():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 3, 3)
    fake = torch.randn(2, 1, 6, 6, requires_grad=True)
    target = torch.randn(2, 1, 6, 6, requires_grad=True)
    loss = content_loss(fake, target, net, feature_scale=0.1)
    expected = ((0.1 * (net(fake) - net(target))) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert target.grad is None and fake.grad is not None and fake.grad.abs().sum() > 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        pixel_mse_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        content_loss(torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 4, 4), nn.Identity())
