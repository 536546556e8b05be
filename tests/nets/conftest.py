"""Shared checks for the image-net tests."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn


def _check_projection_score(d: nn.Module, min_label_effect: float) -> None:
    """A projection discriminator's score is ``linear(phi(x)) + <embed(y), phi(x)>`` (Miyato & Koyama 2018)."""
    x = torch.randn(5, *d.image_shape)
    y1, y2 = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 2, 1, 0, 2])
    with torch.no_grad():
        f = d.features(x)
        torch.testing.assert_close(f, d.features(x, y1))  # projection features do not depend on the label
        emb = d.embed.weight
        diff = d(x, y1) - d(x, y2)
        torch.testing.assert_close(diff, ((emb[y1] - emb[y2]) * f).sum(dim=1))
        assert diff.abs().min() > min_label_effect
        torch.testing.assert_close(d(x, y1), d.linear(f).squeeze(1) + (emb[y1] * f).sum(dim=1))


@pytest.fixture
def check_projection_score() -> Callable[[nn.Module, float], None]:
    """The projection-score check, for any conditional discriminator with ``features``, ``embed`` and ``linear``."""
    return _check_projection_score
