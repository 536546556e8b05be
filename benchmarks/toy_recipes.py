"""Train toy recipes over several seeds and print mode coverage, % high-quality samples, reverse KL and wall time.

    python benchmarks/toy_recipes.py configs/wgan_gp/toy_grid.yaml --seeds 1 2 3 [--threads 1] [--trainer.max_steps=...]

Each seed runs `lightning-gen fit --config CONFIG --seed_everything SEED` as its own process (timed from start to
exit, so start-up counts), then scores 2,500 samples of the final generator with the VEEGAN/PacGAN toy metrics.
For a model with a density (``log_prob``: flows, VAEs) it also prints the test NLL in nats on 20,000 fresh draws of
the mixture and the floor no model can beat on them, the mixture's own NLL (its entropy, estimated on the same draws).
``--threads N`` runs each fit with N CPU threads (``OMP_NUM_THREADS``); with 1 the wall time is the CPU time.
"""

from __future__ import annotations

import argparse
import os
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


HELD_OUT = 20_000  # fresh draws for the test NLL and its floor


def run_seed(config: Path, seed: int, root: Path, extra: list[str], threads: int | None = None) -> dict[str, float]:
    """Fit one seed and score its final generator (and, for a density model, its test NLL against the floor)."""
    out = root / f"seed{seed}"
    cmd = [sys.executable, "-m", "lightning_gen.cli", "fit", f"--config={config}", f"--seed_everything={seed}",
           f"--trainer.default_root_dir={out}", *extra]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - start
    ckpt = next(out.rglob("last.ckpt"))
    model = lightning_gen.load_model(ckpt)
    hparams = torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]
    mixture = ToyGaussiansDataModule(**{k: v for k, v in hparams.items() if not k.startswith("_")}).mixture
    metric = ToyModeMetrics(mixture.modes, mixture.std)
    metric.update(model.sample(2500, generator=torch.Generator().manual_seed(seed)))
    row = {**{k: float(v) for k, v in metric.compute().items()}, "seconds": seconds, "checkpoint": str(ckpt)}
    if hasattr(model, "log_prob"):
        held_out = mixture.sample(HELD_OUT, generator=torch.Generator().manual_seed(10_000 + seed))[0]
        with torch.no_grad():
            row["nll"] = float(-model.log_prob(held_out.float()).double().mean())
        row["floor"] = float(-mixture.log_prob(held_out.double()).mean())
        row["nll_gap"] = row["nll"] - row["floor"]
    return row


def main() -> None:
    """Parse arguments, run every seed, print one row per seed and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--root", type=Path, default=None, help="where runs are written (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per fit (default: torch's choice)")
    args, extra = parser.parse_known_args()  # anything else goes to `lightning-gen fit`, e.g. --trainer.max_steps=100
    root = args.root or Path(tempfile.mkdtemp(prefix="toy_recipes_"))
    rows = []
    print(f"{args.config}  (runs in {root})")
    print(f"{'seed':>4} {'modes':>6} {'HQ %':>7} {'rev KL':>7} {'time s':>7} {'NLL':>8} {'floor':>8} {'gap':>7}")
    for seed in args.seeds:
        r = run_seed(args.config, seed, root, extra, args.threads)
        rows.append(r)
        nll = f" {r['nll']:>8.3f} {r['floor']:>8.3f} {r['nll_gap']:>7.3f}" if "nll" in r else ""
        print(f"{seed:>4} {r['modes_covered']:>6.0f} {r['hq_percent']:>7.2f} {r['reverse_kl']:>7.4f} {r['seconds']:>7.1f}"
              f"{nll}", flush=True)
    best = max(rows, key=lambda r: (r["modes_covered"], r["hq_percent"]))
    keys = ("modes_covered", "hq_percent", "reverse_kl", "seconds") + (("nll", "nll_gap") if "nll" in rows[0] else ())
    for key in keys:
        values = [r[key] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{key:>14}: best-run {best[key]:.4g}  min {min(values):.4g}  max {max(values):.4g}  "
              f"mean {statistics.mean(values):.4g}  sd {spread:.3g}")


if __name__ == "__main__":
    main()
