"""Tests of lightning_gen/nets/unet.py: the DDPM U-Net, the MLP denoiser and the sinusoidal time embedding."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.nets import MLPDenoiser, UNet, timestep_embedding


@pytest.mark.parametrize(
    "channels, size, mults",
    [(1, 28, (1, 2, 2)), (3, 32, (1, 2, 2, 2)), (1, 8, (1, 2)), (2, 12, (1, 2, 2)), (3, 16, (1,))],
)
def test_unet_output_has_input_shape(channels, size, mults):
    torch.manual_seed(0)
    net = UNet(channels, size, base_channels=8, channel_mults=mults, num_res_blocks=1)
    assert net.data_shape == (channels, size, size)
    x, t = torch.randn(3, channels, size, size), torch.tensor([0, 5, 999])
    assert net(x, t).shape == x.shape


def test_unet_output_starts_at_zero_and_learns_from_every_layer():
    torch.manual_seed(0)
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2), num_res_blocks=2, dropout=0.1, attention=True)
    x, t = torch.randn(4, 1, 8, 8), torch.randint(0, 100, (4,))
    out = net(x, t)
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialized output layer
    # a few steps on a fixed target move the output and reach the time embedding
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = (net(x, t) - x).pow(2).mean()
        loss.backward()
        opt.step()
    assert net.time_mlp[0].weight.grad is not None and net.time_mlp[0].weight.grad.abs().sum() > 0
    assert net(x, t).abs().sum() > 0


def test_unet_depends_on_time():
    torch.manual_seed(0)
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2))
    for m in net.modules():  # undo the zero init of the output and of each residual branch
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.2)
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)
    out = net(x, torch.tensor([1, 500]))
    assert not torch.allclose(out[0], out[1])


def test_unet_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(1, 30, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="divisible by 8"):
        UNet(3, 28, channel_mults=(1, 2, 2, 2))
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, 1, 7, 7), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.randn(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))


def test_timestep_embedding_values():
    t = torch.tensor([0, 1, 10, 999])
    emb = timestep_embedding(t, 16)
    assert emb.shape == (4, 16)
    # t = 0: cos = 1, sin = 0
    assert torch.equal(emb[0, :8], torch.ones(8)) and torch.equal(emb[0, 8:], torch.zeros(8))
    # cos^2 + sin^2 = 1 per frequency; the first frequency is 1, the last max_period^(-7/8)
    torch.testing.assert_close(emb[:, :8] ** 2 + emb[:, 8:] ** 2, torch.ones(4, 8))
    torch.testing.assert_close(emb[:, 8], torch.sin(t.float()))
    f_last = math.exp(-math.log(10_000.0) * 7 / 8)
    torch.testing.assert_close(emb[3, 15], torch.tensor(math.sin(999 * f_last)))
    # distinct steps get distinct embeddings; odd sizes are padded with a zero column
    assert torch.cdist(emb, emb).add(torch.eye(4)).min() > 0.1
    odd = timestep_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.equal(odd[:, -1], torch.zeros(4))
    with pytest.raises(ValueError):
        timestep_embedding(t[:, None], 8)


def test_mlp_denoiser_shapes_zero_start_and_time_dependence():
    torch.manual_seed(0)
    net = MLPDenoiser(data_dim=3, hidden_dims=(32, 32), time_embed_dim=16)
    assert net.data_shape == (3,)
    x = torch.randn(5, 3)
    assert torch.equal(net(x, torch.arange(5)), torch.zeros(5, 3))
    torch.nn.init.normal_(net.out.weight)
    out = net(x[:1].expand(2, 3), torch.tensor([0, 100]))
    assert out.shape == (2, 3) and not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="expects 3 values"):
        net(torch.randn(5, 2), torch.arange(5))


# -- class-conditional nets (classifier-free guidance) ------------------------------------------------------------
def _unet(num_classes=None) -> UNet:
    torch.manual_seed(0)
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2), num_classes=num_classes)
    for m in net.modules():  # undo the zero init of the output and of each residual branch
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.2)
    return net


@pytest.mark.parametrize("make", [lambda k: _unet(k), lambda k: MLPDenoiser(4, (16,), 8, num_classes=k)],
                         ids=["unet", "mlp"])
def test_num_classes_adds_a_label_embedding_with_a_null_entry_and_nothing_else(make):
    plain, conditional = make(None), make(3)
    assert plain.num_classes == 0 and conditional.num_classes == 3
    extra = set(conditional.state_dict()) - set(plain.state_dict())
    assert extra == {"label_embedding.weight"} and set(plain.state_dict()) <= set(conditional.state_dict())
    assert conditional.label_embedding.weight.shape[0] == 4  # 3 classes + the null label


def test_unconditional_unet_is_unchanged_by_the_option():
    torch.manual_seed(0)
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2))
    assert "label_embedding.weight" not in net.state_dict()
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))


@pytest.mark.parametrize("make", [lambda: _unet(3), lambda: MLPDenoiser(4, (16,), 8, num_classes=3)], ids=["unet", "mlp"])
def test_conditional_net_depends_on_the_label_and_checks_it(make):
    net = make()
    for p in net.parameters():  # the MLP's output layer starts at zero too
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.2)
    shape = (4, 1, 8, 8) if isinstance(net, UNet) else (4, 4)
    x, t = torch.randn(1, *shape[1:]).expand(shape), torch.full((4,), 7)
    out = net(x, t, torch.tensor([0, 1, 2, 3]))  # 3 is the null label
    assert out.shape == shape
    assert torch.cdist(out.flatten(1), out.flatten(1)).add(torch.eye(4)).min() > 1e-3  # every label its own output
    torch.testing.assert_close(net(x, t, torch.tensor(2)), net(x, t, torch.full((4,), 2)))  # one label for all
    with pytest.raises(ValueError, match="class-conditional"):
        net(x, t)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        net(x, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="integer"):
        net(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match="3 labels"):
        net(x, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="num_classes"):
        type(net)(num_classes=0)
