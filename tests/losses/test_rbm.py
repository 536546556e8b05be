"""Tests of lightning_gen/losses/rbm.py: the contrastive-divergence surrogate's gradient."""

from __future__ import annotations

import torch

from lightning_gen.losses import contrastive_divergence_loss
from lightning_gen.nets.rbm import BernoulliRBM


def test_the_surrogates_gradient_is_the_difference_of_data_and_sample_statistics():
    torch.manual_seed(0)
    rbm = BernoulliRBM(5, 3, init_std=0.5).double()
    with torch.no_grad():
        rbm.visible_bias.normal_()
        rbm.hidden_bias.normal_()
    g = torch.Generator().manual_seed(1)
    data = (torch.rand(7, 5, generator=g, dtype=torch.float64) < 0.5).double()
    samples = (torch.rand(4, 5, generator=g, dtype=torch.float64) < 0.5).double().requires_grad_()
    loss = contrastive_divergence_loss(rbm, data, samples)
    loss.backward()
    assert samples.grad is None  # no gradient flows into the chain
    w, c = rbm.weight.detach(), rbm.hidden_bias.detach()
    hd, hs = torch.sigmoid(data @ w + c), torch.sigmoid(samples.detach() @ w + c)
    # d log p / d W = <v h^T>_data - <v h^T>_model; the loss is its negative
    torch.testing.assert_close(rbm.weight.grad, -(data.T @ hd / 7 - samples.detach().T @ hs / 4))
    torch.testing.assert_close(rbm.visible_bias.grad, -(data.mean(0) - samples.detach().mean(0)))
    torch.testing.assert_close(rbm.hidden_bias.grad, -(hd.mean(0) - hs.mean(0)))
    expected = rbm.free_energy(data).mean() - rbm.free_energy(samples.detach()).mean()
    torch.testing.assert_close(loss, expected)
