"""Does InfoGAN's categorical code find the toy ring's modes and MNIST's digits? Train a recipe, then measure.

    OMP_NUM_THREADS=1 python benchmarks/infogan.py toy   [--max-steps 5000] [--ckpt last.ckpt] [--out runs/bench_infogan]
    OMP_NUM_THREADS=1 python benchmarks/infogan.py mnist [--max-steps 1500] [--ckpt last.ckpt] [--data ../shared/data]

Trains ``configs/infogan/<toy_ring|mnist>.yaml`` through ``lightning-gen fit`` for ``--max-steps`` generator steps
(CSV logger under ``--out``; or loads ``--ckpt`` and skips training), then reports:

* toy: on 10,000 samples drawn with codes ``i % 8``, the share in their code's majority mode (purity, nearest mode),
  the best-permutation accuracy of the codes against the nearest modes, the share of high-quality samples (within
  3 std of a mode) and the modes covered; and Q's best-permutation accuracy on 10,000 fresh ring points against
  their true modes.
* mnist: Q's best-permutation accuracy and purity of the 10-way code on the held-out digits of the test split (the paper
  reports about 5 % error), the code -> digit map, and the same on samples (their codes against Q's reading).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

import lightning_gen
from lightning_gen.cli import main as cli_main
from lightning_gen.data import MNISTDataModule, make_mixture
from lightning_gen.metrics import (
    best_assignment,
    best_permutation_accuracy,
    code_label_counts,
    code_purity,
)
from lightning_gen.metrics.toy import toy_mode_counts

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"toy": ROOT / "configs" / "infogan" / "toy_ring.yaml", "mnist": ROOT / "configs" / "infogan" / "mnist.yaml"}


def train(which: str, max_steps: int, out: Path) -> Path:
    """Fit the recipe for ``max_steps`` generator steps; returns its ``last.ckpt``."""
    cli_main([
        "fit", f"--config={RECIPES[which]}", f"--trainer.default_root_dir={out}", f"--trainer.max_steps={max_steps}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={out}",
        "--trainer.enable_progress_bar=false",
    ])
    return max(out.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


@torch.no_grad()
def measure_toy(model: lightning_gen.InfoGAN) -> None:
    """Purity of the code over the ring's modes on samples, and Q's accuracy on real points."""
    mixture = make_mixture("ring")
    k, n = model.num_categories, 10_000
    codes = torch.arange(n) % k
    x = model.sample(n, generator=torch.Generator().manual_seed(0), codes={"categorical": codes})
    nearest = torch.cdist(x.float(), mixture.modes).argmin(dim=1)
    hq = toy_mode_counts(x, mixture.modes, mixture.std)
    print(f"samples: purity {100 * float(code_purity(codes, nearest, k, 8)):.2f} %, best-permutation accuracy "
          f"{100 * float(best_permutation_accuracy(codes, nearest, k, 8)):.2f} % (codes vs nearest mode); "
          f"high-quality {100 * int(hq.sum()) / n:.1f} %, modes covered {int((hq >= 20).sum())}/8")
    real, modes = mixture.sample(n, generator=torch.Generator().manual_seed(1))
    inferred = model.infer_codes(real)["categorical"]
    print(f"Q on real ring points: best-permutation accuracy {100 * float(best_permutation_accuracy(inferred, modes, k, 8)):.2f} %")


@torch.no_grad()
def measure_mnist(model: lightning_gen.InfoGAN, data_root: Path) -> None:
    """Q's best-permutation accuracy of the categorical code on the test digits."""
    data = MNISTDataModule(root=str(data_root), batch_size=500, val_fraction=0.0)
    data.setup("test")
    codes, digits = [], []
    for x, y in data.test_dataloader():
        codes.append(model.infer_codes(x)["categorical"].cpu())
        digits.append(y)
    codes, digits = torch.cat(codes), torch.cat(digits)
    k = model.num_categories
    accuracy = float(best_permutation_accuracy(codes, digits, k, 10))
    pairs = best_assignment(code_label_counts(codes, digits, k, 10))
    print(f"Q on {len(digits)} test digits: best-permutation accuracy {100 * accuracy:.2f} % "
          f"(error {100 * (1 - accuracy):.2f} %; paper about 5 %), purity {100 * float(code_purity(codes, digits, k, 10)):.2f} %")
    print("code -> digit: " + ", ".join(f"{c}->{d}" for c, d in sorted(pairs)))
    drawn = torch.arange(5000) % k
    x = model.sample(5000, generator=torch.Generator().manual_seed(0), codes={"categorical": drawn})
    read = model.infer_codes(x)["categorical"].cpu()
    print(f"Q on 5000 samples: reads back the code that drew them {100 * float((read == drawn).float().mean()):.2f} %")


def main() -> None:
    """Train (or load) and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=sorted(RECIPES))
    parser.add_argument("--max-steps", type=int, default=None, help="generator steps (toy 5000, mnist 1500)")
    parser.add_argument("--ckpt", type=Path, default=None, help="measure this checkpoint instead of training")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_infogan")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LIGHTNING_GEN_DATA", ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    os.environ.setdefault("LIGHTNING_GEN_DATA", str(args.data))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    ckpt = args.ckpt
    if ckpt is None:
        steps = args.max_steps or {"toy": 5000, "mnist": 1500}[args.which]
        ckpt = train(args.which, steps, args.out / args.which)
    trained = time.perf_counter()
    model = lightning_gen.load_model(ckpt)
    step = torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"]
    print(f"{args.which}: {ckpt} (generator step {step}); training {trained - start:.0f} s wall")
    measure_toy(model) if args.which == "toy" else measure_mnist(model, args.data)
    print(f"total {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
