"""Cost of KID and precision/recall per evaluation, before and after their savings, measured side by side.

    python benchmarks/metric_kernels.py [--num 5000] [--dims 128 2048] [--repeats 3] [--threads 2]

On random correlated features (``--num`` real and ``--num`` generated, each dimension in ``--dims``):

- KID (100 subsets of 1,000): a later evaluation against the same real set, with the real-real kernel sums kept from
  the first (``real_cache``), against recomputing them;
- improved precision/recall (k = 3, real radii given, as the metrics callback does): the float32 fake-real pass with
  a float64 recheck near the boundaries, against the all-float64 pass it replaced (kept below for the comparison).

Each pair is timed alternately ``--repeats`` times; the script prints the medians and their ratio, and checks that
both ways give the same numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightning_gen.metrics import improved_precision_recall, kernel_inception_distance, knn_radii
from lightning_gen.metrics.precision_recall import _chunks, _kth_nn_sq_radii, _sq_distances


def all_float64_precision_recall(real: torch.Tensor, fake: torch.Tensor, real_radii: torch.Tensor,
                                 k: int = 3, chunk_size: int = 1024) -> tuple[float, float]:
    """The fake-real pass before the float32 screen: every distance in float64."""
    real64, fake64 = real.double(), fake.double()
    center = real64.mean(0, keepdim=True)
    real64, fake64 = real64 - center, fake64 - center
    real_sq, fake_sq = real64.pow(2).sum(1), fake64.pow(2).sum(1)
    fake_radii = _kth_nn_sq_radii(fake64, fake_sq, k, chunk_size)
    fake_in_real = torch.zeros(len(fake64), dtype=torch.bool)
    real_in_fake = torch.zeros(len(real64), dtype=torch.bool)
    for rows in _chunks(len(fake64), chunk_size):
        d = _sq_distances(fake64[rows], real64, fake_sq[rows], real_sq)
        fake_in_real[rows] = (d <= real_radii[None, :]).any(1)
        real_in_fake |= (d <= fake_radii[rows, None]).any(0)
    return float(fake_in_real.double().mean().float()), float(real_in_fake.double().mean().float())


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    """Parse arguments, time both ways of each metric alternately, print medians, ratios and agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=5000)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.num} real and {args.num} generated features, {torch.get_num_threads()} thread(s); medians of "
          f"{args.repeats} alternating runs")
    for dim in args.dims:
        g = torch.Generator().manual_seed(dim)
        mixing = torch.randn(dim, dim, generator=g) / dim**0.5
        real = (torch.randn(args.num, dim, generator=g) @ mixing).relu()
        fake = ((torch.randn(args.num, dim, generator=g) + 0.1) @ mixing).relu()
        cache: dict = {}
        kernel_inception_distance(real, fake, 100, 1000, generator=torch.Generator().manual_seed(0), real_cache=cache)
        radii = knn_radii(real, 3)
        times: dict[str, list[float]] = {"kid": [], "kid cached": [], "pr float64": [], "pr float32+recheck": []}
        for _ in range(args.repeats):
            t, kid_plain = _time(lambda: kernel_inception_distance(real, fake, 100, 1000,
                                                                   generator=torch.Generator().manual_seed(0)))
            times["kid"].append(t)
            t, kid_cached = _time(lambda: kernel_inception_distance(
                real, fake, 100, 1000, generator=torch.Generator().manual_seed(0), real_cache=cache))
            times["kid cached"].append(t)
            t, pr_old = _time(lambda: all_float64_precision_recall(real, fake, radii))
            times["pr float64"].append(t)
            t, pr_new = _time(lambda: improved_precision_recall(real, fake, 3, real_radii=radii))
            times["pr float32+recheck"].append(t)
        med = {key: statistics.median(values) for key, values in times.items()}
        same_kid = torch.equal(kid_plain[0], kid_cached[0])
        same_pr = pr_old == (float(pr_new[0]), float(pr_new[1]))
        print(f"dim {dim}: KID {med['kid']:.2f} s -> {med['kid cached']:.2f} s with the real sums kept "
              f"(x{med['kid'] / med['kid cached']:.2f}; same value: {same_kid}); precision/recall "
              f"{med['pr float64']:.2f} s -> {med['pr float32+recheck']:.2f} s "
              f"(x{med['pr float64'] / med['pr float32+recheck']:.2f}; same values: {same_pr}, {pr_old})")


if __name__ == "__main__":
    main()
