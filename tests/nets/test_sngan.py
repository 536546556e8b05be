"""Tests for lightning_gen/nets/sngan.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lightning_gen.nets import ConditionalBatchNorm2d, SNGANDiscriminator, SNGANGenerator

K = 4  # classes in conditional tests


def _labels(batch: int, num_classes: int) -> torch.Tensor | None:
    return torch.arange(batch) % num_classes if num_classes else None


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [0, K])
def test_shapes_and_range(size, channels, num_classes):
    torch.manual_seed(0)
    g = SNGANGenerator(latent_dim=10, channels=channels, base_channels=8, num_classes=num_classes, image_size=size)
    d = SNGANDiscriminator(channels=channels, base_channels=8, num_classes=num_classes, image_size=size)
    assert g.latent_dim == 10 and g.num_classes == num_classes and g.image_shape == (channels, size, size)
    assert d.num_classes == num_classes and d.image_shape == (channels, size, size)
    y = _labels(6, num_classes)
    x = g(torch.randn(6, 10), y)
    assert x.shape == (6, channels, size, size)
    with torch.no_grad():  # large output weights (as after training) saturate the Tanh: still within [-1, 1]
        g.conv_out.weight.mul_(100.0)
    saturated = g(torch.randn(6, 10), y)
    assert saturated.min() >= -1 and saturated.max() <= 1 and saturated.abs().max() > 0.99
    assert d(x, y).shape == (6,)
    assert d.features(x, y).shape == (6, 8) and d.feature_dim == 8


def test_architecture_follows_the_paper():
    g = SNGANGenerator(latent_dim=16, channels=3, base_channels=8)
    assert g.linear.out_features == 8 * 4 * 4 and len(g.blocks) == 3
    d = SNGANDiscriminator(channels=3, base_channels=8)
    assert len(d.blocks) == 4 and [b.downsample for b in d.blocks] == [True, True, False, False]
    assert d.blocks[0].optimized and d.blocks[2].shortcut is None  # identity shortcut when shape is unchanged
    h = torch.randn(2, 3, 32, 32)
    sizes = []
    for block in d.blocks:
        h = block(h)
        sizes.append(h.shape[-1])
    assert sizes == [16, 8, 8, 8]


def test_discriminator_has_no_batch_norm_and_every_layer_is_spectrally_normalized():
    d = SNGANDiscriminator(channels=3, base_channels=8, num_classes=K)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) == 2 * 4 + 2 + 2  # two convs per block, two 1x1 shortcuts, linear, embedding
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)


def test_spectral_norm_makes_every_largest_singular_value_one():
    torch.manual_seed(0)
    d = SNGANDiscriminator(channels=3, base_channels=8, num_classes=K)
    x, y = torch.randn(8, 3, 32, 32), _labels(8, K)
    layers = [m for m in d.modules() if parametrize.is_parametrized(m, "weight")]

    def sigmas() -> list[float]:
        d.eval()
        out = []
        for m in layers:
            w = m.weight.detach()
            out.append(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item())
        d.train()
        return out

    # One power iteration per train-mode forward. The estimate u^T W v never exceeds the true sigma, so normalized
    # weights start slightly above 1; Xavier-initialized square-ish weights have close top singular values, so
    # convergence is slow (about 1.024 after 5 passes here) but steady.
    with torch.no_grad():
        for _ in range(5):
            d(x, y)
        assert all(0.999 < s < 1.03 for s in sigmas())
        for _ in range(55):
            d(x, y)
    d.eval()
    for m, sigma in zip(layers, sigmas()):
        assert 0.999 < sigma < 1.005, (m, sigma)
        raw = m.parametrizations.weight.original.detach()
        raw_sigma = torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2)
        torch.testing.assert_close(m.weight.detach(), raw / raw_sigma, rtol=5e-3, atol=1e-6)  # W / sigma(W)


def test_conditional_generator_uses_conditional_batch_norm_in_the_blocks():
    g = SNGANGenerator(latent_dim=8, channels=3, base_channels=8, num_classes=K)
    assert sum(isinstance(m, ConditionalBatchNorm2d) for m in g.modules()) == 6
    assert isinstance(g.bn, nn.BatchNorm2d)  # the final BN is unconditional, as in the authors' code
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in SNGANGenerator(8, 3, 8).modules())


def test_labels_change_outputs():
    torch.manual_seed(0)
    g = SNGANGenerator(latent_dim=8, channels=3, base_channels=8, num_classes=K)
    d = SNGANDiscriminator(channels=3, base_channels=8, num_classes=K)
    z = torch.randn(4, 8)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert (g(z, y0) - g(z, y1)).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    torch.testing.assert_close(g(z, y0), g(z, y0.clone()))
    x = g(z, y0)
    assert (d(x, y0) - d(x, y1)).abs().min() > 1e-3


def test_label_errors():
    g = SNGANGenerator(latent_dim=8, channels=3, base_channels=8, num_classes=K)
    d = SNGANDiscriminator(channels=3, base_channels=8, num_classes=K)
    z, x = torch.randn(2, 8), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="SNGANGenerator is conditional"):
        g(z)
    with pytest.raises(ValueError, match="SNGANDiscriminator is conditional"):
        d(x)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        d(x, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        d.features(x, torch.tensor([0, 7]))
    assert d.features(x).shape == (2, 8)  # projection features do not need the label
    with pytest.raises(ValueError, match="unconditional"):
        SNGANGenerator(latent_dim=8, base_channels=8)(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        SNGANDiscriminator(base_channels=8).features(x, torch.tensor([0, 1]))


def test_projection_score_is_linear_plus_inner_product(check_projection_score):
    torch.manual_seed(0)
    check_projection_score(SNGANDiscriminator(channels=3, base_channels=8, num_classes=K).eval(), 1e-3)


def test_wrong_sizes_raise_helpful_errors():
    with pytest.raises(ValueError, match=r"image_size in \[32, 48\], got 64"):
        SNGANGenerator(image_size=64)
    with pytest.raises(ValueError, match=r"image_size in \[32, 48\], got 28.*DCGAN"):
        SNGANDiscriminator(image_size=28)
    d = SNGANDiscriminator(channels=3, base_channels=8)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*got \(2, 3, 48, 48\).*image_size"):
        d(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match=r"channels=3.*got \(2, 1, 32, 32\)"):
        d(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 8\).*latent_dim"):
        SNGANGenerator(latent_dim=8, base_channels=8)(torch.randn(2, 128))


@pytest.mark.parametrize("num_classes", [0, K])
def test_gradients_reach_every_parameter(num_classes):
    torch.manual_seed(0)
    g = SNGANGenerator(latent_dim=8, channels=3, base_channels=8, num_classes=num_classes)
    d = SNGANDiscriminator(channels=3, base_channels=8, num_classes=num_classes)
    y = _labels(8, num_classes)
    d(g(torch.randn(8, 8), y), y).mean().backward()
    for net in (g, d):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradient_penalty_double_backprop_works():
    # R1 / WGAN-GP-style penalties differentiate the input gradient through the spectrally normalized critic.
    torch.manual_seed(0)
    d = SNGANDiscriminator(channels=3, base_channels=8, num_classes=K)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x, _labels(4, K)).sum(), x, create_graph=True)
    grad.square().sum().backward()
    for name, p in d.named_parameters():
        # With ReLU the input gradient is piecewise constant in the biases: they get no (or zero) gradient.
        if "bias" not in name:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
