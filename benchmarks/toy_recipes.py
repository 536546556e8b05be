"""Train toy recipes over several seeds and print mode coverage, % high-quality samples, reverse KL and wall time.

    python benchmarks/toy_recipes.py configs/wgan_gp/toy_grid.yaml --seeds 1 2 3 [--trainer.max_steps=...]

Each seed runs `lightning-gen fit --config CONFIG --seed_everything SEED` as its own process (timed from start to
exit, so start-up counts), then scores 2,500 samples of the final generator with the VEEGAN/PacGAN toy metrics.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import lightning_gen
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.metrics import ToyModeMetrics


def run_seed(config: Path, seed: int, root: Path, extra: list[str]) -> dict[str, float]:
    """Fit one seed and score its final generator."""
    out = root / f"seed{seed}"
    cmd = [sys.executable, "-m", "lightning_gen.cli", "fit", f"--config={config}", f"--seed_everything={seed}",
           f"--trainer.default_root_dir={out}", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    ckpt = next(out.rglob("last.ckpt"))
    model = lightning_gen.load_model(ckpt)
    hparams = torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]
    mixture = ToyGaussiansDataModule(**{k: v for k, v in hparams.items() if not k.startswith("_")}).mixture
    metric = ToyModeMetrics(mixture.modes, mixture.std)
    metric.update(model.sample(2500, generator=torch.Generator().manual_seed(seed)))
    return {**{k: float(v) for k, v in metric.compute().items()}, "seconds": seconds, "checkpoint": str(ckpt)}


def main() -> None:
    """Parse arguments, run every seed, print one row per seed and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--root", type=Path, default=None, help="where runs are written (default: a temporary folder)")
    args, extra = parser.parse_known_args()  # anything else goes to `lightning-gen fit`, e.g. --trainer.max_steps=100
    root = args.root or Path(tempfile.mkdtemp(prefix="toy_recipes_"))
    rows = []
    print(f"{args.config}  (runs in {root})")
    print(f"{'seed':>4} {'modes':>6} {'HQ %':>7} {'rev KL':>7} {'time s':>7}")
    for seed in args.seeds:
        r = run_seed(args.config, seed, root, extra)
        rows.append(r)
        print(f"{seed:>4} {r['modes_covered']:>6.0f} {r['hq_percent']:>7.2f} {r['reverse_kl']:>7.4f} {r['seconds']:>7.1f}",
              flush=True)
    best = max(rows, key=lambda r: (r["modes_covered"], r["hq_percent"]))
    for key in ("modes_covered", "hq_percent", "reverse_kl", "seconds"):
        values = [r[key] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{key:>14}: best-run {best[key]:.4g}  min {min(values):.4g}  max {max(values):.4g}  "
              f"mean {statistics.mean(values):.4g}  sd {spread:.3g}")


if __name__ == "__main__":
    main()
