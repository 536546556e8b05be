"""Tests for lightning_gen/schedulers.py: the linear-decay rule of the CycleGAN/pix2pix code."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.schedulers import LinearDecayLR


def test_constant_then_linear_decay_as_in_the_reference_code():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = LinearDecayLR(opt, constant_steps=3, decay_steps=4)
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # the reference code's rule, with its epochs as our steps: 1 - max(0, n + 1 - 3) / (4 + 1) for step n
    assert lrs == pytest.approx([2e-4 * f for f in (1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0)], rel=1e-12, abs=1e-15)
    state = sched.state_dict()
    again = LinearDecayLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4), 3, 4)
    again.load_state_dict(state)
    assert again.last_epoch == sched.last_epoch and again.factor(again.last_epoch) == sched.factor(sched.last_epoch)


def test_bad_arguments_are_reported():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay_steps >= 1"):
        LinearDecayLR(opt, constant_steps=5, decay_steps=0)
