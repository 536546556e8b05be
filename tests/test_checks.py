"""Tests for lightning_gen/checks.py: one switch for the value checks that wait for the device."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.checks import value_checks, value_checks_enabled
from lightning_gen.diffusion import make_schedule
from lightning_gen.losses.elbo import bernoulli_log_likelihood
from lightning_gen.modules import RealNVP
from lightning_gen.nets import ImageRealNVP
from lightning_gen.nets.layers import check_labels


def test_the_checks_are_on_by_default_and_the_switch_restores_the_setting():
    assert value_checks_enabled()
    with value_checks(False):
        assert not value_checks_enabled()
        with value_checks(True):
            assert value_checks_enabled()
        assert not value_checks_enabled()
    assert value_checks_enabled()
    with pytest.raises(RuntimeError), value_checks(False):
        raise RuntimeError("an error inside the block")
    assert value_checks_enabled()


def test_each_value_check_raises_when_on_and_is_skipped_when_off():
    bad_labels = torch.tensor([0, 10])
    schedule = make_schedule("cosine", 10)
    x = torch.zeros(2, 3)
    flow = RealNVP(ImageRealNVP(1, 4, num_scales=1, hidden_channels=2, num_blocks=1), dequantize=True)
    images = torch.full((1, 1, 4, 4), 3.0)  # outside data_range (-1, 1)
    checks = [
        (lambda: check_labels(bad_labels, 10, 2, "net"), r"labels must lie in \[0, 10\)"),
        (lambda: schedule.q_sample(x, torch.tensor([0, 10])), r"step indices must lie in 0\.\.9"),
        (lambda: bernoulli_log_likelihood(torch.zeros(2, 3), torch.full((2, 3), 2.0)), r"targets in \[0, 1\]"),
        (lambda: flow.preprocess(images), r"expects data in data_range"),
    ]
    for call, message in checks:
        with pytest.raises(ValueError, match=message):
            call()
    with value_checks(False):
        assert check_labels(bad_labels, 10, 2, "net").tolist() == [0, 10]
        bernoulli_log_likelihood(torch.zeros(2, 3), torch.full((2, 3), 2.0))
        flow.preprocess(images)
        with pytest.raises(IndexError):  # unchecked, the out-of-range index fails in the gather itself
            schedule.q_sample(x, torch.tensor([0, 10]))
