"""Tests for lightning_gen/metrics/precision_recall.py against hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.metrics.precision_recall import improved_precision_recall, knn_radii


def brute_force_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019 eq. (1)-(2) with plain Python loops over the samples."""
    real_rows, fake_rows = real.double().tolist(), fake.double().tolist()

    def radii(rows: list[list[float]]) -> list[float]:
        out = []
        for i, a in enumerate(rows):
            others = sorted(math.dist(a, b) for j, b in enumerate(rows) if j != i)
            out.append(others[k - 1])
        return out

    def inside(points: list[list[float]], centers: list[list[float]], r: list[float]) -> float:
        hits = sum(any(math.dist(p, c) <= rc for c, rc in zip(centers, r)) for p in points)
        return hits / len(points)

    return inside(fake_rows, real_rows, radii(real_rows)), inside(real_rows, fake_rows, radii(fake_rows))


def pr(real: torch.Tensor, fake: torch.Tensor, **kwargs) -> tuple[float, float]:
    precision, recall = improved_precision_recall(real, fake, **kwargs)
    assert precision.shape == () and recall.shape == ()
    return precision.item(), recall.item()


def two_clusters(n: int, d: int, gap: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit-Gaussian clusters of ``n`` samples each, ``gap`` apart along the first axis."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(d)
    shift[0] = gap
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) + shift


def test_identical_sets_give_full_precision_and_recall():
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert pr(x, x.clone()) == pytest.approx((1.0, 1.0), abs=1e-7)
    # order does not matter
    assert pr(x, x[torch.randperm(300)], chunk_size=64) == pytest.approx((1.0, 1.0), abs=1e-7)


def test_far_apart_sets_give_zero_precision_and_recall():
    a, b = two_clusters(200, 8, gap=100.0, seed=1)
    assert pr(a, b) == pytest.approx((0.0, 0.0), abs=1e-7)


def test_fake_covering_one_of_two_real_clusters():
    a, b = two_clusters(400, 4, gap=50.0, seed=2)
    real = torch.cat([a, b])
    # fake = exactly the first cluster's real samples: every fake is a real point, and exactly half the real set
    # (the first cluster) lies in the fake manifold
    assert pr(real, a.clone()) == pytest.approx((1.0, 0.5), abs=1e-7)
    # fake = fresh samples of the first cluster: precision near 1, recall near (never above) 1/2
    fresh = torch.randn(400, 4, generator=torch.Generator().manual_seed(3))
    precision, recall = pr(real, fresh)
    assert 0.9 <= precision <= 1.0
    assert 0.4 <= recall <= 0.5  # the far cluster contributes nothing


def test_chunked_function_matches_brute_force_reference():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(70, 5, generator=g)
    fake = torch.randn(55, 5, generator=g) + 0.8
    for k in (1, 3, 5):
        expected = brute_force_precision_recall(real, fake, k)
        assert 0.05 < expected[0] < 0.95 and 0.05 < expected[1] < 0.95  # a case where being wrong shows
        for chunk_size in (7, 16, 1024):  # chunks smaller than n, not dividing n, and one chunk
            assert pr(real, fake, k=k, chunk_size=chunk_size) == pytest.approx(expected, abs=1e-7)


def test_neighbourhood_size_k_changes_the_answer_as_computed_by_hand():
    # Real: 0, 1, ..., 9 on a line. With k=1 every real radius is 1; with k=5 the radius of 9 is 5 (reaches 14)
    # and of 8 is 4 (reaches 12). Fake: 11, 12, 13, 14, 20, 30 (14 sits exactly on 9's k=5 boundary: inside).
    real = torch.arange(10, dtype=torch.float32)[:, None]
    fake = torch.tensor([11.0, 12.0, 13.0, 14.0, 20.0, 30.0])[:, None]
    # k=1: fake radii 1, 1, 1, 1, 6, 10 reach no real point; no fake is within 1 of 9
    assert pr(real, fake, k=1) == pytest.approx((0.0, 0.0), abs=1e-7)
    # k=5: 11..14 are inside the real manifold (4 of 6); the fake radius of 11 is 19 (to 30), covering 0..9
    assert pr(real, fake, k=5) == pytest.approx((4 / 6, 1.0), abs=1e-7)
    assert brute_force_precision_recall(real, fake, 5) == pytest.approx((4 / 6, 1.0), abs=1e-12)


