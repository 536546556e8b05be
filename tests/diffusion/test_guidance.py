"""Tests of lightning_gen/diffusion/guidance.py: the guided noise prediction, the guided denoiser wrapper and label
dropout (Ho & Salimans 2022)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from lightning_gen.diffusion import ClassifierFreeGuidance, drop_labels, guided_epsilon
from lightning_gen.diffusion.guidance import check_guidance_scale
from lightning_gen.nets import UNet


class AffineNet(nn.Module):
    """A hand-built conditional denoiser eps(x, t, y) = a_y x + b_y + t / 1000 (float64), counting its calls."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.a = torch.arange(1.0, num_classes + 2, dtype=torch.float64)  # the last entry: the null label
        self.b = -torch.arange(num_classes + 1, dtype=torch.float64) / 2
        self.batches: list[int] = []

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        self.batches.append(x.shape[0])
        shape = (-1, *([1] * (x.dim() - 1)))
        return self.a[labels].reshape(shape) * x + self.b[labels].reshape(shape) + t.reshape(shape) / 1000


@pytest.mark.parametrize("w", [0.5, 1.0, 3.0, -0.5, 7.5])
def test_guided_denoiser_is_the_formula_in_one_batched_call(w):
    net = AffineNet(3)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, y = torch.tensor([0, 3, 10, 999, 500]), torch.tensor([0, 1, 2, 1, 0])
    out = ClassifierFreeGuidance(net, y, w, null_label=3)(x, t)
    assert net.batches == [10]  # conditional and unconditional predictions in one call on the stacked batch
    a, b, a_null, b_null = net.a[y][:, None], net.b[y][:, None], float(net.a[3]), float(net.b[3])
    expected = (1 + w) * (a * x + b + t[:, None] / 1000) - w * (a_null * x + b_null + t[:, None] / 1000)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(guided_epsilon(torch.ones(2), torch.zeros(2), w), torch.full((2,), 1.0 + w))


def test_w_zero_is_the_conditional_net_and_w_minus_one_the_unconditional_net_exactly():
    torch.manual_seed(0)
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2), num_classes=3)
    for m in net.modules():  # undo the zero init of the output, so predictions differ by label
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.2)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([1, 50, 300, 999]), torch.tensor([0, 1, 2, 0])
    calls: list[Tensor] = []
    net.register_forward_pre_hook(lambda module, args: calls.append(args[2].clone()))
    with torch.no_grad():
        conditional, unconditional = net(x, t, y), net(x, t, torch.full((4,), 3))
        calls.clear()
        assert torch.equal(ClassifierFreeGuidance(net, y, 0.0, 3)(x, t), conditional)
        assert torch.equal(ClassifierFreeGuidance(net, y, -1.0, 3)(x, t), unconditional)
        assert [c.tolist() for c in calls] == [y.tolist(), [3] * 4]  # one call each, of the batch's size
        assert not torch.allclose(conditional, unconditional)
        # one label for every sample
        assert torch.equal(ClassifierFreeGuidance(net, torch.tensor(2), 0.0, 3)(x, t), net(x, t, torch.full((4,), 2)))


def test_guided_epsilon_is_float32_for_half_precision_predictions():
    out = guided_epsilon(torch.ones(3, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.float16), 2.0)
    assert out.dtype == torch.float32 and torch.equal(out, torch.full((3,), 3.0))


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "1"])
def test_guidance_scale_must_be_a_finite_number(bad):
    with pytest.raises(ValueError, match="guidance_scale"):
        check_guidance_scale(bad)
    assert check_guidance_scale(3) == 3.0 and isinstance(check_guidance_scale(3), float)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_labels_replaces_a_binomial_fraction_p_with_the_null_label(p):
    n, null = 50_000, 10
    labels = torch.arange(n) % 10
    state = torch.get_rng_state()
    dropped = drop_labels(labels, p, null, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)  # a given generator leaves the global RNG alone
    is_null = dropped == null
    count, sd = int(is_null.sum()), math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) < 5 * sd, (count, n * p, sd)
    assert torch.equal(dropped[~is_null], labels[~is_null])  # the others are untouched
    # independent of the class: each digit loses about p of its labels
    per_class = torch.stack([is_null[labels == d].float().mean() for d in range(10)])
    assert (per_class - p).abs().max() < 5 * math.sqrt(p * (1 - p) / (n / 10))
    assert torch.equal(drop_labels(labels, p, null, torch.Generator().manual_seed(1)), dropped)  # seeded: reproducible
    torch.manual_seed(3)
    a = drop_labels(labels, p, null)  # without a generator: the global RNG (Lightning's seeding)
    torch.manual_seed(3)
    assert torch.equal(drop_labels(labels, p, null), a) and not torch.equal(a, dropped)


def test_drop_labels_with_zero_probability_draws_nothing_and_rejects_bad_probabilities():
    labels = torch.arange(6)
    state = torch.get_rng_state()
    assert drop_labels(labels, 0.0, 6) is labels
    assert torch.equal(torch.get_rng_state(), state)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            drop_labels(labels, bad, 6)
