"""BigGAN's tricks on the conditional MNIST recipe: class-conditional BatchNorm, and the truncation trick.

    OMP_NUM_THREADS=1 python benchmarks/biggan_tricks.py [--steps 1500] [--variants recipe,cbn]
        [--num-samples 5000] [--data ../shared/data] [--classifier checkpoints/mnist_classifier.pt]

Trains configs/cgan/mnist.yaml (built through the ``lightning-gen`` CLI, so the recipe's nets, optimizers and seed)
for ``--steps`` generator steps per variant, in one process, with the same seed and data order (1,500 steps take about
7 minutes per variant on one CPU thread; the recipe's 3,000 twice that):

* ``recipe``: as configured (a one-hot label concatenated to the generator's noise and to the critic's input maps);
* ``cbn``: the generator with ``conditioning: batchnorm`` (per-class BatchNorm gains and biases, Brock et al. 2019),
  the critic unchanged;
* ``cbn_projection``: ``cbn`` with the projection discriminator (``projection: true``, Miyato & Koyama 2018);
* any variant name ending in ``+ortho`` also sets ``orthogonal_reg: 1.0e-4`` (BigGAN's beta).

Each trained model then draws ``--num-samples`` samples (sample ``i`` asks for digit ``i % 10``; fixed seed) at every
truncation in ``--truncations`` (``none`` = plain N(0, 1) noise), scored against the MNIST test split (all of it) with the
small MNIST classifier of the recipe's metrics callback (``checkpoints/mnist_classifier.pt``; trained here once, two
epochs, if missing): classifier FID (its penultimate features), improved precision and recall (k = 3, Kynkäänniemi
et al. 2019; precision ~ fidelity, recall ~ diversity), the mean per-digit feature spread (another diversity number:
the root mean square distance of a digit's samples to their mean, relative to the same for real test digits), and
the fraction of samples the classifier reads as the requested digit. The first line is the floor: the same numbers
for ``--num-samples`` real training digits against the test digits.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from torch import Tensor

from lightning_gen.cli import GenerativeCLI
from lightning_gen.metrics import ClassifierFeatureExtractor
from lightning_gen.metrics.image import frechet_distance
from lightning_gen.metrics.precision_recall import improved_precision_recall, knn_radii

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "cgan" / "mnist.yaml"
VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "cbn": ["--model.init_args.generator.init_args.conditioning=batchnorm"],
    "cbn_projection": ["--model.init_args.generator.init_args.conditioning=batchnorm",
                       "--model.init_args.discriminator.init_args.projection=true"],
}


def variant_args(name: str) -> list[str]:
    """Command-line overrides of the recipe for one variant (``<variant>[+ortho]``)."""
    base, _, extra = name.partition("+")
    if base not in VARIANTS or extra not in ("", "ortho"):
        raise SystemExit(f"unknown variant {name!r}: use one of {sorted(VARIANTS)}, optionally with +ortho")
    return VARIANTS[base] + (["--model.init_args.orthogonal_reg=1.0e-4"] if extra else [])


def build(name: str, data: Path) -> GenerativeCLI:
    """The recipe's model and data module with the variant's overrides (nothing runs)."""
    return GenerativeCLI(
        args=["--config", str(RECIPE), *variant_args(name), "--trainer.logger=false",
              f"--data.init_args.root={data}", "--data.init_args.download=false"],
        run=False,
    )


def extract(extractor: ClassifierFeatureExtractor, images: Tensor, batch: int = 1000) -> tuple[Tensor, Tensor]:
    """Classifier features and logits of ``images`` in [-1, 1], ``batch`` at a time."""
    feats, logits = zip(*(extractor.extract(images[i:i + batch].clamp(-1, 1)) for i in range(0, len(images), batch)))
    return torch.cat(feats), torch.cat(logits)


def first_batches(loader: Iterable, n: Optional[int]) -> tuple[Tensor, Tensor]:
    """The first ``n`` (all when ``None``) images and labels a loader yields."""
    images, labels, count = [], [], 0
    for x, y in loader:
        images.append(x)
        labels.append(y)
        count += len(y)
        if n is not None and count >= n:
            break
    return torch.cat(images)[:n], torch.cat(labels)[:n].long()


def spread(features: Tensor, labels: Tensor) -> float:
    """Root mean square distance of each class's features to the class mean, averaged over classes."""
    per_class = [(features[labels == c] - features[labels == c].mean(0)).pow(2).sum(1).mean().sqrt()
                 for c in labels.unique()]
    return float(torch.stack(per_class).mean())


