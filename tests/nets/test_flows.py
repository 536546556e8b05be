"""Tests of lightning_gen/nets/flows.py: masks, squeeze, RealNVP's exact log-determinant and inverse, the Glow
layers (ActNorm, invertible 1x1 convolution), and spline couplings in the vector and image flows."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.nets.flows import (
    ActNorm,
    AffineCoupling,
    CouplingResNet,
    ImageRealNVP,
    InvertibleConv1x1,
    SplineCoupling,
    VectorRealNVP,
    channel_mask,
    checkerboard_mask,
    half_mask,
    squeeze2d,
    unsqueeze2d,
)
from lightning_gen.nets.mlp import mlp


def perturb_(net: torch.nn.Module, std: float, seed: int) -> torch.nn.Module:
    """Move every parameter away from its (identity-at-init) value by N(0, std^2) noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def autograd_log_det(flow: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log|det dz/dx| of each sample from the full Jacobian computed by autograd."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda a: flow(a.unsqueeze(0))[0].flatten(), xi)
        out.append(torch.linalg.slogdet(jac.reshape(xi.numel(), xi.numel()))[1])
    return torch.stack(out)


def test_masks_are_complementary_and_balanced():
    cb0, cb1 = checkerboard_mask(4, 6, 0), checkerboard_mask(4, 6, 1)
    assert cb0.shape == (1, 4, 6) and torch.equal(cb0 + cb1, torch.ones(1, 4, 6)) and cb0.sum() == 12
    assert cb0[0, 0, 0] == 1 and cb0[0, 0, 1] == 0 and cb0[0, 1, 0] == 0
    ch = channel_mask(4, 0)
    assert ch.shape == (4, 1, 1) and ch.flatten().tolist() == [1, 1, 0, 0]
    assert channel_mask(4, 1).flatten().tolist() == [0, 0, 1, 1]
    assert half_mask(5, 0).tolist() == [1, 1, 1, 0, 0] and half_mask(5, 1).tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError):
        half_mask(1)
    with pytest.raises(ValueError):
        channel_mask(1)


def test_squeeze_is_a_permutation_and_unsqueeze_inverts_it():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    s = squeeze2d(x)
    assert s.shape == (2, 12, 2, 3)
    assert torch.equal(s.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    assert torch.equal(s[0, :4, 0, 0], torch.tensor([x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]))
    assert torch.equal(unsqueeze2d(s), x)


def test_flows_start_at_the_identity():
    x = torch.randn(4, 3)
    z, log_det = VectorRealNVP(3, 4)(x)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(4))
    img = torch.randn(2, 1, 8, 8)
    z, log_det = ImageRealNVP(1, 8, num_scales=2, hidden_channels=4, num_blocks=1)(img)
    # the multi-scale flow only permutes at init (squeeze and factor-out)
    assert torch.equal(z.flatten(1).sort(1).values, img.flatten(1).sort(1).values)
    assert torch.equal(log_det, torch.zeros(2))


