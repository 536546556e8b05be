"""Tests for lightning_gen/losses/regularizers.py: penalties against critics whose input gradient is known."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from lightning_gen.losses import (
    clip_weights_,
    dragan_penalty,
    get_regularizer,
    gradient_penalty,
    input_gradient_norm,
    r1_penalty,
)
from lightning_gen.losses.regularizers import REGULARIZERS

DT = torch.float64  # hand computations below are exact to ~1e-16 in float64


class LinearCritic(nn.Module):
    """f(x) = <w, flatten(x)>: its input gradient is w everywhere, so ||grad f|| = ||w||."""

    def __init__(self, numel: int, norm: float, seed: int = 0) -> None:
        super().__init__()
        w = torch.randn(numel, dtype=DT, generator=torch.Generator().manual_seed(seed))
        self.w = nn.Parameter(norm * w / w.norm())

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.w


def half_square_norm(x: Tensor) -> Tensor:
    """f(x) = ||x||^2 / 2 per sample: its input gradient is x itself."""
    return 0.5 * x.flatten(1).pow(2).sum(1)


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=DT, generator=g), 3.0 + 2.0 * torch.randn(shape, dtype=DT, generator=g)


SHAPES = [(16, 2), (8, 3, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=["vectors", "images"])
def test_gradient_penalty_zero_for_unit_norm_linear_critic(shape):
    """A 1-Lipschitz linear critic has ||grad|| = 1 at every interpolate: the penalty is 0 (~1e-30 in float64)."""
    real, fake = _pair(shape)
    critic = LinearCritic(real[0].numel(), norm=1.0)
    gp = gradient_penalty(critic, real, fake)
    assert gp.shape == ()
    assert abs(gp.item()) < 1e-10


@pytest.mark.parametrize("shape", SHAPES, ids=["vectors", "images"])
@pytest.mark.parametrize("norm", [0.5, 2.0, 3.0])
def test_gradient_penalty_of_linear_critic_is_squared_norm_gap(shape, norm):
    """Two-sided penalty: ||w|| = c gives exactly (c - 1)^2, both below and above 1 (0.25, 1, 4)."""
    real, fake = _pair(shape)
    gp = gradient_penalty(LinearCritic(real[0].numel(), norm=norm), real, fake)
    assert_close(gp, torch.tensor((norm - 1.0) ** 2, dtype=DT))


def test_gradient_penalty_target():
    """``target`` replaces 1: ||w|| = 2 with target 2 gives 0; with target 0.5 gives 2.25."""
    real, fake = _pair((16, 2))
    critic = LinearCritic(2, norm=2.0)
    assert abs(gradient_penalty(critic, real, fake, target=2.0).item()) < 1e-10
    assert_close(gradient_penalty(critic, real, fake, target=0.5), torch.tensor(2.25, dtype=DT))


@pytest.mark.parametrize("shape", SHAPES, ids=["vectors", "images"])
def test_gradient_penalty_matches_hand_computation_for_quadratic_critic(shape):
    """f = ||x||^2/2 has grad f(x_hat) = x_hat, so GP = mean((||x_hat|| - 1)^2) with x_hat = a real + (1 - a) fake."""
    real, fake = _pair(shape)
    gp = gradient_penalty(half_square_norm, real, fake, generator=torch.Generator().manual_seed(123))
    alpha = torch.rand((shape[0],) + (1,) * (len(shape) - 1), dtype=DT, generator=torch.Generator().manual_seed(123))
    x_hat = alpha * real + (1 - alpha) * fake
    expected = (x_hat.flatten(1).norm(dim=1) - 1.0).pow(2).mean()
    assert_close(gp, expected)
    # the quadratic critic's penalty depends on alpha, so a different seed must change it
    other = gradient_penalty(half_square_norm, real, fake, generator=torch.Generator().manual_seed(124))
    assert abs(other.item() - gp.item()) > 1e-3 * gp.item()


def test_gradient_penalty_interpolates_per_sample():
    """With real = 1 and fake = 0, x_hat = alpha: one alpha per sample (shared by its pixels), drawn U(0, 1)."""
    seen = []

    def recording_critic(x: Tensor) -> Tensor:
        seen.append(x.detach().clone())
        return half_square_norm(x)

    n = 2000
    gradient_penalty(recording_critic, torch.ones(n, 3, 2, 2, dtype=DT), torch.zeros(n, 3, 2, 2, dtype=DT),
                     generator=torch.Generator().manual_seed(0))
    (x_hat,) = seen
    alpha = x_hat[:, 0, 0, 0]
    assert_close(x_hat, alpha.view(n, 1, 1, 1).expand_as(x_hat), rtol=0, atol=0)  # constant within a sample
    assert alpha.unique().numel() == n  # different across samples
    assert 0.0 <= alpha.min().item() and alpha.max().item() < 1.0
    # U(0,1): mean 1/2 (sd of the mean 0.0065 at n=2000) and variance 1/12 = 0.0833 (sd ~0.0017)
    assert abs(alpha.mean().item() - 0.5) < 0.03
    assert abs(alpha.var().item() - 1 / 12) < 0.008


def test_gradient_penalty_gradient_reaches_critic_parameters():
    """The penalty is differentiable in the critic's weights (create_graph): d(||w|| - 1)^2/dw = 2(||w|| - 1) w/||w||."""
    real, fake = _pair((16, 5))
    critic = LinearCritic(5, norm=2.0)
    gp = gradient_penalty(critic, real, fake)
    gp.backward()
    w = critic.w.detach()
    assert_close(critic.w.grad, 2.0 * (w.norm() - 1.0) * w / w.norm())


