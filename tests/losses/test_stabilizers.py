"""Tests for lightning_gen/losses/stabilizers.py and the label-smoothing targets of the adversarial losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lightning_gen.losses import (
    add_instance_noise,
    feature_matching_loss,
    historical_averaging_penalty,
    instance_noise_std,
    least_squares_loss_dis,
    minimax_loss_dis,
    nonsaturating_loss_dis,
)


def _binary_entropy(t: float) -> float:
    return -(t * math.log(t) + (1 - t) * math.log(1 - t))


@pytest.mark.parametrize("target", [0.9, 0.75])
def test_smoothed_cross_entropy_is_minimised_at_the_target(target):
    # t * softplus(-a) + (1 - t) * softplus(a) is the cross-entropy of sigmoid(a) against t: its minimum over the
    # logit a sits at sigmoid(a) = t and equals the binary entropy H(t).
    a = torch.tensor([math.log(target / (1 - target))], dtype=torch.float64, requires_grad=True)
    very_negative_fake = torch.tensor([-60.0], dtype=torch.float64)  # contributes softplus(-60) ~ 1e-26
    loss = minimax_loss_dis(a, very_negative_fake, real_target=target)
    (grad,) = torch.autograd.grad(loss, a)
    assert abs(grad.item()) < 1e-12
    assert loss.item() == pytest.approx(_binary_entropy(target), rel=1e-12, abs=1e-12)
    # anywhere else the loss is larger
    for shift in (-0.3, 0.3):
        assert minimax_loss_dis(a.detach() + shift, very_negative_fake, real_target=target) > loss


def test_smoothing_leaves_the_default_loss_unchanged():
    r, f = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    assert_close(minimax_loss_dis(r, f, real_target=1.0), minimax_loss_dis(r, f), rtol=0, atol=0)
    assert_close(nonsaturating_loss_dis(r, f, 0.9), minimax_loss_dis(r, f, 0.9), rtol=0, atol=0)
    # only the real term changes
    delta = minimax_loss_dis(r, f, 0.9) - minimax_loss_dis(r, f)
    expected = (0.1 * (torch.nn.functional.softplus(r) - torch.nn.functional.softplus(-r))).mean()
    assert_close(delta, expected)


def test_least_squares_target():
    r = torch.full((8,), 0.9)
    assert least_squares_loss_dis(r, torch.zeros(8), real_target=0.9).item() == pytest.approx(0.0, abs=1e-12)
    assert least_squares_loss_dis(r, torch.zeros(8)).item() == pytest.approx(0.5 * 0.01, rel=1e-5)


def test_feature_matching_loss_by_hand_and_only_the_fake_side_gets_gradients():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 4.0]], requires_grad=True)  # mean (1, 2)
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(2.0)  # (2-1)^2 + (3-2)^2
    loss.backward()
    assert real.grad is None
    assert_close(fake.grad, torch.full((3, 2), -2.0 / 3.0))  # d/dfake_i = -2 (mean_r - mean_f) / n_fake
    assert feature_matching_loss(real.detach(), real.detach()).item() == 0.0
    with pytest.raises(ValueError, match="same size"):
        feature_matching_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_historical_averaging_penalty_by_hand():
    p = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    avg = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    loss = historical_averaging_penalty(p, avg)
    assert loss.item() == pytest.approx(1.0 + 4.0 + 4.0)
    loss.backward()
    assert_close(p[0].grad, torch.tensor([2.0, 4.0]))
    with pytest.raises(ValueError):
        historical_averaging_penalty([], [])


def test_instance_noise_schedule():
    assert instance_noise_std(0.5, 0, 100) == 0.5
    assert instance_noise_std(0.5, 25, 100) == pytest.approx(0.375)
    assert instance_noise_std(0.5, 100, 100) == 0.0
    assert instance_noise_std(0.5, 1000, 100) == 0.0
    assert instance_noise_std(0.5, 1000, None) == 0.5
    with pytest.raises(ValueError):
        instance_noise_std(-1.0, 0, None)
    with pytest.raises(ValueError):
        instance_noise_std(0.1, 0, 0)


def test_instance_noise_has_the_requested_std():
    x = torch.zeros(200_000)
    g = torch.Generator().manual_seed(0)
    noisy = add_instance_noise(x, 0.3, generator=g)
    assert noisy.std().item() == pytest.approx(0.3, rel=0.01)
    assert abs(noisy.mean().item()) < 0.003
    assert add_instance_noise(x, 0.0) is x