@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("kind", ["half", "checkerboard", "channel"])
def test_coupling_log_det_matches_autograd_and_inverse_recovers_input(kind, parity):
    torch.manual_seed(parity)
    if kind == "half":
        mask, shape = half_mask(5, parity), (5,)
        layer = AffineCoupling(mask, mlp(5, [16], 10, "tanh"))
    elif kind == "checkerboard":
        mask, shape = checkerboard_mask(4, 4, parity), (2, 4, 4)
        layer = AffineCoupling(mask, CouplingResNet(3, 4, 8, 1), mask_as_input=True, channels=2)
    else:
        mask, shape = channel_mask(4, parity), (4, 3, 3)
        layer = AffineCoupling(mask, CouplingResNet(4, 8, 8, 1))
    layer = perturb_(layer.double(), 0.2, seed=10 + parity)
    x = torch.randn(3, *shape, dtype=torch.float64)
    y, log_det = layer(x)
    assert log_det.abs().min() > 1e-3  # not the identity any more
    torch.testing.assert_close(log_det, autograd_log_det(layer, x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(layer.inverse(y), x, rtol=0, atol=1e-10)
    kept = mask.bool().expand(shape)
    assert torch.equal(y[:, kept], x[:, kept])  # the masked entries pass through unchanged


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vector_flow_log_det_matches_autograd(seed):
    flow = perturb_(VectorRealNVP(4, num_couplings=4, hidden_dims=(16, 16)).double(), 0.3, seed)
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    z, log_det = flow(x)
    assert log_det.abs().min() > 1e-3
    torch.testing.assert_close(log_det, autograd_log_det(flow, x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("num_scales,channels,size", [(1, 1, 4), (2, 1, 8), (3, 2, 8), (2, 3, (4, 6))])
def test_image_flow_log_det_matches_autograd(num_scales, channels, size):
    flow = ImageRealNVP(channels, size, num_scales=num_scales, hidden_channels=6, num_blocks=1)
    flow = perturb_(flow.double(), 0.1, seed=num_scales)
    x = torch.randn(2, *flow.data_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z, log_det = flow(x)
    assert z.shape == x.shape and log_det.shape == (2,)
    assert log_det.abs().min() > 1e-3
    torch.testing.assert_close(log_det, autograd_log_det(flow, x), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-10)


def test_float32_inverse_recovers_input_to_1e5():
    flow = perturb_(ImageRealNVP(1, 8, num_scales=2, hidden_channels=8, num_blocks=1), 0.05, seed=3)
    x = torch.randn(4, 1, 8, 8)
    z, _ = flow(x)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-5)
    vflow = perturb_(VectorRealNVP(2, 6), 0.1, seed=4)
    v = torch.randn(64, 2)
    torch.testing.assert_close(vflow.inverse(vflow(v)[0]), v, rtol=0, atol=1e-5)


def test_image_flow_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 4"):
        ImageRealNVP(1, 14, num_scales=3)
    assert ImageRealNVP(1, 28, num_scales=3, hidden_channels=4, num_blocks=1).data_shape == (1, 28, 28)


# -- Glow layers ------------------------------------------------------------------------------------------------------
def test_actnorm_initializes_on_the_first_training_batch_only_and_is_exactly_invertible():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 4, 5, generator=g, dtype=torch.float64) * torch.tensor([0.1, 2.0, 7.0]).view(1, 3, 1, 1)
    x = x + torch.tensor([5.0, -1.0, 0.3], dtype=torch.float64).view(1, 3, 1, 1)
    layer = ActNorm(3).double()
    layer.eval()
    y, log_det = layer(x)  # eval mode never initializes: the identity
    assert torch.equal(y, x) and torch.equal(log_det, torch.zeros(16, dtype=torch.float64))
    assert not layer.initialized
    layer.train()
    y, log_det = layer(x)
    assert layer.initialized
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.var((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64),
                               rtol=5e-5, atol=0)  # scale 1 / (std + 1e-6): variance 1 - 2e-5 for std 0.1
    expected = -torch.log(x.std((0, 2, 3), unbiased=False) + 1e-6).sum() * 20  # 20 positions per channel
    torch.testing.assert_close(log_det, expected.expand(16), rtol=1e-10, atol=0)
    torch.testing.assert_close(log_det, autograd_log_det(layer, x[:2]).repeat(8), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer.inverse(y), x, rtol=0, atol=1e-12)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer(3 * x + 1)  # a later batch in training mode leaves the parameters alone
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k
    vectors = ActNorm(2)  # (B, C) input: one position per channel
    v, ld = vectors(torch.tensor([[1.0, 10.0], [3.0, 30.0]]))
    torch.testing.assert_close(v, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), rtol=0, atol=1e-5)
    torch.testing.assert_close(ld, -torch.log(torch.tensor([1.0, 10.0])).sum().expand(2), rtol=1e-5, atol=1e-5)


def test_actnorm_init_survives_a_state_dict_round_trip(tmp_path):
    flow = ImageRealNVP(1, 4, num_scales=1, hidden_channels=4, num_blocks=1, actnorm=True, permutation="conv1x1",
                        layout="glow", steps_per_scale=2)
    x = 3 * torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1)) + 2
    z, log_det = flow(x)  # initializes every ActNorm
    torch.save(flow.state_dict(), tmp_path / "flow.pt")
    fresh = ImageRealNVP(1, 4, num_scales=1, hidden_channels=4, num_blocks=1, actnorm=True, permutation="conv1x1",
                         layout="glow", steps_per_scale=2)
    fresh.load_state_dict(torch.load(tmp_path / "flow.pt", weights_only=True))
    actnorms = [m for m in fresh.modules() if isinstance(m, ActNorm)]
    assert len(actnorms) == 2 and all(bool(m.initialized) for m in actnorms)
    z2, log_det2 = fresh(x - 5)  # training mode, another batch: no re-initialization, the same map as before
    torch.testing.assert_close(z2, flow(x - 5)[0], rtol=0, atol=0)
    torch.testing.assert_close(log_det2, log_det, rtol=0, atol=0)  # both layers' log-dets are data-independent
    assert abs(float(log_det[0].detach())) > 1.0  # the init scaled the data (std 3): not the identity


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 3)])
def test_invertible_conv1x1_log_det_is_exact_and_its_inverse_recovers_the_input(shape):
    layer = perturb_(InvertibleConv1x1(3, generator=torch.Generator().manual_seed(0)).double(), 0.3, seed=2)
    w = layer.weight()
    torch.testing.assert_close(torch.linalg.slogdet(w)[1], layer.log_s.sum(), rtol=1e-12, atol=1e-12)
    assert abs(float(layer.log_s.sum().detach())) > 0.05  # perturbed away from the rotation it starts as
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, log_det = layer(x)
    positions = 1 if len(shape) == 2 else shape[2] * shape[3]
    torch.testing.assert_close(y, torch.einsum("ij,bj...->bi...", w, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_det, autograd_log_det(layer, x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(log_det, (positions * torch.linalg.slogdet(w)[1]).expand(shape[0]), rtol=1e-10,
                               atol=1e-10)
    torch.testing.assert_close(layer.inverse(y), x, rtol=0, atol=1e-12)
    start = InvertibleConv1x1(4, generator=torch.Generator().manual_seed(3)).weight()  # a rotation: orthogonal
    torch.testing.assert_close(start @ start.T, torch.eye(4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout,permutation,num_scales,channels,size", [
    ("realnvp", "conv1x1", 2, 1, 4), ("glow", "conv1x1", 2, 1, 4), ("glow", "none", 1, 2, (2, 4)),
])
def test_glow_options_keep_the_log_det_exact_and_the_flow_invertible(layout, permutation, num_scales, channels, size):
    flow = ImageRealNVP(channels, size, num_scales=num_scales, hidden_channels=6, num_blocks=1, actnorm=True,
                        permutation=permutation, layout=layout, steps_per_scale=3).double()
    x = torch.randn(4, *flow.data_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    flow(3 * x + 1)  # ActNorm's init
    flow = perturb_(flow, 0.1, seed=num_scales).eval()
    z, log_det = flow(x[:2])
    assert z.shape == x[:2].shape and log_det.abs().min() > 1e-3
    torch.testing.assert_close(log_det, autograd_log_det(flow, x[:2]), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(flow.inverse(z), x[:2], rtol=0, atol=1e-10)
    kinds = {type(m).__name__ for m in flow.modules()}
    assert "ActNorm" in kinds and ("InvertibleConv1x1" in kinds) == (permutation == "conv1x1")


def test_default_image_flow_keeps_the_parameters_of_earlier_versions_and_options_are_checked():
    flow = ImageRealNVP(1, 8, num_scales=2, hidden_channels=4, num_blocks=1)
    names = set(flow.state_dict())
    assert "scales.0.checkerboard.0.net.stem.weight" in names and "scales.0.channel.2.scale" in names
    assert "scales.1.checkerboard.3.mask" in names and len([n for n in names if n.endswith(".scale")]) == 10
    assert not any(isinstance(m, (ActNorm, InvertibleConv1x1)) for m in flow.modules())
    with pytest.raises(ValueError, match="permutation"):
        ImageRealNVP(1, 8, permutation="reverse")
    with pytest.raises(ValueError, match="layout"):
        ImageRealNVP(1, 8, layout="nice")
    with pytest.raises(ValueError, match="divisible by 8"):
        ImageRealNVP(1, 28, num_scales=3, layout="glow")


# -- spline couplings (Durkan et al. 2019) ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["half", "checkerboard", "channel"])
def test_spline_coupling_log_det_matches_autograd_and_inverse_recovers_input(kind):
    torch.manual_seed(0)
    if kind == "half":
        mask, shape = half_mask(5, 1), (5,)
        layer = SplineCoupling(mask, mlp(5, [16], 5 * 11, "tanh"), num_bins=4, bound=3.0)
    elif kind == "checkerboard":
        mask, shape = checkerboard_mask(4, 4, 0), (2, 4, 4)
        layer = SplineCoupling(mask, CouplingResNet(3, 2 * 11, 8, 1), num_bins=4, bound=3.0, mask_as_input=True)
    else:
        mask, shape = channel_mask(4, 1), (4, 3, 3)
        layer = SplineCoupling(mask, CouplingResNet(4, 4 * 11, 8, 1), num_bins=4, bound=3.0)
    layer = perturb_(layer.double(), 0.3, seed=11)
    x = torch.randn(3, *shape, dtype=torch.float64)
    x[0].view(-1)[:2] = torch.tensor([3.5, -4.0])  # some entries in the identity tails
    y, log_det = layer(x)
    assert log_det.abs().min() > 1e-3  # not the identity any more
    torch.testing.assert_close(log_det, autograd_log_det(layer, x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(layer.inverse(y), x, rtol=0, atol=1e-9)
    kept = mask.bool().expand(shape)
    assert torch.equal(y[:, kept], x[:, kept])  # the masked entries pass through unchanged
    assert not torch.equal(y[:, ~kept], x[:, ~kept])


@pytest.mark.parametrize("layout", ["realnvp", "glow"])
def test_spline_flows_start_at_the_identity_keep_the_log_det_exact_and_invert(layout):
    vector = VectorRealNVP(3, 4, (16,), coupling="spline", num_bins=6)
    v = torch.randn(4, 3)
    z, log_det = vector(v)
    torch.testing.assert_close(z, v, rtol=0, atol=1e-6)
    torch.testing.assert_close(log_det, torch.zeros(4), rtol=0, atol=1e-5)
    vector = perturb_(vector.double(), 0.3, seed=1)
    z, log_det = vector(v.double())
    assert log_det.abs().min() > 1e-3
    torch.testing.assert_close(log_det, autograd_log_det(vector, v.double()), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(vector.inverse(z), v.double(), rtol=0, atol=1e-9)

    image = ImageRealNVP(1, 8, num_scales=2, hidden_channels=6, num_blocks=1, layout=layout, actnorm=layout == "glow",
                         permutation="conv1x1" if layout == "glow" else "none", coupling="spline", num_bins=4)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    image = perturb_(image.double(), 0.1, seed=2).eval()
    z, log_det = image(x)
    assert z.shape == x.shape and log_det.abs().min() > 1e-3
    torch.testing.assert_close(log_det, autograd_log_det(image, x), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(image.inverse(z), x, rtol=0, atol=1e-9)
    assert any(isinstance(m, SplineCoupling) for m in image.modules())
    assert not any(isinstance(m, AffineCoupling) for m in image.modules())


def test_spline_flow_in_float32_inverts_to_1e5_and_runs_its_splines_in_float32_under_autocast():
    flow = perturb_(VectorRealNVP(2, 6, coupling="spline", num_bins=8), 0.05, seed=4)
    v = torch.randn(256, 2)
    z, _ = flow(v)
    torch.testing.assert_close(flow.inverse(z), v, rtol=0, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z16, log_det16 = flow(v)
    assert z16.dtype == torch.float32 and log_det16.dtype == torch.float32
    torch.testing.assert_close(z16, z, rtol=0, atol=0.05)


def test_coupling_choice_is_checked_and_a_wrong_net_size_says_what_it_needs():
    with pytest.raises(ValueError, match="coupling must be 'affine' or 'spline'"):
        VectorRealNVP(2, 4, coupling="rqs")
    with pytest.raises(ValueError, match="coupling must be 'affine' or 'spline'"):
        ImageRealNVP(1, 8, coupling="neural")
    layer = SplineCoupling(half_mask(2), mlp(2, [8], 2 * 2, "relu"), num_bins=4)
    with pytest.raises(ValueError, match=r"2 x 11 = 22 channels"):
        layer(torch.randn(3, 2))
    with pytest.raises(ValueError, match="num_bins"):
        SplineCoupling(half_mask(2), mlp(2, [8], 2, "relu"), num_bins=0)
