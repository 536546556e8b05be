"""Tests for lightning_gen/nets/infogan.py: shapes, one trunk for the score and Q, the paper's layer sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gen.nets import DCGANInfoGANDiscriminator, MLPInfoGANDiscriminator


@pytest.mark.parametrize("learn_std", [False, True])
def test_mlp_discriminator_shapes_and_one_trunk(learn_std):
    torch.manual_seed(0)
    d = MLPInfoGANDiscriminator(input_shape=2, num_categories=8, num_continuous=3, hidden_dims=(16, 16),
                                q_hidden_dims=(8,), learn_std=learn_std)
    x = torch.randn(5, 2)
    out = d.q(x)
    assert out.score.shape == (5,) and out.logits.shape == (5, 8) and out.means.shape == (5, 3)
    assert (out.log_std is None) == (not learn_std)
    if learn_std:
        assert out.log_std.shape == (5, 3)
    torch.testing.assert_close(out.score, d(x), rtol=0, atol=0)  # forward is q's score
    # the score and Q read the same trunk output: both are functions of features(x)
    h = d.features(x)
    torch.testing.assert_close(d.score(h).squeeze(-1), out.score, rtol=0, atol=0)
    torch.testing.assert_close(d.q_head(h)[:, :8], out.logits, rtol=0, atol=0)
    calls = []
    d.trunk.register_forward_hook(lambda *args: calls.append(1))
    d.q(x)
    assert len(calls) == 1  # one trunk pass for score and Q


@pytest.mark.parametrize("size", [28, 32])
def test_conv_discriminator_shapes_and_the_papers_layers(size):
    torch.manual_seed(0)
    d = DCGANInfoGANDiscriminator(image_size=size, channels=1, base_channels=4, num_categories=10, num_continuous=2,
                                  hidden_dim=32, q_hidden_dim=8)
    x = torch.randn(6, 1, size, size)
    out = d.q(x)
    assert out.score.shape == (6,) and out.logits.shape == (6, 10) and out.means.shape == (6, 2) and out.log_std is None
    assert d.features(x).shape == (6, 32)
    linears = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears][-3:] == [(32, 1), (32, 8), (8, 12)]
    # BatchNorm after every conv but the first, after FC 1024 and after Q's FC 128 (paper, table 1)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.trunk) == {28: 1, 32: 2}[size]
    assert isinstance(d.trunk[-2], nn.BatchNorm1d) and isinstance(d.q_head[1], nn.BatchNorm1d)
    with pytest.raises(ValueError, match="expects|image"):
        d(torch.randn(2, 3, size, size))


def test_code_sizes_are_validated():
    with pytest.raises(ValueError, match="1-way"):
        MLPInfoGANDiscriminator(num_categories=1)
    with pytest.raises(ValueError, match="needs a latent code"):
        MLPInfoGANDiscriminator(num_categories=0, num_continuous=0)
    with pytest.raises(ValueError, match="image_size"):
        DCGANInfoGANDiscriminator(image_size=30)
    d = MLPInfoGANDiscriminator(num_categories=0, num_continuous=2, learn_std=True)
    assert d.q(torch.randn(3, 2)).logits.shape == (3, 0)
