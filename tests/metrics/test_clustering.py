"""Tests for lightning_gen/metrics/clustering.py: hand-made count matrices, SciPy vs the exact fallback, the
Metric classes against their functional twins."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch

from lightning_gen.metrics import clustering
from lightning_gen.metrics.clustering import (
    BestPermutationAccuracy,
    CodePurity,
    best_assignment,
    best_permutation_accuracy,
    code_label_counts,
    code_purity,
)


def test_a_relabelled_perfect_code_scores_one():
    labels = torch.arange(40) % 4
    codes = (labels + 1) % 4  # a permutation of the labels
    assert float(best_permutation_accuracy(codes, labels)) == 1.0
    assert float(code_purity(codes, labels)) == 1.0


def test_accuracy_and_purity_by_hand():
    # code 0: labels 0,0,0,1 ; code 1: labels 1,1,0 ; code 2: labels 1,1,2
    codes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1, 1, 2])
    counts = code_label_counts(codes, labels, 3, 3)
    assert counts.tolist() == [[3, 1, 0], [1, 2, 0], [0, 2, 1]]
    # best one-to-one map: 0->0 (3), 1->1 (2), 2->2 (1) = 6 of 10 (every other permutation gives at most 5)
    assert float(best_permutation_accuracy(codes, labels)) == pytest.approx(0.6)
    # purity: majority labels 3 + 2 + 2 = 7 of 10 (codes 1 and 2 may both take label 1)
    assert float(code_purity(codes, labels)) == pytest.approx(0.7)
    # two codes merged into one label: purity 1, accuracy counts only one of them
    merged = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 0])
    assert float(code_purity(*merged)) == 1.0 and float(best_permutation_accuracy(*merged, 2, 1)) == 0.5


def _brute_force(matrix: torch.Tensor) -> float:
    rows, cols = matrix.shape
    best = 0.0
    if rows <= cols:
        for perm in itertools.permutations(range(cols), rows):
            best = max(best, sum(float(matrix[r, c]) for r, c in enumerate(perm)))
    else:
        for perm in itertools.permutations(range(rows), cols):
            best = max(best, sum(float(matrix[r, c]) for c, r in enumerate(perm)))
    return best


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6, 4), (7, 7)])
def test_scipy_and_the_exact_fallback_find_the_optimum(shape, monkeypatch):
    g = torch.Generator().manual_seed(sum(shape))
    for _ in range(5):
        counts = torch.randint(0, 50, shape, generator=g)
        optimum = _brute_force(counts)
        with_scipy = best_assignment(counts)
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "scipy.optimize", None)  # the import fails: the fallback runs
            fallback = best_assignment(counts)
        for pairs in (with_scipy, fallback):
            assert len(pairs) == min(shape)
            assert len({r for r, _ in pairs}) == len(pairs) == len({c for _, c in pairs})  # one-to-one
            assert sum(float(counts[r, c]) for r, c in pairs) == optimum


def test_fallback_refuses_large_problems_without_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(ImportError, match="needs SciPy"):
        best_assignment(torch.ones(clustering._MAX_EXACT + 1, clustering._MAX_EXACT + 1))


def test_metric_classes_equal_their_functional_twins_over_batches():
    g = torch.Generator().manual_seed(0)
    codes, labels = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 4, (300,), generator=g)
    accuracy, purity = BestPermutationAccuracy(5, 4), CodePurity(5, 4)
    for c, y in zip(codes.split(64), labels.split(64)):
        accuracy.update(c, y)
        purity.update(c, y)
    assert float(accuracy.compute()) == pytest.approx(float(best_permutation_accuracy(codes, labels, 5, 4)), abs=1e-7)
    assert float(purity.compute()) == pytest.approx(float(code_purity(codes, labels, 5, 4)), abs=1e-7)


def test_out_of_range_values_are_rejected():
    with pytest.raises(ValueError, match="labels must lie in"):
        code_label_counts(torch.tensor([0, 1]), torch.tensor([0, 3]), 2, 3)
