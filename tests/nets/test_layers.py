"""Tests for lightning_gen/nets/layers.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lightning_gen.nets import (
    ConditionalBatchNorm2d,
    MinibatchStdDev,
    init_dcgan_weights_,
    maybe_spectral_norm,
    one_hot,
)
from lightning_gen.nets.layers import check_images, check_labels, minibatch_group_size


def test_minibatch_std_matches_a_hand_computation():
    # B=4, group_size=2: groups are samples {0, 2} and {1, 3} (sample i in group i % (B // G), as in ProGAN).
    x = torch.zeros(4, 2, 1, 2)
    x[0] = torch.tensor([[[0.0, 2.0]], [[4.0, 6.0]]])
    x[2] = torch.tensor([[[2.0, 2.0]], [[0.0, 6.0]]])  # |diffs| 2, 0, 4, 0 -> biased stds 1, 0, 2, 0 -> mean 0.75
    x[1] = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]])
    x[3] = torch.tensor([[[-1.0, 1.0]], [[1.0, 1.0]]])  # stds 1, 0, 0, 0 -> mean 0.25
    out = MinibatchStdDev(group_size=2, eps=0.0)(x)
    assert out.shape == (4, 3, 1, 2)
    torch.testing.assert_close(out[:, :2], x)  # input passed through unchanged
    expected = torch.tensor([0.75, 0.25, 0.75, 0.25]).view(4, 1, 1, 1).expand(4, 1, 1, 2)
    torch.testing.assert_close(out[:, 2:], expected)


def _reference_minibatch_std(x: torch.Tensor, g: int, eps: float) -> torch.Tensor:
    n = x.shape[0]
    m = n // g
    values = torch.empty(n)
    for group in range(m):
        idx = list(range(group, n, m))
        stds = (x[idx].var(dim=0, unbiased=False) + eps).sqrt()
        values[idx] = stds.mean()
    return values


@pytest.mark.parametrize(
    "batch, group, expected", [(8, 4, 4), (6, 4, 3), (10, 4, 2), (3, 4, 3), (7, 4, 7), (1, 4, 1), (12, 5, 4)]
)
def test_group_size_is_the_largest_divisor_or_the_whole_batch(batch, group, expected):
    assert minibatch_group_size(batch, group) == expected


@pytest.mark.parametrize("batch", [6, 7, 8])
def test_minibatch_std_with_batches_not_divisible_by_the_group_size(batch):
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 4, 4)
    out = MinibatchStdDev(group_size=4)(x)
    assert out.shape == (batch, 4, 4, 4)
    g = minibatch_group_size(batch, 4)
    ref = _reference_minibatch_std(x, g, 1e-8)
    torch.testing.assert_close(out[:, 3], ref.view(batch, 1, 1).expand(batch, 4, 4))


def test_minibatch_std_of_identical_samples_is_zero():
    x = torch.randn(1, 5, 3, 3).repeat(8, 1, 1, 1)
    extra = MinibatchStdDev()(x)[:, 5]
    # sqrt(0 + eps) with eps = 1e-8 is 1e-4; the group std itself is exactly 0.
    torch.testing.assert_close(extra, torch.full_like(extra, 1e-4), atol=1e-6, rtol=0)


def test_minibatch_std_rejects_groups_of_one():
    with pytest.raises(ValueError, match="group_size"):
        MinibatchStdDev(group_size=1)


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 128, 4), nn.BatchNorm2d(2048), nn.ConvTranspose2d(64, 32, 4), nn.Linear(300, 200))
    init_dcgan_weights_(net)
    for layer in (net[0], net[2], net[3]):
        w = layer.weight
        assert w.numel() >= 32768
        assert 0.019 < w.std().item() < 0.021  # sample std of >= 32k normals: relative error ~0.4%
        assert abs(w.mean().item()) < 0.001
        assert torch.count_nonzero(layer.bias) == 0
    bn = net[1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.002  # std of the mean: 0.02 / sqrt(2048) = 0.00044
    assert 0.018 < bn.weight.std().item() < 0.022
    assert torch.count_nonzero(bn.bias) == 0


def test_dcgan_init_reaches_the_raw_weight_of_spectrally_normalized_layers():
    torch.manual_seed(0)
    layer = maybe_spectral_norm(nn.Linear(400, 300), True)
    init_dcgan_weights_(layer)
    raw = layer.parametrizations.weight.original
    assert 0.019 < raw.std().item() < 0.021
    assert torch.count_nonzero(layer.bias) == 0


def test_maybe_spectral_norm_toggles_the_parametrization():
    conv = nn.Conv2d(3, 8, 3)
    assert maybe_spectral_norm(conv, False) is conv and not parametrize.is_parametrized(conv)
    wrapped = maybe_spectral_norm(nn.Conv2d(3, 8, 3), True)
    assert parametrize.is_parametrized(wrapped, "weight")


def test_maybe_spectral_norm_normalizes_the_largest_singular_value():
    torch.manual_seed(0)
    layer = maybe_spectral_norm(init_dcgan_weights_(nn.Linear(50, 40)), True)
    x = torch.randn(4, 50)
    for _ in range(10):  # each forward in train mode runs one power iteration
        layer(x)
    layer.eval()
    sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
    assert 0.99 < sigma < 1.01
    raw = torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach(), ord=2).item()
    assert 0.2 < raw < 0.35  # N(0, 0.02) 40x50 matrix: about 0.02 * (sqrt(40) + sqrt(50)) = 0.27


def test_one_hot():
    out = one_hot(torch.tensor([2, 0]), 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


def test_check_labels_errors_say_what_to_do():
    assert check_labels(None, 0, 4, "Net") is None
    with pytest.raises(ValueError, match="unconditional.*num_classes"):
        check_labels(torch.zeros(4, dtype=torch.long), 0, 4, "Net")
    with pytest.raises(ValueError, match="conditional.*needs labels"):
        check_labels(None, 3, 4, "Net")
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        check_labels(torch.tensor([0, 1, 2, 3]), 3, 4, "Net")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_labels(torch.tensor([0, 1, -1, 1]), 3, 4, "Net")
    with pytest.raises(ValueError, match="integer"):
        check_labels(torch.zeros(4), 3, 4, "Net")
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        check_labels(torch.zeros(4, 1, dtype=torch.long), 3, 4, "Net")
    out = check_labels(torch.tensor([0, 2, 1, 1], dtype=torch.int32), 3, 4, "Net")
    assert out.dtype == torch.int64


def test_check_images_names_the_arguments():
    check_images(torch.zeros(2, 3, 8, 8), (3, 8, 8), "Net")
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\).*\(2, 1, 8, 8\).*channels and image_size"):
        check_images(torch.zeros(2, 1, 8, 8), (3, 8, 8), "Net")


def test_conditional_batch_norm_applies_the_scale_and_shift_of_each_class():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(4, num_classes=3)
    assert 0.9 < cbn.gamma.weight.mean().item() < 1.1 and torch.count_nonzero(cbn.beta.weight) == 0
    with torch.no_grad():
        cbn.gamma.weight.copy_(torch.arange(12.0).view(3, 4))
        cbn.beta.weight.copy_(-torch.arange(12.0).view(3, 4))
    x = torch.randn(6, 4, 5, 5)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    normalized = nn.BatchNorm2d(4, affine=False)(x)
    expected = cbn.gamma.weight[labels][:, :, None, None] * normalized + cbn.beta.weight[labels][:, :, None, None]
    torch.testing.assert_close(cbn(x, labels), expected)
