"""Tests for lightning_gen/losses/infogan.py against hand computations and the theory's bounds."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.losses.infogan import (
    categorical_code_loss,
    continuous_code_loss,
    infogan_information_loss,
    information_lower_bound,
)

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
CODES = torch.tensor([0, 2])
MEANS = torch.tensor([[0.1, -0.3], [0.0, 0.4]], dtype=torch.float64)
CONT = torch.tensor([[0.5, 0.2], [-1.0, 0.4]], dtype=torch.float64)


def _hand_ce() -> float:
    row0 = -2.0 + math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0))
    row1 = -0.0 + math.log(2 * math.exp(0.5) + 1.0)
    return (row0 + row1) / 2


def test_categorical_loss_is_the_cross_entropy_by_hand():
    assert float(categorical_code_loss(LOGITS, CODES)) == pytest.approx(_hand_ce(), rel=1e-12)


def test_continuous_loss_is_the_factored_gaussian_nll_by_hand():
    # std fixed at 1: sum_j (c - mu)^2 / 2 + log(2 pi) / 2 per sample, averaged over the batch
    sq0 = (0.5 - 0.1) ** 2 + (0.2 + 0.3) ** 2
    sq1 = (-1.0 - 0.0) ** 2 + 0.0
    hand = ((sq0 / 2 + math.log(2 * math.pi)) + (sq1 / 2 + math.log(2 * math.pi))) / 2
    assert float(continuous_code_loss(MEANS, CONT)) == pytest.approx(hand, rel=1e-12)
    # learned std: (c - mu)^2 / (2 s^2) + log s + log(2 pi) / 2 per code
    log_std = torch.tensor([[0.2, -0.1], [0.0, 0.3]], dtype=torch.float64)
    hand = 0.0
    for i in range(2):
        for j in range(2):
            s = math.exp(float(log_std[i, j]))
            hand += (float(CONT[i, j]) - float(MEANS[i, j])) ** 2 / (2 * s * s) + math.log(s) + 0.5 * math.log(2 * math.pi)
    assert float(continuous_code_loss(MEANS, CONT, log_std)) == pytest.approx(hand / 2, rel=1e-12)


def test_information_loss_weights_and_parts():
    total, parts = infogan_information_loss(LOGITS, CODES, MEANS, CONT, categorical_weight=1.0, continuous_weight=0.1)
    ce, nll = _hand_ce(), float(continuous_code_loss(MEANS, CONT))
    assert float(total) == pytest.approx(ce + 0.1 * nll, rel=1e-12)
    assert float(parts["categorical"]) == pytest.approx(ce, rel=1e-12)
    assert float(parts["continuous"]) == pytest.approx(nll, rel=1e-12)
    only_cat, parts = infogan_information_loss(LOGITS, CODES, MEANS[:, :0], CONT[:, :0])
    assert set(parts) == {"categorical"} and float(only_cat) == pytest.approx(ce, rel=1e-12)
    with pytest.raises(ValueError, match="at least one latent code"):
        infogan_information_loss(None, None, None, None)
    with pytest.raises(ValueError, match="categorical codes are needed"):
        infogan_information_loss(LOGITS, None, None, None)


def test_uninformative_q_gives_ce_log_k_and_a_zero_bound_and_the_bound_never_exceeds_log_k():
    for k in (2, 8, 10):
        ce = categorical_code_loss(torch.zeros(5, k), torch.arange(5) % k)
        assert float(ce) == pytest.approx(math.log(k), rel=1e-6)
        assert float(information_lower_bound(k, ce)) == pytest.approx(0.0, abs=1e-6)
        # a confident, right Q: CE -> 0 and the bound -> log k from below
        confident = 30.0 * torch.nn.functional.one_hot(torch.arange(5) % k, k).double()
        bound = float(information_lower_bound(k, categorical_code_loss(confident, torch.arange(5) % k)))
        assert math.log(k) - 1e-6 < bound <= math.log(k)


def test_shapes_are_checked_and_low_precision_is_computed_in_float32():
    with pytest.raises(ValueError, match="logits"):
        categorical_code_loss(LOGITS, CODES[:1])
    with pytest.raises(ValueError, match="same shape"):
        continuous_code_loss(MEANS, CONT[:, :1])
    loss = continuous_code_loss(MEANS.bfloat16(), CONT.bfloat16())
    assert loss.dtype == torch.float32
    assert categorical_code_loss(LOGITS.bfloat16(), CODES).dtype == torch.float32
