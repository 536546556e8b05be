"""Tests for lightning_gen/nets/bigan.py: joint discriminators D(x, z) -- shapes, what they read, errors."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.nets import JointConvDiscriminator, JointMLPDiscriminator


def test_joint_mlp_scores_the_concatenated_pair():
    torch.manual_seed(0)
    d = JointMLPDiscriminator(input_shape=(2, 3), latent_dim=4, hidden_dims=(8,), input_scale=2.0)
    x, z = torch.randn(5, 2, 3), torch.randn(5, 4)
    out = d(x, z)
    assert out.shape == (5,)
    torch.testing.assert_close(out, d.net(torch.cat([x.flatten(1) / 2.0, z], 1)).squeeze(-1), rtol=0, atol=0)
    z2 = z.clone()
    z2[0] += 1.0  # the score of a pair depends on its code, and only that pair's score changes
    changed = d(x, z2) != out
    assert changed.tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("size", [28, 32, 64])
def test_joint_conv_scores_image_code_pairs(size):
    torch.manual_seed(0)
    d = JointConvDiscriminator(image_size=size, channels=3, latent_dim=6, base_channels=4, hidden_dim=16)
    x, z = torch.randn(3, 3, size, size), torch.randn(3, 6)
    out = d(x, z)
    assert out.shape == (3,) and torch.isfinite(out).all()
    assert not torch.allclose(d(x, torch.randn(3, 6)), out)  # the code matters
    assert not torch.allclose(d(torch.randn(3, 3, size, size), z), out)  # the image matters


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    d = JointConvDiscriminator(image_size=28, channels=1, latent_dim=2, base_channels=4, hidden_dim=8, dropout=0.5)
    x, z = torch.randn(4, 1, 28, 28), torch.randn(4, 2)
    d.eval()
    torch.testing.assert_close(d(x, z), d(x, z), rtol=0, atol=0)
    d.train()
    assert not torch.equal(d(x, z), d(x, z))


def test_errors_name_the_option_to_set():
    with pytest.raises(ValueError, match=r"latent_dim=4"):
        JointMLPDiscriminator(2, 4, (8,))(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"input_shape"):
        JointMLPDiscriminator(2, 2, (8,))(torch.zeros(3, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"channels=1, image_size=28"):
        JointConvDiscriminator(28, 1, 2, 4, 8)(torch.zeros(2, 1, 32, 32), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="image_size 28, 32 or 64"):
        JointConvDiscriminator(image_size=16)