def test_gradient_penalty_rejects_mismatched_shapes():
    """Real and fake batches must have the same shape."""
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(half_square_norm, torch.zeros(4, 2), torch.zeros(3, 2))


def test_input_gradient_norm_per_sample():
    """For f = ||x||^2/2 the per-sample gradient norm is ||x||: (3, 4) -> 5, (0, 1) -> 1."""
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=DT)
    assert_close(input_gradient_norm(half_square_norm, x), torch.tensor([5.0, 1.0], dtype=DT))


def test_r1_penalty_hand_computation():
    """R1 = 1/2 mean ||grad D(x)||^2: for f = ||x||^2/2 at (3, 4) and (0, 1) it is (25 + 1)/4 = 6.5."""
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=DT)
    assert_close(r1_penalty(half_square_norm, x), torch.tensor(6.5, dtype=DT))
    imgs = _pair((6, 3, 4, 4))[0]
    assert_close(r1_penalty(half_square_norm, imgs), 0.5 * imgs.flatten(1).pow(2).sum(1).mean())


def test_r1_penalty_linear_critic_and_its_gradient():
    """Linear critic with ||w|| = 2: R1 = 2 on any data, and dR1/dw = w."""
    real = _pair((10, 3, 4, 4))[0]
    critic = LinearCritic(48, norm=2.0)
    r1 = r1_penalty(critic, real)
    assert_close(r1, torch.tensor(2.0, dtype=DT))
    r1.backward()
    assert_close(critic.w.grad, critic.w.detach())


@pytest.mark.parametrize("shape", SHAPES, ids=["vectors", "images"])
def test_dragan_penalty_linear_critics(shape):
    """DRAGAN is a gradient-norm penalty too: 0 for a unit-norm linear critic, (c - 1)^2 for norm c."""
    real, _ = _pair(shape)
    assert abs(dragan_penalty(LinearCritic(real[0].numel(), norm=1.0), real).item()) < 1e-10
    assert_close(dragan_penalty(LinearCritic(real[0].numel(), norm=2.5), real), torch.tensor(2.25, dtype=DT))


def test_dragan_penalty_matches_hand_computation_for_quadratic_critic():
    """Kodali 2017 reference code: x_p = x + 0.5 std(x) U[0,1), x_hat = a x + (1 - a) x_p, GP on x_hat."""
    real, _ = _pair((12, 3))
    got = dragan_penalty(half_square_norm, real, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    perturbed = real + 0.5 * real.std() * torch.rand(real.shape, dtype=DT, generator=g)
    alpha = torch.rand((12, 1), dtype=DT, generator=g)
    x_hat = alpha * real + (1 - alpha) * perturbed
    assert_close(got, (x_hat.norm(dim=1) - 1.0).pow(2).mean())


def test_clip_weights_clamps_module_and_iterable():
    """Every parameter ends in [-c, c]; values already inside are unchanged; modules and iterables both work."""
    net = nn.Linear(3, 4)
    with torch.no_grad():
        net.weight.copy_(torch.linspace(-5, 5, 12).view(4, 3))
        net.bias.copy_(torch.tensor([0.005, -0.003, 0.5, -0.5]))
    inside = net.weight.detach().abs() <= 0.01
    before = net.weight.detach().clone()
    clip_weights_(net, 0.01)
    assert net.weight.abs().max().item() == pytest.approx(0.01)
    assert torch.equal(net.weight[inside], before[inside])
    assert_close(net.bias.detach(), torch.tensor([0.005, -0.003, 0.01, -0.01]))

    p = nn.Parameter(torch.tensor([-2.0, 0.0, 2.0]))
    clip_weights_([p], 1.0)
    assert_close(p.detach(), torch.tensor([-1.0, 0.0, 1.0]))
    assert p.requires_grad  # clamped in place, still a trainable parameter


@pytest.mark.parametrize("bad", [0.0, -0.01])
def test_clip_weights_rejects_non_positive_clip(bad):
    """A non-positive clip value is a configuration error."""
    with pytest.raises(ValueError, match="clip_value must be positive"):
        clip_weights_(nn.Linear(2, 2), bad)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("gradient_penalty", gradient_penalty),
        ("gp", gradient_penalty),
        ("wgan-gp", gradient_penalty),
        ("GP", gradient_penalty),
        ("dragan", dragan_penalty),
        ("dragan_penalty", dragan_penalty),
        ("r1", r1_penalty),
        ("R1-penalty", r1_penalty),
    ],
)
def test_get_regularizer_names_and_aliases(name, fn):
    """Names are case- and dash-insensitive and aliases resolve to the function."""
    assert get_regularizer(name) is fn


