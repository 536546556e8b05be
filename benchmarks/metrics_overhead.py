"""Cost of `GenerativeMetricsCallback` on the DCGAN MNIST recipe: time per evaluation against one training epoch.

    python benchmarks/metrics_overhead.py [--config configs/dcgan/mnist.yaml] [--epochs 3] [--num-samples 5000]
                                          [--metrics fid kid inception_score precision_recall] [--device cpu]

Builds the recipe's model and data through `lightning-gen`'s own parser (so the nets, batch size and data are the
recipe's), swaps the recipe's callbacks for a timer and one metrics callback (the recipe's small-classifier
extractor, trained once and cached like the recipe does), and fits ``--epochs`` epochs with an evaluation after each.
The first evaluation computes and caches the real features; the later ones read them, which is the steady state
the goal refers to (<= 10 % of an epoch). It also prints that ratio spread over the recipe's evaluation interval and
against an epoch of full MNIST (60,000 images; the digits shipped here hold 10,000), computed from the measured
time per batch. Epoch time is measured from the epoch's start to the end of its last
batch, before the evaluation runs; each evaluation is split into real features, generated samples (sampling +
embedding) and the metric computations. The script also prints the time for FID alone on 10,000 samples.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from lightning_gen.callbacks import GenerativeMetricsCallback
from lightning_gen.cli import GenerativeCLI
from lightning_gen.metrics import ClassifierFeatureExtractor

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    """Seconds from each training epoch's start to the end of its last batch (before other epoch-end hooks)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.start)


class EvaluationTimes(GenerativeMetricsCallback):
    """The metrics callback, keeping the split of every evaluation's time."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[dict[str, float]] = []

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> dict[str, float]:
        values = super().evaluate(trainer, pl_module, split)
        self.history.append(dict(self.last_seconds))
        return values


def main() -> None:
    """Fit the recipe for a few epochs with an evaluation after each; print epoch and evaluation times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "dcgan" / "mnist.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=5000, help="the recipe's samples per evaluation")
    parser.add_argument("--metrics", nargs="+", default=["fid", "kid", "inception_score", "precision_recall"])
    parser.add_argument("--classifier", type=Path, default=ROOT / "checkpoints" / "mnist_classifier.pt")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--every-n-epochs", type=int, default=5, help="the recipe's evaluation interval")
    parser.add_argument("--full-epoch-batches", type=int, default=938, help="batches of 64 in full MNIST")
    args = parser.parse_args()

    cli = GenerativeCLI(args=[f"--config={args.config}", f"--data.root={ROOT.parent / 'shared' / 'data'}",
                              "--trainer.logger=false"],
                        run=False)
    model, data = cli.model, cli.datamodule
    with tempfile.TemporaryDirectory() as tmp:
        timer = EpochTimer()
        metrics = EvaluationTimes(
            extractor=ClassifierFeatureExtractor(str(args.classifier), train_if_missing=True),
            metrics=args.metrics, num_samples=args.num_samples, cache_dir=Path(tmp) / "cache", every_n_epochs=1,
            on_test=False,
        )
        trainer = L.Trainer(accelerator=args.device, devices=1, max_epochs=args.epochs, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, callbacks=[timer, metrics], default_root_dir=tmp)
        trainer.fit(model, data)

    steps = trainer.num_training_batches
    print(f"recipe {args.config.relative_to(ROOT)}: {steps} batches of {data.hparams.batch_size} per epoch, "
          f"{args.num_samples} samples per evaluation, metrics {', '.join(metrics.metrics)}, {args.device}, "
          f"{torch.get_num_threads()} threads")
    for i, (epoch, ev) in enumerate(zip(timer.seconds, metrics.history)):
        print(f"epoch {i + 1}: training {epoch:.1f} s | evaluation {ev['total']:.1f} s = real features "
              f"{ev['real']:.1f} s + samples {ev['generated']:.1f} s + metrics {ev['compute']:.1f} s "
              f"-> {100 * ev['total'] / epoch:.1f} % of the epoch")
    cached = [ev["total"] / epoch for epoch, ev in zip(timer.seconds[1:], metrics.history[1:])]
    if cached:
        ratio = statistics.median(cached)
        per_batch = statistics.median(timer.seconds) / steps
        full = statistics.median(ev["total"] for ev in metrics.history[1:]) / (per_batch * args.full_epoch_batches)
        print(f"with cached real features: median evaluation / epoch = {100 * ratio:.1f} % (goal <= 10 %); "
              f"one evaluation every {args.every_n_epochs} epochs (the recipe's setting) adds "
              f"{100 * ratio / args.every_n_epochs:.1f} % to training")
        print(f"against an epoch of {args.full_epoch_batches} batches (full 60,000-image MNIST), computed from the "
              f"measured {1000 * per_batch:.0f} ms per batch: evaluation / epoch = {100 * full:.1f} %")

    # FID alone on 10,000 samples with the small extractor: sampling + embedding, then the Frechet distance
    fid_only = EvaluationTimes(extractor=metrics.extractor, metrics=["fid"], num_samples=10_000, cache_dir=False)
    fid_only.extractor = metrics.extractor
    fid_only.evaluate(trainer, model, "train")  # real features of 10,000 images (not timed below)
    fid_only.evaluate(trainer, model, "train")
    t = fid_only.last_seconds
    print(f"FID on 10,000 samples (small classifier extractor, real features in memory): {t['total']:.1f} s = "
          f"samples + embedding {t['generated']:.1f} s + Frechet distance {t['compute']:.2f} s "
          f"(FID {fid_only.last['fid']:.2f})")


if __name__ == "__main__":
    main()
