"""Tests for lightning_gen/nets/mlp.py."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.nets import MLPDiscriminator, MLPGenerator, make_activation


def test_generator_shapes_and_latent_dim():
    g = MLPGenerator(latent_dim=5, output_shape=(3, 4), hidden_dims=(8,))
    assert g.latent_dim == 5
    assert g(torch.randn(6, 5)).shape == (6, 3, 4)


def test_discriminator_returns_one_score_per_sample_for_any_input_shape():
    d = MLPDiscriminator(input_shape=(3, 4), hidden_dims=(8, 8))
    assert d(torch.randn(6, 3, 4)).shape == (6,)


def test_output_and_input_scales_are_exact_fixed_factors():
    torch.manual_seed(0)
    g1 = MLPGenerator(2, 2, (16,))
    g3 = MLPGenerator(2, 2, (16,), output_scale=3.0)
    g3.load_state_dict(g1.state_dict())
    z = torch.randn(10, 2)
    torch.testing.assert_close(g3(z), 3.0 * g1(z))
    d1 = MLPDiscriminator(2, (16,))
    d3 = MLPDiscriminator(2, (16,), input_scale=3.0)
    d3.load_state_dict(d1.state_dict())
    x = torch.randn(10, 2)
    torch.testing.assert_close(d3(3.0 * x), d1(x))
    assert sum(p.numel() for p in g3.parameters()) == sum(p.numel() for p in g1.parameters())  # not learned


def test_layers_follow_the_config():
    g = MLPGenerator(2, 2, hidden_dims=(7, 9, 11), activation="leaky_relu")
    linears = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 7), (7, 9), (9, 11), (11, 2)]
    assert sum(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in g.modules()) == 3


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: make_activation("relu6x"), "Unknown activation 'relu6x'"),
        (lambda: MLPGenerator(latent_dim=0), "latent_dim must be >= 1"),
        (lambda: MLPDiscriminator(input_scale=0.0), "input_scale must be positive"),
    ],
)
def test_bad_arguments_are_named(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
