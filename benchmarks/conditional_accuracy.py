"""Do conditional MNIST samples show the requested digit? Score them with a small classifier trained on real digits.

    python benchmarks/conditional_accuracy.py <cgan checkpoint> [--per-class 500] [--data ../shared/data]

Trains a small CNN on the MNIST train split (a couple of epochs on a CPU), reports its accuracy on the test split,
then draws ``--per-class`` samples of every digit from the checkpoint (``lightning_gen.load_model``) and prints the
fraction classified as the requested digit, per class and overall. Chance is 10 %.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lightning_gen
from lightning_gen.data import MNISTDataModule

ROOT = Path(__file__).resolve().parents[1]


def classifier() -> nn.Module:
    """A small CNN for 28x28 digits in [-1, 1] (about 99 % test accuracy on full MNIST)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def train_classifier(data: MNISTDataModule, epochs: int) -> tuple[nn.Module, float]:
    """Train on the train split; return the net and its test accuracy."""
    torch.manual_seed(0)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        net.train()
        for x, y in data.train_dataloader():
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net, accuracy(net, data.test_dataloader())


@torch.no_grad()
def accuracy(net: nn.Module, batches) -> float:
    """Fraction of correctly classified images over ``(x, y)`` batches."""
    net.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((net(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


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
    net, test_acc = train_classifier(data, args.epochs)
    print(f"classifier: test accuracy {100 * test_acc:.2f} % on real digits ({time.perf_counter() - start:.0f} s)")

    model = lightning_gen.load_model(args.checkpoint)
    g = torch.Generator().manual_seed(0)
    per_class = []
    for digit in range(model.num_classes):
        samples = model.sample(args.per_class, generator=g, labels=digit).clamp(-1, 1)
        labels = torch.full((args.per_class,), digit)
        per_class.append(accuracy(net, [(samples, labels)]))
    print("per digit: " + ", ".join(f"{d}: {100 * a:.1f} %" for d, a in enumerate(per_class)))
    print(f"samples classified as the requested digit: {100 * sum(per_class) / len(per_class):.2f} % "
          f"({args.per_class} per digit; chance 10 %)")


if __name__ == "__main__":
    main()
