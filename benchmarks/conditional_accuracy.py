"""Do conditional MNIST samples show the requested digit? Score them with a small classifier trained on real digits.

    python benchmarks/conditional_accuracy.py <cgan checkpoint> [--per-class 500] [--data ../shared/data]

Trains a small CNN (``lightning_gen.nets.ImageClassifier``) on the MNIST train split (a couple of epochs on a CPU),
reports its accuracy on the test split, then draws ``--per-class`` samples of every digit from the checkpoint
(``lightning_gen.load_model``) and prints the fraction classified as the requested digit, per class and overall.
Chance is 10 %.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import lightning_gen
from lightning_gen.data import MNISTDataModule
from lightning_gen.metrics.classifier import classifier_accuracy, train_classifier
from lightning_gen.nets import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Train the classifier, sample every digit from the checkpoint and print the accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    start = time.perf_counter()
    data = MNISTDataModule(root=str(args.data), batch_size=128, val_fraction=0.0)
    data.setup("fit")
    data.setup("test")
    torch.manual_seed(0)
    channels, image_size, _ = data.image_shape
    net = ImageClassifier(image_size=image_size, channels=channels, num_classes=data.num_classes)
    train_classifier(net, data.train_dataloader(), epochs=args.epochs, log=None)
    test_acc = classifier_accuracy(net, data.test_dataloader())
    print(f"classifier: test accuracy {100 * test_acc:.2f} % on real digits ({time.perf_counter() - start:.0f} s)")

    model = lightning_gen.load_model(args.checkpoint)
    g = torch.Generator().manual_seed(0)
    per_class = []
    for digit in range(model.num_classes):
        samples = model.sample(args.per_class, generator=g, labels=digit).clamp(-1, 1)
        labels = torch.full((args.per_class,), digit)
        per_class.append(classifier_accuracy(net, [(samples, labels)]))
    print("per digit: " + ", ".join(f"{d}: {100 * a:.1f} %" for d, a in enumerate(per_class)))
    print(f"samples classified as the requested digit: {100 * sum(per_class) / len(per_class):.2f} % "
          f"({args.per_class} per digit; chance 10 %)")


if __name__ == "__main__":
    main()
