"""Tests for lightning_gen/nets/ema.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lightning_gen.nets.ema import ExponentialMovingAverage


def test_ema_follows_the_recursion_by_hand():
    net = nn.Linear(3, 2)
    ema = ExponentialMovingAverage(net, decay=0.9, warmup=False)
    expected = net.weight.detach().clone()
    for step in range(5):
        with torch.no_grad():
            net.weight.add_(float(step + 1))
        ema.update(net)
        expected = 0.9 * expected + 0.1 * net.weight.detach()
    assert_close(ema.module.weight, expected)
    assert int(ema.num_updates) == 5
    assert not any(p.requires_grad for p in ema.parameters())


def test_warmup_decay_values():
    ema = ExponentialMovingAverage(nn.Linear(1, 1), decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    ema.num_updates.fill_(90)
    assert ema.current_decay() == pytest.approx(91 / 100)
    ema.num_updates.fill_(100_000)
    assert ema.current_decay() == 0.999


def test_buffers_are_copied_and_forward_runs_the_average():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ExponentialMovingAverage(net, decay=0.5, warmup=False)
    net.train()
    net(torch.randn(16, 2) * 3 + 1)  # moves the running stats
    ema.update(net)
    assert_close(ema.module[1].running_mean, net[1].running_mean)
    ema.eval()
    x = torch.randn(4, 2)
    assert_close(ema(x), ema.module(x))


def test_bad_decay_is_named():
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(nn.Linear(1, 1), decay=1.0)


def test_an_update_after_loading_uses_the_loaded_count():
    # the count is mirrored on the host (updates never read the device); loading a state dict re-reads it
    net = nn.Linear(2, 1)
    trained = ExponentialMovingAverage(net, decay=0.999)
    for _ in range(90):
        trained.update(net)
    fresh = ExponentialMovingAverage(net, decay=0.999)
    fresh.load_state_dict(trained.state_dict())
    with torch.no_grad():
        net.weight.add_(1.0)
    expected = 91 / 100 * fresh.module.weight.detach() + 9 / 100 * net.weight.detach()
    fresh.update(net)
    assert_close(fresh.module.weight, expected)
    assert int(fresh.num_updates) == 91


def test_recompute_batch_norm_gives_the_average_nets_own_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, momentum=0.3))
    ema = ExponentialMovingAverage(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net[0].weight.add_(2.0)
    net.train()
    net(torch.randn(32, 2) * 5 + 4)  # the live net's statistics: far from the average's
    ema.update(net)
    assert ema.batch_norm_stale
    batches = [torch.randn(16, 2) for _ in range(4)]
    ema.eval()
    ema.recompute_batch_norm((x,) for x in batches)
    pre = [ema.module[0](x) for x in batches]
    bn = ema.module[1]
    # a cumulative average of the batch means and of the unbiased batch variances (equal batch sizes)
    assert_close(bn.running_mean, torch.stack([h.mean(0) for h in pre]).mean(0))
    assert_close(bn.running_var, torch.stack([h.var(0) for h in pre]).mean(0))
    assert bn.momentum == 0.3 and not ema.module.training and not ema.batch_norm_stale
    fresh = ExponentialMovingAverage(net, decay=0.5)
    fresh.load_state_dict(ema.state_dict())
    assert fresh.batch_norm_stale  # loaded statistics may be copies: re-estimate before use


def test_nets_without_batch_norm_are_never_stale():
    net = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))
    ema = ExponentialMovingAverage(net, decay=0.5)
    ema.update(net)
    assert not ema.batch_norm_stale
