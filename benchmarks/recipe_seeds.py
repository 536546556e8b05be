"""Train a recipe over several seeds and print each seed's test metrics, their mean and spread, and the wall times.

    python benchmarks/recipe_seeds.py configs/dcgan/mnist.yaml --seeds 1 2 3 [--jobs 2] [--root runs/seeds]
        [--class-accuracy 500] [--grid docs/images/dcgan_mnist_samples.png] [--trainer.max_steps=...]

Each seed runs `lightning-gen fit --config CONFIG --seed_everything SEED` as its own process (timed from start to
exit, so start-up and the recipe's own evaluations count), then `lightning-gen test` on that run's `last.ckpt` (timed
on its own). Anything this script does not know is passed on to both (e.g. `--model.init_args.ema_decay=0.999`).
The rows are every `test/...` value the recipe logs (FID, precision, recall, NLL, ...; toy recipes log mode
coverage and the high-quality share there).

- `--jobs N` runs N seeds at once, each with `--threads` threads (default: the cores shared out), so the wall times
  are those of a CPU shared N ways; say so when quoting them.
- `--class-accuracy N` (conditional models) draws N samples of every class from each final model and reports the
  share that the recipe's own metrics classifier (`--classifier`, default `checkpoints/mnist_classifier.pt`)
  assigns to the requested class.
- `--grid PATH` saves a sample grid of the first seed's final model (8 x 8; 10 x 10 with one class per column for
  conditional models).
- A seed whose fit finished (its folder holds `fit_seconds` and a `last.ckpt`) is not trained again, nor tested
  again once its test metrics are newer than the checkpoint (`--refit` does both anew), so a killed sweep picks up
  where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch
from torchvision.utils import save_image

import lightning_gen
from lightning_gen.metrics.classifier import classifier_accuracy
from lightning_gen.nets.classifier import load_classifier

# `lightning-gen test` in a child process that writes the logged test metrics to a JSON file (argv[1]).
_TEST_AND_DUMP = (
    "import json, sys\n"
    "from lightning_gen.cli import GenerativeCLI\n"
    "cli = GenerativeCLI(args=sys.argv[2:])\n"
    "json.dump({k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith('test/')},"
    " open(sys.argv[1], 'w'))\n"
)


def _run(cmd: list[str], log: Path, threads: int) -> float:
    """Run ``cmd`` with its output in ``log``; return its wall time in seconds (failures raise with the log's tail)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; the end of {log}:\n{tail}")
    return seconds


def _logger_args(config: Path, out: Path) -> list[str]:
    """Point the recipe's logger (if it names a ``save_dir``) into the seed's folder."""
    return [f"--trainer.logger.init_args.save_dir={out}"] if "save_dir:" in config.read_text() else []


def run_seed(config: Path, seed: int, root: Path, extra: list[str], threads: int, refit: bool) -> dict[str, float]:
    """Fit one seed (unless its folder holds a checkpoint already), test its ``last.ckpt``; return the numbers."""
    out = root / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    common = [f"--config={config}", f"--seed_everything={seed}", f"--trainer.default_root_dir={out}",
              "--trainer.enable_progress_bar=false", *_logger_args(config, out)]
    timing = out / "fit_seconds"  # written once a fit has finished: a killed fit leaves a last.ckpt but not this
    ckpt = next(out.rglob("last.ckpt"), None)
    if refit or ckpt is None or not timing.is_file():
        shutil.rmtree(out)  # a killed or earlier fit's files must not be mistaken for this one's
        out.mkdir(parents=True)
        seconds = _run([sys.executable, "-m", "lightning_gen.cli", "fit", *common, *extra], out / "fit.log", threads)
        timing.write_text(f"{seconds:.1f}\n")
        ckpt = next(out.rglob("last.ckpt"))
    fit_seconds = float(timing.read_text())
    metrics_file, test_timing = out / "test_metrics.json", out / "test_seconds"
    if refit or not test_timing.is_file() or test_timing.stat().st_mtime < ckpt.stat().st_mtime:
        seconds = _run([sys.executable, "-c", _TEST_AND_DUMP, str(metrics_file), "test", *common, *extra,
                        f"--ckpt_path={ckpt}"], out / "test.log", threads)
        test_timing.write_text(f"{seconds:.1f}\n")
    test_seconds = float(test_timing.read_text())
    metrics = json.loads(metrics_file.read_text())
    return {**metrics, "fit_seconds": fit_seconds, "test_seconds": test_seconds, "checkpoint": str(ckpt)}


def class_accuracy(model: torch.nn.Module, classifier: torch.nn.Module, per_class: int, seed: int) -> float:
    """Share of ``per_class`` samples of every class that ``classifier`` assigns to the requested class."""
    g = torch.Generator().manual_seed(seed)
    batches = [(model.sample(per_class, generator=g, labels=c).clamp(-1, 1), torch.full((per_class,), c))
               for c in range(model.num_classes)]
    return classifier_accuracy(classifier, batches)


def save_grid(model: torch.nn.Module, path: Path) -> None:
    """Save 64 samples (100, one class per column, for conditional models) as a PNG grid."""
    conditional = getattr(model, "num_classes", None)
    n, rows = (100, 10) if conditional else (64, 8)
    with torch.no_grad():
        samples = model.sample(n, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(samples.clamp(-1, 1) * 0.5 + 0.5, path, nrow=rows, padding=2)


def summarize(rows: list[dict[str, float]], keys: list[str]) -> list[str]:
    """``key: mean +- sd (min - max)`` lines over the seeds."""
    lines = []
    for key in keys:
        values = [r[key] for r in rows if key in r]
        if not values:
            continue
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"{key:>24}: mean {statistics.mean(values):.4g} +- {sd:.2g} (sd over {len(values)} seeds; "
                     f"min {min(values):.4g}, max {max(values):.4g})")
    return lines


def main(argv: Optional[list[str]] = None) -> None:
    """Parse arguments, run every seed (``--jobs`` at a time), print one row per seed and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    parser.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    parser.add_argument("--root", type=Path, default=None, help="where runs are written (default: a temporary folder)")
    parser.add_argument("--refit", action="store_true", help="train and test finished seeds again")
    parser.add_argument("--class-accuracy", type=int, default=0, metavar="N", help="samples per class to classify")
    parser.add_argument("--classifier", type=Path, default=Path("checkpoints/mnist_classifier.pt"))
    parser.add_argument("--grid", type=Path, default=None, help="save the first seed's sample grid here (PNG)")
    args, extra = parser.parse_known_args(argv)  # anything else goes to `lightning-gen fit` and `test`
    if not args.config.is_file():
        parser.error(f"no config at {args.config}")
    root = args.root or Path(tempfile.mkdtemp(prefix="recipe_seeds_"))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{args.config}: seeds {args.seeds}, {args.jobs} at a time with {threads} thread(s) each (runs in {root})",
          flush=True)

    def one(seed: int) -> dict[str, float]:
        row = run_seed(args.config, seed, root, extra, threads, args.refit)
        if args.class_accuracy:
            model = lightning_gen.load_model(row["checkpoint"])
            row["class_accuracy"] = class_accuracy(model, load_classifier(args.classifier), args.class_accuracy, seed)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "checkpoint"), flush=True)
        return row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(one, args.seeds))
    if args.grid:
        save_grid(lightning_gen.load_model(rows[0]["checkpoint"]), args.grid)
        print(f"sample grid of seed {args.seeds[0]}: {args.grid}")
    keys = sorted({k for r in rows for k in r if k.startswith("test/")}) + ["class_accuracy", "fit_seconds",
                                                                           "test_seconds"]
    print("\n".join(summarize(rows, keys)))


if __name__ == "__main__":
    main()
