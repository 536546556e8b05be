"""Tests for lightning_gen/losses/domain.py: StarGAN's domain-classification loss against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.losses import domain_classification_loss


def test_single_label_is_the_softmax_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    domains = torch.tensor([0, 2])
    # -log(e^2 / (e^2 + 2)) and -log(1/3), averaged
    hand = 0.5 * (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3))
    assert float(domain_classification_loss(logits, domains)) == pytest.approx(hand, rel=1e-6)


def test_multi_label_sums_the_sigmoid_cross_entropy_over_attributes():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    attributes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    hand = (bce(0, 1) + bce(2, 0) + bce(-1, 0) + bce(1, 1)) / 2  # summed over attributes, averaged over images
    assert float(domain_classification_loss(logits, attributes)) == pytest.approx(hand, rel=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        domain_classification_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="one domain index per image"):
        domain_classification_loss(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="attributes shaped like the logits"):
        domain_classification_loss(torch.zeros(3, 2), torch.zeros(3, 3))