def test_duplicates_and_large_offsets():
    # a duplicated real sample is its own nearest neighbour at distance 0 (only the sample itself is excluded)
    real = torch.tensor([[0.0], [0.0], [10.0], [20.0]])
    fake = torch.tensor([[0.0], [5.0], [30.0], [40.0]])
    assert pr(real, fake, k=1) == pytest.approx(brute_force_precision_recall(real, fake, 1), abs=1e-7)
    # a common offset of 1e4 changes no distance; centring + float64 keep the answer exact
    g = torch.Generator().manual_seed(5)
    r, f = torch.randn(80, 6, generator=g), torch.randn(60, 6, generator=g) + 0.5
    assert pr(r + 1e4, f + 1e4, chunk_size=32) == pytest.approx(pr(r, f), abs=1e-7)


def test_inputs_are_validated_with_clear_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="2-D"):
        improved_precision_recall(torch.randn(10), x)
    with pytest.raises(ValueError, match="2-D"):
        improved_precision_recall(x, torch.randn(10, 3, 1))
    with pytest.raises(ValueError, match="different feature sizes"):
        improved_precision_recall(x, torch.randn(10, 4))
    with pytest.raises(ValueError, match="more than k"):
        improved_precision_recall(x, torch.randn(3, 3), k=3)
    with pytest.raises(ValueError, match="k .* >= 1"):
        improved_precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="chunk_size"):
        improved_precision_recall(x, x, chunk_size=0)
    with pytest.raises(ValueError, match="NaN"):
        improved_precision_recall(x, torch.full((10, 3), float("nan")))
    with pytest.raises(ValueError, match="floating point"):
        improved_precision_recall(x, torch.ones(10, 3, dtype=torch.long))


def test_precomputed_real_radii_give_the_same_answer():
    g = torch.Generator().manual_seed(6)
    real, fake = torch.randn(90, 4, generator=g), torch.randn(70, 4, generator=g) + 0.6
    for k in (1, 3):
        radii = knn_radii(real + 5.0, k=k, chunk_size=16)  # radii do not depend on where the set sits
        assert radii.dtype == torch.float64 and radii.shape == (90,)
        assert pr(real, fake, k=k, real_radii=radii) == pytest.approx(brute_force_precision_recall(real, fake, k),
                                                                      abs=1e-7)
    # the k-th neighbour of 0 on the line 0, 1, 3, 7 is at distance 1, 3, 7 for k = 1, 2, 3 (squared radii)
    line = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(line, k=1)[0].item() == 1.0 and knn_radii(line, k=3)[0].item() == 49.0
    with pytest.raises(ValueError, match="one radius per real sample"):
        improved_precision_recall(real, fake, real_radii=radii[:10])


def _all_float64(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """The fake-real pass as it was before the float32 screening: every distance in float64."""
    real64, fake64 = real.double(), fake.double()
    center = real64.mean(0, keepdim=True)
    real64, fake64 = real64 - center, fake64 - center
    from lightning_gen.metrics.precision_recall import _kth_nn_sq_radii, _sq_distances

    real_sq, fake_sq = real64.pow(2).sum(1), fake64.pow(2).sum(1)
    real_r, fake_r = _kth_nn_sq_radii(real64, real_sq, k, 1024), _kth_nn_sq_radii(fake64, fake_sq, k, 1024)
    d = _sq_distances(fake64, real64, fake_sq, real_sq)
    precision, recall = (d <= real_r[None, :]).any(1).double().mean(), (d <= fake_r[:, None]).any(0).double().mean()
    return float(precision.float()), float(recall.float())  # float32 results, as the function's


@pytest.mark.parametrize("case", ["gaussian-64d", "lattice-ties", "duplicates", "clusters-256d"])
def test_the_float32_screen_gives_exactly_the_all_float64_answer(case):
    g = torch.Generator().manual_seed(3)
    if case == "gaussian-64d":
        real, fake = torch.randn(1500, 64, generator=g), torch.randn(1200, 64, generator=g) * 1.2 + 0.1
    elif case == "lattice-ties":  # integer points: many distances equal a radius exactly
        real = torch.randint(0, 6, (800, 3), generator=g).float()
        fake = torch.randint(0, 7, (700, 3), generator=g).float()
    elif case == "duplicates":
        base = torch.randn(300, 16, generator=g)
        real, fake = base.repeat(3, 1), torch.cat([base[:200], torch.randn(400, 16, generator=g)])
    else:
        centers = torch.randn(10, 256, generator=g) * 5
        real = centers[torch.arange(1000) % 10] + torch.randn(1000, 256, generator=g)
        fake = centers[torch.arange(900) % 7] + torch.randn(900, 256, generator=g) * 1.1
    precision, recall = improved_precision_recall(real, fake, k=3, chunk_size=256)
    expected = _all_float64(real, fake, 3)
    assert (float(precision), float(recall)) == pytest.approx(expected, abs=0)
    assert 0 < expected[0] < 1 or 0 < expected[1] < 1  # a case with samples on both sides of the boundaries
