"""How close does the tabular RealNVP recipe come to the demo events? Fit, test, sample, compare in data units.

    OMP_NUM_THREADS=1 python benchmarks/tabular_events.py [--steps 12000] [--events 100000] [--out runs/bench_tabular]
        [--config configs/realnvp/tabular_spline.yaml] [--model.flow.init_args.num_bins=8 ...]

Writes ``--events`` synthetic Z -> l l events (``examples/make_events.py``) into ``--out``, fits
``configs/realnvp/tabular.yaml`` on them through ``lightning-gen fit`` for ``--steps`` steps (CSV logger), runs
``lightning-gen test`` on the last checkpoint (test NLL in nats per event, standardised units, and the same in data
units: NLL + sum(log std)), then draws as many samples as the test split has rows through ``lightning-gen predict``
(which writes them in data units) and prints, per column, the mean and std of samples vs the test rows, and for the
invariant mass computed from the six lepton columns: the medians, the interquartile ranges and the 1-D Wasserstein
distance to the test rows' mass (with, for scale, the distance between two halves of the data: the noise floor).
Arguments it does not know go to `lightning-gen fit` (e.g. ``--model.flow.init_args.coupling=spline``).
"""

from __future__ import annotations

import argparse
import math
import runpy
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from lightning_gen.cli import main as cli_main
from lightning_gen.data import TabularDataModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "realnvp" / "tabular.yaml"


def main() -> None:
    """Make the events, fit, test, predict and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", default="runs/bench_tabular")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the recipe (default: configs/realnvp/tabular.yaml)")
    args, extra = parser.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    events = runpy.run_path(str(ROOT / "examples" / "make_events.py"))
    table = out / "events.csv"
    events["main"]([f"--num={args.events}", f"--out={table}"])
    common = [f"--config={args.config}", f"--data.path={table}", f"--trainer.default_root_dir={out}",
              "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={out}",
              "--trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    cli_main(["fit", *common, *extra, f"--trainer.max_steps={args.steps}"])
    fit_s = time.perf_counter() - start
    last = max(out.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    cli_main(["test", *common, *extra, f"--ckpt_path={last}"])
    metrics = max(out.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime).read_text().splitlines()
    header = metrics[0].split(",")
    test_nll = float(metrics[-1].split(",")[header.index("test/nll")])

    dm = TabularDataModule(table, columns=["pt1", "eta1", "phi1", "pt2", "eta2", "phi2"])
    dm.setup()
    data = dm._raw["test"].numpy()
    cli_main(["predict", *common, *extra, f"--ckpt_path={last}", f"--num_samples={len(data)}"])
    samples = torch.load(max(out.rglob("samples.pt"), key=lambda p: p.stat().st_mtime)).double().numpy()
    log_std = float(dm.std.log().sum())

    print(f"\nfit: {args.steps} steps in {fit_s:.0f} s ({args.events} events, train/val/test {dm.num_rows})")
    print(f"test NLL: {test_nll:.3f} nats/event standardised; {test_nll + log_std:.3f} nats/event in data units")
    print(f"{'column':8s} {'data mean':>10s} {'sample mean':>11s} {'data std':>9s} {'sample std':>10s}")
    for j, name in enumerate(dm.column_names):
        print(f"{name:8s} {data[:, j].mean():10.3f} {samples[:, j].mean():11.3f} {data[:, j].std():9.3f} "
              f"{samples[:, j].std():10.3f}")
    mass = events["invariant_mass"]
    m_data, m_samp = mass(*data.T), mass(*samples.T)
    half = len(m_data) // 2
    iqr = lambda m: np.subtract(*np.percentile(m, [75, 25]))  # noqa: E731
    print(f"mass     median data {np.median(m_data):.2f} samples {np.median(m_samp):.2f} GeV; IQR data "
          f"{iqr(m_data):.2f} samples {iqr(m_samp):.2f} GeV")
    print(f"mass     W1(samples, data) {wasserstein_distance(m_samp, m_data):.3f} GeV; W1(half, half) of the data "
          f"{wasserstein_distance(m_data[:half], m_data[half:]):.3f} GeV; samples finite "
          f"{np.isfinite(samples).all()}; |phi| <= pi: {np.mean(np.abs(samples[:, [2, 5]]) <= math.pi):.4f}")


if __name__ == "__main__":
    main()
