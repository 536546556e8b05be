"""Tests for lightning_gen/nets/autoencoder.py: shapes for every supported size and the errors."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (32, 1)])
def test_conv_encoder_and_decoder_shapes(size, channels):
    enc = ConvEncoder(image_size=size, channels=channels, out_dim=10, base_channels=8)
    dec = ConvDecoder(latent_dim=5, image_size=size, channels=channels, base_channels=8)
    x = torch.randn(3, channels, size, size)
    assert enc(x).shape == (3, 10)
    assert dec(torch.randn(3, 5)).shape == (3, channels, size, size)
    assert dec.output_shape == (channels, size, size) and dec.latent_dim == 5


def test_mlp_encoder_and_decoder_shapes():
    enc = MLPEncoder((1, 28, 28), 12, (32,))
    dec = MLPDecoder(6, (1, 28, 28), (32,))
    assert enc(torch.randn(4, 1, 28, 28)).shape == (4, 12)
    assert dec(torch.randn(4, 6)).shape == (4, 1, 28, 28)
    # no hidden layer: one affine map
    assert MLPEncoder(2, 3, ()).net[0].weight.shape == (3, 2)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="28 and 32"):
        ConvEncoder(image_size=64)
    with pytest.raises(ValueError, match="expects images of shape"):
        ConvEncoder(image_size=28)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="expects inputs of shape"):
        MLPEncoder(784, 4)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="latent_dim"):
        MLPDecoder(0)
