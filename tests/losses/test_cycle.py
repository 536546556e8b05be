"""Tests for lightning_gen/losses/cycle.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gen.losses.cycle import (
    CYCLE_WEIGHT,
    IDENTITY_WEIGHT,
    PIX2PIX_L1_WEIGHT,
    cycle_consistency_loss,
    identity_loss,
    l1_reconstruction_loss,
)


def test_paper_weights():
    assert CYCLE_WEIGHT == 10.0 and IDENTITY_WEIGHT == 5.0 and PIX2PIX_L1_WEIGHT == 100.0


def test_cycle_loss_zero_for_identity_generators():
    x = torch.randn(4, 3, 8, 8)
    g, f = nn.Identity(), nn.Identity()
    loss = cycle_consistency_loss(x, f(g(x)))
    assert loss.dim() == 0 and loss.item() == 0.0
    assert identity_loss(x, g(x)).item() == 0.0


def test_cycle_loss_value_and_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8, requires_grad=True)
    expected = (x - y).abs().mean()
    torch.testing.assert_close(cycle_consistency_loss(x, y), 10.0 * expected)
    torch.testing.assert_close(cycle_consistency_loss(x, y, weight=2.5), 2.5 * expected)
    torch.testing.assert_close(identity_loss(x, y), 5.0 * expected)
    torch.testing.assert_close(identity_loss(x, y, weight=1.0), expected)
    loss = l1_reconstruction_loss(y, x)
    torch.testing.assert_close(loss, 100.0 * expected)
    loss.backward()
    torch.testing.assert_close(y.grad, 100.0 * torch.sign(y - x).detach() / y.numel())


def test_known_value():
    x = torch.zeros(2, 1, 2, 2)
    y = torch.full((2, 1, 2, 2), 0.5)
    assert cycle_consistency_loss(x, y).item() == pytest.approx(5.0, rel=1e-6)


@pytest.mark.parametrize("fn", [cycle_consistency_loss, identity_loss, l1_reconstruction_loss])
def test_shape_mismatch_raises(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4))
