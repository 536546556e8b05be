"""RBM on binarized MNIST: train CD-1 and PCD-1 with the recipe, then score AIS test log-likelihoods (nats per digit).

    OMP_NUM_THREADS=1 python benchmarks/rbm.py --methods cd1    [--max-epochs 150] [--max-time 00:00:07:00]
    OMP_NUM_THREADS=1 python benchmarks/rbm.py --methods pcd    [--pcd-lr 0.05] [--data ../shared/data]
    OMP_NUM_THREADS=1 python benchmarks/rbm.py --methods pcd --ckpt-pcd last.ckpt --ais-chains 500   # AIS only
    OMP_NUM_THREADS=1 python benchmarks/rbm.py --methods cd1 -- --model.optimizer.init_args.weight_decay=2e-4

Each method trains ``configs/rbm/mnist.yaml`` (500 hidden units, SGD(0.05, momentum 0.9), batch 100, stochastic
binarization; PCD: ``--model.persistent true`` with 100 chains, at ``--pcd-lr``) through ``lightning-gen fit`` for
``--max-epochs`` epochs or ``--max-time`` (whichever ends first; CSV logger under ``--out``; settings after ``--`` go
to the command line), or loads ``--ckpt-*``. One method per call keeps a run near 10 minutes on one CPU core. Then,
with the paper's AIS (100 runs from the training digits' base-rate model over 14,500 temperatures, about a minute):

* ``log Z``, its standard error (the spread of the importance weights, delta method) and how many runs carry the
  estimate (effective sample size: a handful means the error itself is unreliable; rerun with more ``--ais-chains``);
* the mean test log-likelihood ``-F(v) - log Z`` over the test split, binarized once with a fixed seed, and the
  same over the training split (a gap says overfitting);
* wall times of training and of AIS, next to the paper's figures for the same machine size trained on all 60,000
  digits (Salakhutdinov & Murray 2008, table 1: CD-1 -125.53, CD-3 -105.50, CD-25 -86.34).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

import lightning_gen
from lightning_gen.cli import main as cli_main
from lightning_gen.data import MNISTDataModule

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "rbm" / "mnist.yaml"
PAPER = {"cd1": -125.53, "cd3": -105.50, "cd25": -86.34}  # nats, 500 hidden units, 60,000 training digits


def train(method: str, args: argparse.Namespace, out: Path) -> tuple[Path, float]:
    """Fit the recipe with ``method`` (``cd1`` or ``pcd``); returns its ``last.ckpt`` and the wall time."""
    extra = ["--model.persistent=true", f"--model.optimizer.init_args.lr={args.pcd_lr}"] if method == "pcd" else []
    start = time.perf_counter()
    cli_main([
        "fit", f"--config={RECIPE}", f"--trainer.default_root_dir={out}", f"--trainer.max_epochs={args.max_epochs}",
        f"--trainer.max_time={args.max_time}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={out}", "--trainer.enable_progress_bar=false",
        f"--data.root={args.data}", "--data.num_workers=0", *extra, *args.override,
    ])
    elapsed = time.perf_counter() - start
    return max(out.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime), elapsed


@torch.no_grad()
def mean_log_likelihood(model: lightning_gen.RBM, images: torch.Tensor, log_z: float, seed: int) -> float:
    """Mean ``-F(v) - log Z`` over ``images`` (in [-1, 1]) binarized once with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for chunk in images.split(1000):
        total += float(-model.rbm.free_energy(model.binarize(chunk, g)).double().sum())
    return total / len(images) - log_z


def split_images(data: MNISTDataModule, split: str) -> torch.Tensor:
    """Every image of a split as one tensor, in the data module's [-1, 1]."""
    loader = data.test_dataloader() if split == "test" else data.train_dataloader()
    return torch.cat([batch[0] for batch in loader])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["cd1", "pcd"], choices=["cd1", "pcd"])
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--max-time", default="00:00:07:00", help="DD:HH:MM:SS training budget per method")
    parser.add_argument("--pcd-lr", type=float, default=0.05)
    parser.add_argument("--data", default=os.environ.get("LIGHTNING_GEN_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--ais-chains", type=int, default=100)
    parser.add_argument("--ais-betas", type=int, default=14500)
    parser.add_argument("--ckpt-cd1", default=None)
    parser.add_argument("--ckpt-pcd", default=None)
    parser.add_argument("--out", default="runs/bench_rbm")
    parser.add_argument("override", nargs="*", help="more `--model.*` / `--trainer.*` settings, after `--`")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    data = MNISTDataModule(root=args.data, batch_size=1000, val_fraction=0.05)
    data.setup("fit")
    data.setup("test")
    test_images, train_images = split_images(data, "test"), split_images(data, "train")
    print(f"data: {len(train_images)} training digits (+ validation), {len(test_images)} test digits from {args.data}")
    rows = []
    for method in args.methods:
        ckpt = getattr(args, f"ckpt_{method}")
        train_s = float("nan")
        if ckpt is None:
            ckpt, train_s = train(method, args, Path(args.out) / method)
        model = lightning_gen.load_model(ckpt)
        steps = torch.load(ckpt, weights_only=True)["global_step"]
        start = time.perf_counter()
        estimate = model.estimate_log_partition(args.ais_chains, args.ais_betas, torch.Generator().manual_seed(0))
        ais_s = time.perf_counter() - start
        test_ll = mean_log_likelihood(model, test_images, estimate.log_z, seed=1)
        train_ll = mean_log_likelihood(model, train_images, estimate.log_z, seed=2)
        rows.append((method, steps, train_s, ais_s, estimate, test_ll, train_ll))
        print(f"{method}: {steps} steps in {train_s:.0f} s; log Z = {estimate.log_z:.2f} +- {estimate.stderr:.2f} "
              f"(ESS {estimate.effective_sample_size:.1f} of {args.ais_chains}, {ais_s:.0f} s); "
              f"test LL {test_ll:.2f}, train LL {train_ll:.2f} nats", flush=True)

    print("\n| method | steps | train s | AIS s | log Z (+- s.e.) | AIS ESS | test LL (nats) | train LL | paper (60k) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, steps, train_s, ais_s, est, test_ll, train_ll in rows:
        paper = PAPER.get(method)
        paper_text = f"{paper:.2f}" if paper is not None else "n/a (CD-25 -86.34)"
        train_text = "loaded" if math.isnan(train_s) else f"{train_s:.0f}"
        print(f"| {method} | {steps} | {train_text} | {ais_s:.0f} | {est.log_z:.2f} +- {est.stderr:.2f} | "
              f"{est.effective_sample_size:.1f} | {test_ll:.2f} | {train_ll:.2f} | {paper_text} |")


if __name__ == "__main__":
    main()
