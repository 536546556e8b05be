"""What a spline coupling step costs against an affine one: training steps and sampling, side by side.

    python benchmarks/coupling_cost.py [--threads 1] [--repeats 5]

For each pair it times, interleaved (affine, spline, affine, spline, ...) so that a busy machine slows both alike,
a training step (``RealNVP.training_loss``, backward, Adam) and a ``sample()`` call, and prints the median times
and the spline/affine ratio. Pairs:

- the toy flows with the same shape (8 couplings, MLP 2x128, batch 512): the cost of the coupling alone;
- the two toy recipes as shipped (configs/realnvp/toy_grid.yaml: 16 affine couplings, batch 256;
  configs/realnvp/toy_grid_spline.yaml: 8 spline couplings, 16 bins, batch 512), per step and per recipe;
- the MNIST flow of configs/realnvp/mnist.yaml (Glow layout, 2 x 8 couplings, 48 channels), batch 64, affine
  against 8-bin splines.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from lightning_gen import RealNVP
from lightning_gen.data.toy import make_mixture
from lightning_gen.nets import ImageRealNVP, VectorRealNVP


def _toy(couplings: int, coupling: str) -> RealNVP:
    return RealNVP(VectorRealNVP(2, couplings, (128, 128), activation="silu", coupling=coupling, num_bins=16))


def _mnist(coupling: str) -> RealNVP:
    flow = ImageRealNVP(1, 28, num_scales=2, layout="glow", steps_per_scale=8, actnorm=True, permutation="conv1x1",
                        hidden_channels=48, num_blocks=1, coupling=coupling, num_bins=8)
    return RealNVP(flow, dequantize=True)


def _timers(model: RealNVP, batch: torch.Tensor, num_samples: int) -> tuple[Callable[[], None], Callable[[], None]]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        loss, _ = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sample() -> None:
        model.sample(num_samples, generator=torch.Generator().manual_seed(0))

    train_step()  # warm-up (ActNorm's data-dependent init, allocator)
    return train_step, sample


def _seconds_per_call(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def compare(name: str, affine: tuple[RealNVP, torch.Tensor], spline: tuple[RealNVP, torch.Tensor], calls: int,
            repeats: int, num_samples: int) -> None:
    """Time both models' training step and sampling, interleaved, and print medians and ratios."""
    fns = [_timers(model, batch, num_samples) for model, batch in (affine, spline)]
    times: dict[tuple[int, int], list[float]] = {(i, j): [] for i in range(2) for j in range(2)}
    for _ in range(repeats):
        for i in range(2):
            for j in range(2):
                times[(i, j)].append(_seconds_per_call(fns[i][j], calls if j == 0 else 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{name}\n  train step: affine {1e3 * med[(0, 0)]:8.2f} ms, spline {1e3 * med[(1, 0)]:8.2f} ms, "
          f"ratio {med[(1, 0)] / med[(0, 0)]:.2f}\n  sample({num_samples}): affine {1e3 * med[(0, 1)]:8.1f} ms, "
          f"spline {1e3 * med[(1, 1)]:8.1f} ms, ratio {med[(1, 1)] / med[(0, 1)]:.2f}", flush=True)


def main() -> None:
    """Parse arguments and print every comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are printed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    grid = make_mixture("grid")
    points = {n: grid.sample(n, generator=torch.Generator().manual_seed(1))[0].float() for n in (256, 512)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    compare("toy, same shape (8 couplings, MLP 2x128, batch 512)", (_toy(8, "affine"), points[512]),
            (_toy(8, "spline"), points[512]), calls=20, repeats=args.repeats, num_samples=2500)
    compare("toy recipes as shipped (16 affine couplings at batch 256 / 8 spline couplings at batch 512)",
            (_toy(16, "affine"), points[256]), (_toy(8, "spline"), points[512]), calls=20, repeats=args.repeats,
            num_samples=2500)
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    compare("MNIST flow of configs/realnvp/mnist.yaml (Glow layout, 16 couplings, 48 channels), batch 64",
            (_mnist("affine"), images), (_mnist("spline"), images), calls=2, repeats=args.repeats, num_samples=64)


if __name__ == "__main__":
    main()
