"""Tests of lightning_gen/nets/flows.py: masks, squeeze, and RealNVP's exact log-determinant and inverse."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.nets.flows import (
    AffineCoupling,
    CouplingResNet,
    ImageRealNVP,
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
