"""What does a BiGAN's encoder learn? Train a recipe, then measure E(x) against an untrained encoder, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bigan.py toy   [--steps 3000] [--out runs/bench_bigan]
    OMP_NUM_THREADS=1 python benchmarks/bigan.py mnist [--steps 500] [--data ../shared/data] [--out runs/bench_bigan]

Both train the recipe (``configs/bigan/<toy_ring|mnist>.yaml``) through ``lightning-gen fit`` for ``--steps``
generator/encoder steps (CSV logger), load ``last.ckpt`` with :func:`lightning_gen.load_model`, and score the trained
encoder and the same nets with freshly drawn weights (PyTorch's default initialisation) with the same measures:

* ``toy``: per-mode centroids of ``E(x)`` on 8,000 training points; held-out accuracy of assigning ``E(x)`` of
  8,000 test points to the nearest centroid (chance 12.5 %); separation = the smallest distance between two
  centroids over the mean within-mode spread (RMS distance to the own centroid); and the fraction of test points whose
  reconstruction ``G(E(x))`` lies nearest to their own mode.
* ``mnist``: linear probe (multinomial logistic regression on standardised ``E(x)``, L-BFGS) and 10-NN accuracy,
  fitted on 10,000 training digits and scored on the 10,000 test digits; the reconstruction grid (rows of test
  digits over ``G(E(x))``) is written as a PNG and its path printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import lightning_gen
from lightning_gen.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def _train(config: Path, steps: int, out: Path, extra: list[str]) -> tuple[lightning_gen.BiGAN, Path, float]:
    """Fit the recipe for ``steps`` steps under ``out``; return the trained module, its checkpoint, the wall time."""
    start = time.perf_counter()
    cli_main(["fit", f"--config={config}", f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={out}",
              "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={out}",
              "--trainer.enable_progress_bar=false", *extra])
    wall = time.perf_counter() - start
    last = max(out.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.BiGAN)
    return model.eval(), last, wall


def _untrained(ckpt: Path) -> lightning_gen.BiGAN:
    """The same nets with freshly drawn weights (PyTorch's default initialisation, seed 1): the baseline."""
    torch.manual_seed(1)
    fresh = lightning_gen.load_model(ckpt)  # the nets as configured ...
    for net in (fresh.generator, fresh.encoder, fresh.discriminator):
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()  # ... with freshly drawn weights
    return fresh.eval()


@torch.no_grad()
def _codes(model: lightning_gen.BiGAN, x: Tensor, chunk: int = 2000) -> Tensor:
    return torch.cat([model.encode(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def _toy_scores(model: lightning_gen.BiGAN, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                modes: Tensor) -> dict[str, float]:
    (x_tr, y_tr), (x_te, y_te) = train, test
    k = modes.shape[0]
    z_tr, z_te = _codes(model, x_tr), _codes(model, x_te)
    centroids = torch.stack([z_tr[y_tr == m].mean(0) for m in range(k)])
    spread = torch.stack([(z_tr[y_tr == m] - centroids[m]).pow(2).sum(1).mean().sqrt() for m in range(k)]).mean()
    gaps = torch.cdist(centroids, centroids) + torch.eye(k) * 1e9
    nearest = torch.cdist(z_te, centroids).argmin(1)
    recon = torch.cat([model.reconstruct(x_te[i:i + 2000]) for i in range(0, len(x_te), 2000)])
    recon_mode = torch.cdist(recon, modes).argmin(1)
    return {"centroid_accuracy": float((nearest == y_te).float().mean()),
            "separation": float(gaps.min() / spread), "min_gap": float(gaps.min()), "spread": float(spread),
            "reconstruction_same_mode": float((recon_mode == y_te).float().mean())}


def run_toy(args: argparse.Namespace) -> None:
    """Train the toy-ring recipe and compare its encoder with an untrained one."""
    from lightning_gen.data.toy import make_mixture

    out = args.out / "toy"
    model, ckpt, wall = _train(ROOT / "configs" / "bigan" / "toy_ring.yaml", args.steps, out, [])
    mixture = make_mixture("ring")  # the recipe's data: 8 modes on the unit circle, std 0.01
    g = torch.Generator().manual_seed(123)  # fresh points, not the training set's (seed 0)
    train, test = mixture.sample(8000, generator=g), mixture.sample(8000, generator=g)
    modes = mixture.modes
    print(f"trained {args.steps} steps in {wall:.0f} s (configs/bigan/toy_ring.yaml, OMP_NUM_THREADS=1)")
    print(f"{'encoder':<12}{'centroid acc':>14}{'separation':>12}{'min gap':>10}{'spread':>10}{'G(E(x)) same mode':>20}")
    for name, m in (("trained", model), ("untrained", _untrained(ckpt))):
        s = _toy_scores(m, train, test, modes)
        print(f"{name:<12}{100 * s['centroid_accuracy']:>13.2f}%{s['separation']:>12.2f}{s['min_gap']:>10.3f}"
              f"{s['spread']:>10.3f}{100 * s['reconstruction_same_mode']:>19.2f}%")
    print("chance: 12.50 % (8 modes); separation = smallest centroid distance / mean RMS spread within a mode")


def _probe(z_tr: Tensor, y_tr: Tensor, z_te: Tensor, y_te: Tensor) -> tuple[float, float]:
    """(logistic-regression accuracy, 10-NN accuracy) of codes, fitted on the training codes."""
    mean, std = z_tr.mean(0), z_tr.std(0).clamp_min(1e-6)
    a, b = (z_tr - mean) / std, (z_te - mean) / std
    torch.manual_seed(0)
    linear = torch.nn.Linear(a.shape[1], 10)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(a), y_tr) + 1e-4 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logistic = float((linear(b).argmax(1) == y_te).float().mean())
        votes = torch.cat([y_tr[torch.cdist(b[i:i + 1000], a).topk(10, largest=False).indices]
                           for i in range(0, len(b), 1000)])
        knn = float((torch.mode(votes, dim=1).values == y_te).float().mean())
    return logistic, knn


def run_mnist(args: argparse.Namespace) -> None:
    """Train the MNIST recipe, probe its codes against an untrained encoder's, write a reconstruction grid."""
    from PIL import Image

    from lightning_gen.callbacks import ReconstructionGridCallback, grid_to_uint8
    from lightning_gen.data import MNISTDataModule

    out = args.out / "mnist"
    model, ckpt, wall = _train(ROOT / "configs" / "bigan" / "mnist.yaml", args.steps, out, [f"--data.root={args.data}"])
    data = MNISTDataModule(root=str(args.data), batch_size=1000, val_fraction=0.0)
    data.setup("fit")
    data.setup("test")
    x_tr, y_tr = (torch.cat(t) for t in zip(*[(x, y) for x, y in data.train_dataloader()]))
    x_te, y_te = (torch.cat(t) for t in zip(*[(x, y) for x, y in data.test_dataloader()]))
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(x_tr), generator=g)[:10000]
    x_tr, y_tr = x_tr[pick], y_tr[pick]
    print(f"trained {args.steps} steps in {wall:.0f} s (configs/bigan/mnist.yaml, OMP_NUM_THREADS=1)")
    print(f"{'encoder':<12}{'logistic':>10}{'10-NN':>10}   (10,000 train codes -> 10,000 test digits; chance 10 %)")
    for name, m in (("trained", model), ("untrained", _untrained(ckpt))):
        logistic, knn = _probe(_codes(m, x_tr), y_tr, _codes(m, x_te), y_te)
        print(f"{name:<12}{100 * logistic:>9.2f}%{100 * knn:>9.2f}%")
    grid = ReconstructionGridCallback(num_images=32, nrow=8)
    grid.set_images(x_te[torch.randperm(len(x_te), generator=torch.Generator().manual_seed(1))[:32]])  # mixed digits
    path = out / "reconstructions_test.png"
    Image.fromarray(grid_to_uint8(grid.render(model))).save(path)
    print(f"reconstruction grid (rows of test digits over G(E(x))): {path}")


def main() -> None:
    """Parse the arguments and run the chosen measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["toy", "mnist"])
    parser.add_argument("--steps", type=int, default=None, help="generator/encoder steps (toy 3000, mnist 500)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_bigan")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.steps is None:
        args.steps = 3000 if args.which == "toy" else 500
    (run_toy if args.which == "toy" else run_mnist)(args)


if __name__ == "__main__":
    main()
