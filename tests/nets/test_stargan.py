"""Tests for lightning_gen/nets/stargan.py: the paper's layouts (appendix tables 4-5), the domain tiling, shapes and
errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gen.checks import value_checks
from lightning_gen.nets import StarGANDiscriminator, StarGANGenerator, StarGANOutput, tile_domains


def test_tile_domains_appends_each_domain_as_a_constant_channel():
    x = torch.randn(2, 3, 4, 5)
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = tile_domains(x, c)
    assert out.shape == (2, 5, 4, 5)
    assert torch.equal(out[:, :3], x)
    assert torch.equal(out[0, 3], torch.ones(4, 5)) and torch.equal(out[0, 4], torch.zeros(4, 5))
    assert torch.equal(out[1, 3], torch.zeros(4, 5)) and torch.equal(out[1, 4], torch.ones(4, 5))


def test_generator_follows_the_paper_layout_at_128_px():
    """Table 4: conv 7x7 (3 + n_c -> 64), two 4x4 stride-2 downs (128, 256), six residual blocks of 256, two 4x4
    stride-2 transposed convs (128, 64), conv 7x7 (64 -> 3) + tanh; instance norm (affine), no conv biases."""
    g = StarGANGenerator(num_domains=5, channels=3, base_channels=64, num_residual_blocks=6)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    shapes = [tuple(m.weight.shape) for m in convs]
    assert shapes[:3] == [(64, 8, 7, 7), (128, 64, 4, 4), (256, 128, 4, 4)]
    assert shapes[3:15] == [(256, 256, 3, 3)] * 12
    assert shapes[15:] == [(256, 128, 4, 4), (128, 64, 4, 4), (3, 64, 7, 7)]  # transposed: (in, out, k, k)
    assert all(m.bias is None for m in convs)
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 2 + 2 + 12 + 1 and all(n.affine and not n.track_running_stats for n in norms)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    y = g(x, torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 1]]))
    assert y.shape == x.shape and y.abs().max() <= 1


def test_discriminator_follows_the_paper_layout_at_128_px():
    """Table 5: six 4x4 stride-2 convs (64 ... 2048) with LeakyReLU 0.01, a 3x3 conv to a 2x2 score map and a 2x2
    conv to n_d logits."""
    d = StarGANDiscriminator(num_domains=5, image_size=128, channels=3, base_channels=64, num_layers=6)
    convs = [m for m in d.trunk if isinstance(m, nn.Conv2d)]
    assert [tuple(m.weight.shape[:2]) for m in convs] == [(64, 3), (128, 64), (256, 128), (512, 256), (1024, 512),
                                                          (2048, 1024)]
    assert all(m.negative_slope == 0.01 for m in d.trunk if isinstance(m, nn.LeakyReLU))
    assert tuple(d.scores.weight.shape) == (1, 2048, 3, 3) and tuple(d.domain_logits.weight.shape) == (5, 2048, 2, 2)
    out = d(torch.randn(3, 3, 128, 128))
    assert isinstance(out, StarGANOutput)
    assert out.scores.shape == (3, 1, 2, 2) and out.domain_logits.shape == (3, 5)


def test_discriminator_on_28_px_digits_rounds_sides_down():
    d = StarGANDiscriminator(num_domains=4, image_size=28, channels=1, base_channels=8, num_layers=3)
    assert d.output_side == 3  # 28 -> 14 -> 7 -> 3
    out = d(torch.randn(2, 1, 28, 28))
    assert out.scores.shape == (2, 1, 3, 3) and out.domain_logits.shape == (2, 4)


def test_clear_errors():
    g = StarGANGenerator(3, 1, 4, 1)
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.zeros(1, 1, 30, 30), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(B, num_domains\) = \(1, 3\)"):
        g(torch.zeros(1, 1, 16, 16), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"channels=1"):
        g(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        g(torch.zeros(1, 1, 16, 16), torch.tensor([[2.0, 0.0, 0.0]]))
    with value_checks(False):  # the range check reads the values on the host: off in sync-free training batches
        g(torch.zeros(1, 1, 16, 16), torch.tensor([[2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 64 px"):
        StarGANDiscriminator(3, image_size=32, num_layers=6)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        StarGANDiscriminator(3, 16, 1, 4, num_layers=3)(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="num_residual_blocks"):
        StarGANGenerator(3, num_residual_blocks=-1)
