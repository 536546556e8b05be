"""SRGAN nets (lightning_gen/nets/super_resolution.py) and the VGG-19 content features (lightning_gen/nets/vgg.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_gen.nets import (
    PixelShuffleUpsample,
    SRGANDiscriminator,
    SRResNetGenerator,
    VGG19Features,
    VGGWeightsNotFoundError,
    bicubic_downsample,
    bicubic_upsample,
)
from lightning_gen.nets.vgg import VGG19_LAYERS, VGG19_WEIGHTS_ENV


@pytest.mark.parametrize("scale, stages", [(2, 1), (4, 2)])
def test_generator_upscales_by_its_scale_with_one_pixel_shuffle_stage_per_factor_two(scale, stages):
    g = SRResNetGenerator(in_channels=3, channels=8, num_blocks=2, scale=scale)
    assert len(g.upsample) == stages and len(g.blocks) == 2
    x = torch.rand(2, 3, 7, 5) * 2 - 1
    y = g(x)
    assert y.shape == (2, 3, 7 * scale, 5 * scale)
    assert float(y.detach().abs().max()) <= 1.0  # tanh


def test_generator_channels_and_errors():
    assert SRResNetGenerator(in_channels=1, out_channels=3, channels=4, num_blocks=0, scale=2)(
        torch.zeros(1, 1, 4, 4)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="power of two"):
        SRResNetGenerator(scale=3)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        SRResNetGenerator(in_channels=1, channels=4, num_blocks=1)(torch.zeros(1, 3, 4, 4))


def test_pixel_shuffle_upsampling_rearranges_the_conv_channels_into_2x2_blocks():
    torch.manual_seed(0)
    up = PixelShuffleUpsample(3)
    x = torch.randn(2, 3, 4, 5)
    h = up.conv(x)  # (2, 12, 4, 5)
    expected = torch.empty(2, 3, 8, 10)
    for c in range(3):
        for di in range(2):
            for dj in range(2):
                expected[:, c, di::2, dj::2] = h[:, 4 * c + 2 * di + dj]
    torch.testing.assert_close(up(x), up.act(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [28, 96])
def test_discriminator_scores_small_and_paper_sized_images(size):
    d = SRGANDiscriminator(in_channels=1, base_channels=4, num_stages=4, hidden_dim=16)
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]  # the paper's k3n64s1 ... k3n512s2
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16, 32, 32]
    assert d(torch.randn(3, 1, size, size)).shape == (3,)


def test_bicubic_downsample_is_antialiased_bicubic_interpolation_clamped():
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    low = bicubic_downsample(x, 4)
    ref = F.interpolate(x, size=(7, 7), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
    torch.testing.assert_close(low, ref, rtol=0, atol=0)
    # a constant image stays constant (the kernel sums to one)
    torch.testing.assert_close(bicubic_downsample(torch.full((1, 3, 8, 8), 0.25), 2), torch.full((1, 3, 4, 4), 0.25))
    assert bicubic_upsample(low, 4).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="divisible"):
        bicubic_downsample(torch.zeros(1, 1, 30, 30), 4)


def test_vgg_layer_names_match_torchvision_indices():
    # phi_{5,4} (VGG54) is the activation after the 16th conv, index 35 of vgg19().features; phi_{2,2} index 8
    assert VGG19_LAYERS.index("relu5_4") == 35 and VGG19_LAYERS.index("relu2_2") == 8 and len(VGG19_LAYERS) == 37


def test_vgg_features_take_grayscale_as_rgb_and_stay_frozen():
    net = VGG19Features("relu2_2", pretrained=False)
    assert len(net.features) == 9 and not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    out = net(x)
    assert out.shape == (2, 128, 8, 8)
    torch.testing.assert_close(out, net(x.expand(-1, 3, -1, -1)), rtol=0, atol=0)


def test_missing_vgg_weights_say_where_to_put_them_and_never_download(tmp_path, monkeypatch):
    monkeypatch.delenv(VGG19_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(VGGWeightsNotFoundError) as err:
        VGG19Features()
    message = str(err.value)
    assert VGG19_WEIGHTS_ENV in message and "weights_path" in message and "download=True" in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbbb0b9.pth") in message
    monkeypatch.setenv(VGG19_WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(VGGWeightsNotFoundError, match="is not a file"):
        VGG19Features()
    with pytest.raises(VGGWeightsNotFoundError, match="No VGG-19 weights at"):
        VGG19Features(weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="VGG-19 layers"):
        VGG19Features("relu9_9", pretrained=False)


def test_vgg_weights_are_read_from_weights_path_or_the_environment(tmp_path, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)  # torchvision's file also holds the classifier: ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    net = VGG19Features("relu2_2", weights_path=str(path))
    torch.testing.assert_close(net.features[7].weight, features[7].weight, rtol=0, atol=0)  # conv2_2
    monkeypatch.setenv(VGG19_WEIGHTS_ENV, str(path))
    torch.testing.assert_close(VGG19Features("relu1_1").features[0].bias, features[0].bias, rtol=0, atol=0)
