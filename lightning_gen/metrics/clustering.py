"""How well a learned discrete code matches labels: best-permutation accuracy (unsupervised clustering accuracy) and
purity, from one code-by-label count matrix. For InfoGAN's categorical code against digits or toy modes."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "BestPermutationAccuracy",
    "CodePurity",
    "best_assignment",
    "best_permutation_accuracy",
    "code_label_counts",
    "code_purity",
]

_MAX_EXACT = 12  # the exact fallback's cost grows as 2^min(rows, columns)


def code_label_counts(codes: Tensor, labels: Tensor, num_codes: int, num_labels: int) -> Tensor:
    """``(num_codes, num_labels)`` int64 matrix counting each (code, label) pair."""
    codes, labels = codes.reshape(-1).long(), labels.reshape(-1).long()
    if codes.shape != labels.shape:
        raise ValueError(f"codes and labels must have the same length, got {codes.numel()} and {labels.numel()}")
    for name, values, size in (("codes", codes, num_codes), ("labels", labels, num_labels)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= size):
            raise ValueError(f"{name} must lie in [0, {size}), got {int(values.min())}..{int(values.max())}")
    flat = codes * num_labels + labels
    return torch.bincount(flat, minlength=num_codes * num_labels).reshape(num_codes, num_labels)


def _exact_assignment(weights: list[list[float]]) -> list[tuple[int, int]]:
    """Maximum-weight matching by dynamic programming over subsets of the columns (rows <= columns)."""
    rows, cols = len(weights), len(weights[0])
    best: dict[int, tuple[float, list[tuple[int, int]]]] = {0: (0.0, [])}
    for r in range(rows):
        nxt: dict[int, tuple[float, list[tuple[int, int]]]] = {}
        for mask, (value, pairs) in best.items():
            for c in range(cols):
                if mask >> c & 1:
                    continue
                key, candidate = mask | 1 << c, value + weights[r][c]
                if key not in nxt or candidate > nxt[key][0]:
                    nxt[key] = (candidate, pairs + [(r, c)])
        best = nxt
    return max(best.values(), key=lambda item: item[0])[1]


def best_assignment(counts: Tensor) -> list[tuple[int, int]]:
    """The one-to-one (code, label) pairs maximizing the matched counts (Hungarian method).

    Uses ``scipy.optimize.linear_sum_assignment`` when SciPy is installed, else an exact dynamic program over subsets
    for up to 12 codes or labels (whichever is fewer).
    """
    if counts.dim() != 2 or 0 in counts.shape:
        raise ValueError(f"counts must be a non-empty (codes, labels) matrix, got shape {tuple(counts.shape)}")
    matrix = counts.detach().double().cpu()
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        transposed = matrix.shape[0] > matrix.shape[1]
        m = matrix.T if transposed else matrix
        if m.shape[0] > _MAX_EXACT:
            raise ImportError(
                f"best_assignment of more than {_MAX_EXACT} codes and labels needs SciPy: pip install scipy") from None
        pairs = _exact_assignment(m.tolist())
        return sorted((c, r) if transposed else (r, c) for r, c in pairs)
    rows, cols = linear_sum_assignment(matrix.numpy(), maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def _accuracy_from_counts(counts: Tensor) -> Tensor:
    total = counts.sum()
    if total == 0:
        return torch.tensor(float("nan"))
    matched = sum(float(counts[r, c]) for r, c in best_assignment(counts))
    return torch.tensor(matched / float(total))


def _purity_from_counts(counts: Tensor) -> Tensor:
    total = counts.sum()
    if total == 0:
        return torch.tensor(float("nan"))
    return counts.max(dim=1).values.sum().double().div(total).float().cpu()


def best_permutation_accuracy(codes: Tensor, labels: Tensor, num_codes: Optional[int] = None,
                              num_labels: Optional[int] = None) -> Tensor:
    """Accuracy of ``codes`` as predictions of ``labels`` under the best one-to-one code -> label map, in [0, 1]
    (codes and labels beyond the matched ones count as errors)."""
    num_codes = int(codes.max()) + 1 if num_codes is None else num_codes
    num_labels = int(labels.max()) + 1 if num_labels is None else num_labels
    return _accuracy_from_counts(code_label_counts(codes, labels, num_codes, num_labels))


def code_purity(codes: Tensor, labels: Tensor, num_codes: Optional[int] = None, num_labels: Optional[int] = None) -> Tensor:
    """Purity: the share of samples whose label is the most frequent label of their code, in [0, 1] (several codes
    may share a label, so it is at least the best-permutation accuracy)."""
    num_codes = int(codes.max()) + 1 if num_codes is None else num_codes
    num_labels = int(labels.max()) + 1 if num_labels is None else num_labels
    return _purity_from_counts(code_label_counts(codes, labels, num_codes, num_labels))


class _CodeLabelMetric(Metric):
    """Accumulates the (code, label) count matrix, summed across ranks."""

    full_state_update = False
    higher_is_better: Optional[bool] = True

    def __init__(self, num_codes: int, num_labels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_codes < 1 or num_labels < 1:
            raise ValueError(f"num_codes and num_labels must be >= 1, got {num_codes} and {num_labels}")
        self.num_codes, self.num_labels = int(num_codes), int(num_labels)
        self.add_state("counts", default=torch.zeros(num_codes, num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, codes: Tensor, labels: Tensor) -> None:
        """Add a batch of codes and their labels (both ``(N,)`` integers)."""
        self.counts += code_label_counts(codes, labels, self.num_codes, self.num_labels).to(self.counts.device)


class BestPermutationAccuracy(_CodeLabelMetric):
    """:func:`best_permutation_accuracy` over everything seen (the codes' map to labels chosen once, globally)."""

    def compute(self) -> Tensor:
        """The accuracy under the best one-to-one code -> label map."""
        return _accuracy_from_counts(self.counts)


class CodePurity(_CodeLabelMetric):
    """:func:`code_purity` over everything seen."""

    def compute(self) -> Tensor:
        """The share of samples carrying their code's majority label."""
        return _purity_from_counts(self.counts)
