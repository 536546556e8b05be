"""Tests for lightning_gen/nets/dcgan.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lightning_gen.nets import DCGANDiscriminator, DCGANGenerator, MinibatchStdDev

K = 4  # classes in conditional tests


def _labels(batch: int, num_classes: int) -> torch.Tensor | None:
    return torch.arange(batch) % num_classes if num_classes else None


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [0, K])
def test_shapes_and_range(size, channels, num_classes):
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=10, image_size=size, channels=channels, base_channels=4, num_classes=num_classes)
    d = DCGANDiscriminator(image_size=size, channels=channels, base_channels=4, num_classes=num_classes)
    assert g.latent_dim == 10 and g.num_classes == num_classes and g.image_shape == (channels, size, size)
    assert d.num_classes == num_classes and d.image_shape == (channels, size, size)
    y = _labels(6, num_classes)
    x = g(torch.randn(6, 10), y)
    assert x.shape == (6, channels, size, size)
    with torch.no_grad():  # large output weights (as after training) saturate the Tanh: still within [-1, 1]
        g.blocks[-2].weight.normal_(0.0, 10.0)
    saturated = g(torch.randn(6, 10), y)
    assert saturated.min() >= -1 and saturated.max() <= 1 and saturated.abs().max() > 0.99
    assert d(x, y).shape == (6,)
    n_down = {28: 2, 32: 3, 64: 4}[size]
    end = 7 if size == 28 else 4
    assert d.features(x, y).shape == (6, 4 * 2 ** (n_down - 1) * end * end) == (6, d.feature_dim)


def test_feature_map_sizes_follow_the_paper():
    g = DCGANGenerator(latent_dim=8, image_size=64, channels=3, base_channels=4)
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(32, 16), (16, 8), (8, 4), (4, 3)]
    assert g.project.out_features == 32 * 4 * 4
    g28 = DCGANGenerator(latent_dim=8, image_size=28, channels=1, base_channels=4)
    assert g28.project.out_features == 8 * 7 * 7
    d = DCGANDiscriminator(image_size=64, channels=3, base_channels=4)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(3, 4), (4, 8), (8, 16), (16, 32)]
    # BatchNorm after every conv but the first; LeakyReLU(0.2) everywhere.
    assert isinstance(d.blocks[1], nn.LeakyReLU) and d.blocks[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3


def test_init_follows_dcgan():
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=100, image_size=64, channels=3, base_channels=32)
    d = DCGANDiscriminator(image_size=64, channels=3, base_channels=32)
    for net in (g, d):
        layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
        w = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, layers)])
        assert w.numel() > 100_000
        assert 0.0196 < w.std().item() < 0.0204
        assert abs(w.mean().item()) < 0.0005
        bn = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
        assert abs(bn.mean().item() - 1.0) < 0.005  # std of the mean: 0.02 / sqrt(>= 448) < 0.001
        assert 0.015 < bn.std().item() < 0.025
        biases = [m.bias for m in net.modules() if getattr(m, "bias", None) is not None]
        assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def _sn_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if parametrize.is_parametrized(m, "weight")]


def test_spectral_norm_makes_every_largest_singular_value_one():
    torch.manual_seed(0)
    d = DCGANDiscriminator(
        image_size=32, channels=3, base_channels=8, num_classes=K, projection=True, spectral_norm=True
    )
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) == 5 and _sn_modules(d) == layers  # 3 convs, linear, embedding
    x, y = torch.randn(8, 3, 32, 32), _labels(8, K)
    for _ in range(5):  # a few power iterations in train mode
        d(x, y)
    d.eval()
    for m in layers:
        w = m.weight.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()
        assert 0.99 < sigma < 1.02, (m, sigma)


def test_without_spectral_norm_singular_values_are_not_one():
    torch.manual_seed(0)
    d = DCGANDiscriminator(image_size=32, channels=3, base_channels=8)
    assert _sn_modules(d) == []
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.detach()
            sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()
            assert sigma < 0.8, (m, sigma)  # N(0, 0.02) weights: about 0.02 * (sqrt(rows) + sqrt(cols))


@pytest.mark.parametrize(
    "kwargs, has_bn",
    [
        ({}, True),
        ({"spectral_norm": True}, False),
        ({"batch_norm": False}, False),
        ({"spectral_norm": True, "batch_norm": True}, True),
    ],
)
def test_batch_norm_presence(kwargs, has_bn):
    d = DCGANDiscriminator(image_size=32, channels=3, base_channels=4, **kwargs)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules()) == has_bn
    assert d.batch_norm == has_bn


def test_minibatch_std_adds_one_feature_map_before_the_score():
    d = DCGANDiscriminator(image_size=32, channels=3, base_channels=4, minibatch_std=True)
    assert isinstance(d.blocks[-1], MinibatchStdDev)
    x = torch.randn(8, 3, 32, 32)
    assert d.features(x).shape == (8, (16 + 1) * 4 * 4)
    assert d(x).shape == (8,)


@pytest.mark.parametrize("projection", [False, True])
def test_labels_change_outputs(projection):
    torch.manual_seed(0)
    # Train mode (BatchNorm on batch statistics: deterministic for a given batch) keeps activations at unit scale.
    g = DCGANGenerator(latent_dim=8, image_size=28, channels=1, base_channels=4, num_classes=K)
    d = DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=K, projection=projection)
    z = torch.randn(4, 8)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert (g(z, y0) - g(z, y1)).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    x = g(z, y0)
    assert (d(x, y0) - d(x, y1)).abs().min() > 1e-3
    torch.testing.assert_close(g(z, y0), g(z, y0.clone()))  # and only the label matters


def test_label_errors():
    g = DCGANGenerator(latent_dim=8, image_size=32, channels=3, base_channels=4, num_classes=K)
    d = DCGANDiscriminator(image_size=32, channels=3, base_channels=4, num_classes=K)
    z, x = torch.randn(2, 8), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="DCGANGenerator is conditional"):
        g(z)
    with pytest.raises(ValueError, match="DCGANDiscriminator is conditional"):
        d(x)
    with pytest.raises(ValueError, match="DCGANDiscriminator is conditional"):
        d.features(x)  # one-hot conditioned features depend on the label
    with pytest.raises(ValueError, match=r"num_classes=4.*\[0, 4\)"):
        g(z, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="unconditional"):
        DCGANGenerator(latent_dim=8, image_size=32, base_channels=4)(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        DCGANDiscriminator(image_size=32, base_channels=4)(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes > 0"):
        DCGANDiscriminator(image_size=32, base_channels=4, projection=True)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_projection_score_is_linear_plus_inner_product(spectral_norm, check_projection_score):
    torch.manual_seed(0)
    d = DCGANDiscriminator(
        image_size=32, channels=3, base_channels=4, num_classes=K, projection=True, spectral_norm=spectral_norm
    )
    with torch.no_grad():  # make the embedding large enough that the projection term is clearly not negligible
        raw = d.embed.parametrizations.weight.original if spectral_norm else d.embed.weight
        raw.normal_(0.0, 1.0)
    check_projection_score(d.eval(), 1e-4)


def test_wrong_sizes_raise_helpful_errors():
    with pytest.raises(ValueError, match=r"image_size in \[28, 32, 64\], got 48"):
        DCGANGenerator(image_size=48)
    with pytest.raises(ValueError, match=r"image_size in \[28, 32, 64\], got 16"):
        DCGANDiscriminator(image_size=16)
    d = DCGANDiscriminator(image_size=64, channels=3, base_channels=4)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\).*got \(2, 3, 32, 32\).*image_size"):
        d(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"channels=3.*got \(2, 1, 64, 64\)"):
        d.features(torch.randn(2, 1, 64, 64))
    g = DCGANGenerator(latent_dim=8, image_size=32, base_channels=4)
    with pytest.raises(ValueError, match=r"\(B, 8\).*latent_dim.*\(2, 9\)"):
        g(torch.randn(2, 9))
    with pytest.raises(ValueError, match="base_channels"):
        DCGANGenerator(base_channels=0)


@pytest.mark.parametrize(
    "num_classes, d_kwargs",
    [
        (0, {}),
        (0, {"spectral_norm": True, "minibatch_std": True}),
        (K, {}),
        (K, {"projection": True}),
        (K, {"projection": True, "spectral_norm": True}),
    ],
)
def test_gradients_reach_every_parameter(num_classes, d_kwargs):
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=8, image_size=32, channels=3, base_channels=4, num_classes=num_classes)
    d = DCGANDiscriminator(image_size=32, channels=3, base_channels=4, num_classes=num_classes, **d_kwargs)
    y = _labels(8, num_classes)
    d(g(torch.randn(8, 8), y), y).mean().backward()
    for net in (g, d):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("d_kwargs", [{"batch_norm": False}, {"spectral_norm": True, "minibatch_std": True}])
def test_gradient_penalty_double_backprop_works(d_kwargs):
    # WGAN-GP / R1 differentiate the input gradient; the critic variants they are used with must support it.
    torch.manual_seed(0)
    d = DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=K, **d_kwargs)
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x, _labels(4, K)).sum(), x, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean()
    penalty.backward()
    grads = {name: p.grad for name, p in d.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    first = "blocks.0.parametrizations.weight.original" if d.spectral_norm else "blocks.0.weight"
    assert grads[first].abs().sum() > 0  # the penalty reaches the first layer through the second-order graph


# -- class-conditional BatchNorm in the generator (conditioning="batchnorm") -----------------------------------------
def _cbn_generator(size: int = 28, channels: int = 1) -> DCGANGenerator:
    return DCGANGenerator(latent_dim=8, image_size=size, channels=channels, base_channels=4, num_classes=K,
                          conditioning="batchnorm")


@pytest.mark.parametrize("size", [28, 32, 64])
def test_batchnorm_conditioning_replaces_every_batchnorm_and_the_label_concatenation(size):
    from lightning_gen.nets import ConditionalBatchNorm2d

    torch.manual_seed(0)
    g = _cbn_generator(size, 3)
    concat = DCGANGenerator(latent_dim=8, image_size=size, channels=3, base_channels=4, num_classes=K)
    cbns = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == sum(isinstance(m, nn.BatchNorm2d) for m in concat.modules()) == {28: 2, 32: 3, 64: 4}[size]
    assert all(m.num_classes == K for m in cbns)
    assert not any(isinstance(m, nn.BatchNorm2d) and m.affine for m in g.modules())  # only the CBNs' inner BN
    assert g.project.in_features == 8 and concat.project.in_features == 8 + K  # z alone is projected
    y = _labels(6, K)
    x = g(torch.randn(6, 8), y)
    assert x.shape == (6, 3, size, size) and x.abs().max() <= 1
    # DCGAN's init for the per-class gains (N(1, 0.02)) and shifts (0); weights N(0, 0.02) elsewhere
    gains = torch.cat([m.gamma.weight.flatten() for m in cbns])
    assert abs(gains.mean().item() - 1) < 0.01 and 0.01 < gains.std().item() < 0.03
    assert all(torch.count_nonzero(m.beta.weight) == 0 for m in cbns)
    # an unconditional net is the same net whichever conditioning is named
    plain = DCGANGenerator(latent_dim=8, image_size=size, base_channels=4, conditioning="batchnorm")
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in plain.modules())


def test_batchnorm_conditioning_applies_each_class_gain_and_bias():
    torch.manual_seed(0)
    g = _cbn_generator()
    first = g.blocks[0]
    z = torch.randn(4, 8)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    # train mode (batch statistics) keeps activations at unit scale: the labels matter
    assert (g(z, y0) - g(z, y1)).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    g.eval()  # eval: running statistics, so each sample is normalized on its own
    # the first CBN's output is gamma[y] * BN(h) + beta[y] for each sample's class
    h = g.project(z).view(4, g._start_channels, 7, 7)
    with torch.no_grad():
        first.gamma.weight[2].fill_(3.0)
        first.beta.weight[2].fill_(-0.5)
    y = torch.tensor([2, 0, 2, 1])
    normalized = first.bn(h)
    expected = first.gamma.weight[y][:, :, None, None] * normalized + first.beta.weight[y][:, :, None, None]
    torch.testing.assert_close(first(h, y), expected)
    torch.testing.assert_close(first(h, y)[0], 3.0 * normalized[0] - 0.5)
    # changing class 2's gain and bias moved only the class-2 samples
    before = g(z, torch.tensor([2, 0, 2, 1]))
    with torch.no_grad():
        first.gamma.weight[2].fill_(1.0)
        first.beta.weight[2].zero_()
    after = g(z, torch.tensor([2, 0, 2, 1]))
    torch.testing.assert_close(before[[1, 3]], after[[1, 3]], rtol=0, atol=0)
    change = (before[[0, 2]] - after[[0, 2]]).abs().amax(dim=(1, 2, 3)) / before[[0, 2]].abs().amax(dim=(1, 2, 3))
    assert change.min() > 0.1  # (eval-mode outputs of an untrained net are small: compare relative changes)


def test_batchnorm_conditioning_gradients_reach_only_the_used_classes():
    torch.manual_seed(0)
    g = _cbn_generator()
    d = DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=K, projection=True)
    y = torch.tensor([0, 1, 0, 1, 0, 1])  # classes 2 and 3 unused
    d(g(torch.randn(6, 8), y), y).mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None, name
        if name.endswith(("gamma.weight", "beta.weight")):
            assert p.grad[:2].abs().sum(1).min() > 0 and torch.count_nonzero(p.grad[2:]) == 0, name
        else:
            assert p.grad.abs().sum() > 0, name


def test_unknown_conditioning_is_refused():
    with pytest.raises(ValueError, match="conditioning must be one of \\['concat', 'batchnorm'\\]"):
        DCGANGenerator(image_size=28, channels=1, num_classes=K, conditioning="film")