def score(real: tuple[Tensor, Tensor, Tensor, float], feats: Tensor, logits: Tensor, labels: Tensor) -> dict[str, float]:
    """FID, precision, recall, relative per-digit spread and requested-digit accuracy of one sample set."""
    real_feats, radii, _, real_spread = real
    precision, recall = improved_precision_recall(real_feats, feats, k=3, real_radii=radii)
    return {"fid": float(frechet_distance(real_feats, feats)), "precision": float(precision),
            "recall": float(recall), "spread": spread(feats, labels) / real_spread,
            "accuracy": float((logits.argmax(1) == labels).float().mean())}


def row(name: str, values: dict[str, float]) -> str:
    """One line of the results table."""
    return (f"{name:<28} {values['fid']:8.2f} {values['precision']:9.3f} {values['recall']:7.3f} "
            f"{values['spread']:7.3f} {100 * values['accuracy']:8.1f} %")


def main() -> None:
    """Train every variant, score it at every truncation and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="generator steps per variant (the recipe: 3000)")
    parser.add_argument("--variants", default="recipe,cbn")
    parser.add_argument("--truncations", default="none,2.0,1.0,0.5,0.25")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--classifier", type=Path, default=ROOT / "checkpoints" / "mnist_classifier.pt")
    args = parser.parse_args()
    truncations = [None if t == "none" else float(t) for t in args.truncations.split(",")]
    sys.argv = sys.argv[:1]  # the CLI below gets its own arguments (LightningCLI warns when both are present)
    start = time.perf_counter()

    clis = {name: build(name, args.data) for name in args.variants.split(",")}
    data = next(iter(clis.values())).datamodule
    data.setup("fit")
    data.setup("test")
    extractor = ClassifierFeatureExtractor(str(args.classifier), train_if_missing=True)
    if extractor.needs_training:
        extractor.train_on(data.train_dataloader(), data.image_shape, data.num_classes)
        print(f"classifier: trained and saved to {args.classifier} ({time.perf_counter() - start:.0f} s)")
    test_images, test_labels = first_batches(data.test_dataloader(), None)
    real_feats, _ = extract(extractor, test_images)
    real = (real_feats, knn_radii(real_feats, k=3), test_labels, spread(real_feats, test_labels))
    n = args.num_samples
    torch.manual_seed(0)
    train_images, train_labels = first_batches(data.train_dataloader(), n)
    header = f"{'samples':<28} {'FID':>8} {'precision':>9} {'recall':>7} {'spread':>7} {'accuracy':>10}"
    lines = [header, row(f"real train digits (n={n})", score(real, *extract(extractor, train_images), train_labels))]
    print(lines[-1], flush=True)

    for name, cli in clis.items():
        model = cli.model
        L.seed_everything(1, verbose=False)  # the recipe's seed: every variant sees the same data order
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False, callbacks=[],
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=cli.datamodule)
        train_s = time.perf_counter() - t0
        labels = torch.arange(n) % model.num_classes
        for t in truncations:
            g = torch.Generator().manual_seed(0)
            samples = torch.cat([model.sample(len(chunk), generator=g, labels=chunk, truncation=t)
                                 for chunk in labels.split(1000)])
            values = score(real, *extract(extractor, samples), labels)
            lines.append(row(f"{name} t={'none' if t is None else t}", values))
            print(lines[-1], flush=True)
        print(f"  ({name}: {trainer.global_step} generator steps in {train_s:.0f} s)", flush=True)
        lines.append(f"  ({name}: {trainer.global_step} generator steps in {train_s:.0f} s)")

    print(f"\nclassifier FID against the {len(test_images)} MNIST test digits, {n} samples each; spread relative to the "
          f"real test digits' "
          f"({args.steps} generator steps per variant; total {time.perf_counter() - start:.0f} s, "
          f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}):")
    print("\n".join(lines))
    if not math.isfinite(sum(float(x) for x in real_feats.mean(0))):
        raise SystemExit("non-finite real features: the classifier is broken")


if __name__ == "__main__":
    main()
