"""Tests for lightning_gen/losses/diffusion.py: DDPM's L_simple."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_gen.losses.diffusion import epsilon_loss


def test_epsilon_loss_is_mean_squared_error():
    """L_simple = mean over all elements of (eps - eps_pred)^2: equals F.mse_loss and a hand computation."""
    gen = torch.Generator().manual_seed(0)
    pred, eps = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    loss = epsilon_loss(pred, eps)
    assert loss.shape == ()
    assert_close(loss, F.mse_loss(pred, eps), rtol=0, atol=0)
    assert loss.item() == pytest.approx(((pred.double() - eps.double()) ** 2).sum().item() / pred.numel(), rel=1e-6)
    # two independent N(0, 1) tensors differ by N(0, 2): 300 elements give 2 +- 5 * 2 sqrt(2 / 300)
    assert loss.item() == pytest.approx(2.0, abs=5 * 2 * (2 / 300) ** 0.5)


def test_epsilon_loss_zero_for_equal_inputs_and_differentiable():
    """Zero at eps_pred = eps; its gradient is 2 (eps_pred - eps) / numel."""
    eps = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    assert epsilon_loss(eps.clone(), eps).item() == 0.0
    pred = (eps + 0.5).requires_grad_(True)
    epsilon_loss(pred, eps).backward()
    assert_close(pred.grad, torch.full_like(eps, 2 * 0.5 / eps.numel()), rtol=1e-6, atol=0)


def test_epsilon_loss_shape_mismatch_says_what_to_do():
    with pytest.raises(ValueError, match="one noise value per input element"):
        epsilon_loss(torch.zeros(4, 1), torch.zeros(4))