def test_get_regularizer_unknown_name_lists_known_ones():
    """An unknown name raises ValueError naming every known regularizer."""
    with pytest.raises(ValueError, match="Unknown regularizer 'spectral'") as info:
        get_regularizer("spectral")
    for name in REGULARIZERS:
        assert name in str(info.value)


# -- orthogonal regularization (BigGAN, Brock et al. 2019, eq. 3) ----------------------------------------------------
def _off_diagonal_gram(w: Tensor) -> Tensor:
    """The definition, written out: sum of squared off-diagonal entries of W W^T, W reshaped to (shape[0], -1)."""
    m = w.flatten(1)
    gram = m @ m.T
    return (gram * (1 - torch.eye(m.shape[0], dtype=m.dtype))).pow(2).sum()


def test_orthogonal_regularization_hand_computation():
    from lightning_gen.losses import orthogonal_regularization

    wide = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]], dtype=DT)  # W W^T = [[5, 2], [2, 2]]: 2 * 2^2 = 8
    tall = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=DT)  # row products 1, 0, 2: 2 * (1 + 0 + 4) = 10
    assert float(orthogonal_regularization([wide])) == 8.0
    assert float(orthogonal_regularization([tall])) == 10.0
    assert float(orthogonal_regularization([wide.view(2, 1, 1, 3)])) == 8.0  # a conv weight: rows are out-channels
    assert float(orthogonal_regularization([wide, tall])) == 18.0  # summed over the matrices
    g = torch.Generator().manual_seed(0)
    for shape in [(6, 40), (40, 6), (8, 3, 3, 3), (16, 4, 4, 4)]:
        w = torch.randn(shape, dtype=DT, generator=g)
        assert_close(orthogonal_regularization([w]), _off_diagonal_gram(w), rtol=1e-10, atol=0)


def test_orthogonal_regularization_is_zero_only_for_orthogonal_rows():
    from lightning_gen.losses import orthogonal_regularization

    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=DT, generator=g))
    scales = torch.tensor([0.1, 1, 2, 3, 4, 5, 6, 7], dtype=DT)[:, None]  # any row norms: only the angles count
    assert abs(float(orthogonal_regularization([q]))) < 1e-12
    assert abs(float(orthogonal_regularization([scales * q]))) < 1e-10
    assert abs(float(orthogonal_regularization([q[:5]]))) < 1e-12  # 5 orthonormal rows of length 8
    bent = q.clone()
    bent[0] += 0.01 * bent[1]
    # rows 0 and 1 now have inner product 0.01, counted twice: 2 * 0.01^2
    assert_close(orthogonal_regularization([bent]), torch.tensor(2e-4, dtype=DT), rtol=1e-8, atol=0)


def test_orthogonal_regularization_gradient_and_the_weights_it_covers():
    from lightning_gen.losses import orthogonal_regularization, orthogonal_weights
    from lightning_gen.nets import ConditionalBatchNorm2d

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 4), nn.Linear(5, 3),
                        nn.Embedding(10, 4), ConditionalBatchNorm2d(4, 10)).double()
    covered = orthogonal_weights(net)
    assert [id(w) for w in covered] == [id(net[0].weight), id(net[2].weight), id(net[3].weight)]
    assert_close(orthogonal_regularization(net), sum(_off_diagonal_gram(w) for w in covered))
    # d/dW ||W W^T * (1 - I)||_F^2 = 4 (W W^T * (1 - I)) W
    w = net[3].weight
    (grad,) = torch.autograd.grad(orthogonal_regularization([w]), w)
    gram = w @ w.T
    assert_close(grad, 4 * (gram * (1 - torch.eye(3, dtype=DT))) @ w)
    assert float(orthogonal_regularization([])) == 0.0
    with pytest.raises(ValueError, match="weight matrices"):
        orthogonal_regularization([torch.ones(3)])


def test_orthogonal_regularization_is_float32_under_autocast():
    from lightning_gen.losses import orthogonal_regularization

    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = orthogonal_regularization([w])
    assert value.dtype == torch.float32
    assert_close(value, _off_diagonal_gram(w.double()).float(), rtol=1e-4, atol=0)
