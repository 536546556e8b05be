"""Tests for lightning_gen/nets/image_to_image.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gen.nets.image_to_image import (
    PatchGANDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    patchgan_receptive_field,
)


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 48)])
@pytest.mark.parametrize("channels", [(1, 3), (3, 3), (3, 1)])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_generator_shapes_and_range(size, channels, norm):
    torch.manual_seed(0)
    c_in, c_out = channels
    g = ResnetGenerator(c_in, c_out, base_channels=4, num_blocks=2, norm=norm)
    y = g(torch.randn(2, c_in, *size))
    assert y.shape == (2, c_out, *size)
    assert y.abs().max() <= 1.0


def test_resnet_generator_structure():
    g = ResnetGenerator(base_channels=8, num_blocks=6, dropout=0.5)
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in g.modules()) == 2 + 2 * 6
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 6
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 2
    # DCGAN-style init N(0, 0.02) on every conv
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002


@pytest.mark.parametrize("bad", [(30, 32), (32, 34), (4, 4)])
def test_resnet_generator_size_error(bad):
    g = ResnetGenerator(base_channels=4, num_blocks=1)
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.randn(1, 3, *bad))
    with pytest.raises(ValueError, match="in_channels=3"):
        g(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("size,num_downs", [(32, 5), (64, 6), (64, 4)])
@pytest.mark.parametrize("channels", [(1, 3), (3, 3), (4, 1)])
def test_unet_generator_shapes_and_range(size, num_downs, channels):
    torch.manual_seed(0)
    c_in, c_out = channels
    g = UNetGenerator(c_in, c_out, base_channels=4, num_downs=num_downs)
    y = g(torch.randn(2, c_in, size, size))
    assert y.shape == (2, c_out, size, size)
    assert y.abs().max() <= 1.0
    g.eval()
    y2 = g(torch.randn(1, c_in, size, 2 * size))  # non-square, batch of one in eval mode
    assert y2.shape == (1, c_out, size, 2 * size)


def test_unet_generator_dropout_and_skips():
    g = UNetGenerator(base_channels=4, num_downs=8)
    drops = [m for m in g.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.5 for d in drops)
    no_drop = UNetGenerator(base_channels=4, num_downs=8, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in no_drop.modules())
    # the innermost encoder width is base * 8 and skips double the decoder inputs
    ups = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]  # innermost decoder layer first
    assert len(ups) == 8
    assert ups[0].in_channels == 4 * 8 and ups[0].out_channels == 4 * 8  # innermost: no skip yet
    assert ups[1].in_channels == 2 * 4 * 8  # skip doubles the decoder input
    assert ups[-1].in_channels == 2 * 4 and ups[-1].out_channels == 3  # outermost: 2 * base -> out_channels
    # dropout follows the first three decoder layers (pix2pix CD512-CD512-CD512), nowhere else
    order = [m for m in g.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Dropout))]
    assert [type(m) for m in order[:6]] == [nn.ConvTranspose2d, nn.Dropout] * 3
    assert all(isinstance(m, nn.ConvTranspose2d) for m in order[6:])
    # eval mode is deterministic, train mode with dropout is not
    x = torch.randn(2, 3, 256, 256)
    g.eval()
    with torch.no_grad():
        torch.testing.assert_close(g(x), g(x))


def test_unet_generator_size_error():
    g = UNetGenerator(base_channels=4, num_downs=5)
    with pytest.raises(ValueError, match="divisible by 32"):
        g(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="divisible by 32"):
        g(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("num_layers,size", [(1, 32), (2, 32), (3, 64), (3, 256), (4, 64)])
@pytest.mark.parametrize("in_channels", [1, 6])
def test_patchgan_output_map(num_layers, size, in_channels):
    d = PatchGANDiscriminator(in_channels, base_channels=4, num_layers=num_layers)
    side = size // 2**num_layers - 2
    assert d.output_shape(size, size) == (side, side)
    if size <= 64:
        out = d(torch.randn(2, in_channels, size, size))
        assert out.shape == (2, 1, side, side)


def test_patchgan_receptive_field_formula():
    assert patchgan_receptive_field(3) == 70  # the 70x70 PatchGAN
    assert patchgan_receptive_field(1) == 16 and patchgan_receptive_field(2) == 34  # pix2pix 16x16 and 34x34
    for n in range(1, 6):
        # r_out = 1, r_in = s * r_out + (k - s), from the output back through the strides [2]*n + [1, 1]
        r = 1
        for s in reversed([2] * n + [1, 1]):
            r = s * r + (4 - s)
        assert patchgan_receptive_field(n) == r
    assert PatchGANDiscriminator(num_layers=3).receptive_field == 70


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_patchgan_receptive_field_empirical(num_layers):
    """The input pixels that one central logit depends on (nonzero gradient) span exactly ``receptive_field``."""
    torch.manual_seed(0)
    d = PatchGANDiscriminator(1, base_channels=2, num_layers=num_layers, norm="none").double()
    with torch.no_grad():
        for m in d.modules():  # positive weights and inputs: no cancellation, every path gives a nonzero gradient
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
    rf = d.receptive_field
    size = 2 ** num_layers * ((2 * rf) // 2**num_layers + 3)
    x = torch.rand(1, 1, size, size, dtype=torch.double, requires_grad=True)
    out = d(x)
    i = out.shape[-1] // 2
    out[0, 0, i, i].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert rows.min() > 0 and rows.max() < size - 1  # the patch lies inside the image (no padding involved)
    assert rows.max() - rows.min() + 1 == rf
    assert cols.max() - cols.min() + 1 == rf


def test_patchgan_errors():
    d = PatchGANDiscriminator(6, base_channels=4, num_layers=3)
    with pytest.raises(ValueError, match="input \\+ output channels"):
        d(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="at least 24"):
        d(torch.randn(1, 6, 16, 16))
    with pytest.raises(ValueError, match="norm must be one of"):
        PatchGANDiscriminator(norm="layer")
