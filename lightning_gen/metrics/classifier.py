"""Train and score the small :class:`~lightning_gen.nets.ImageClassifier` used as a feature extractor offline.

Train one on the real images of a data set and save it (the features of FID/KID/precision-recall and the class
probabilities of the Inception Score then come from it)::

    python -m lightning_gen.metrics.classifier --dataset mnist --root data \\
        --out checkpoints/mnist_classifier.pt --epochs 3 [--image_size 28] [--seed 0]

It trains on the whole training split, sets the feature scale (see ``ImageClassifier``), prints the accuracy on the
official test split and where it saved the net
(reload it with :func:`lightning_gen.nets.load_classifier`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.nets.classifier import ImageClassifier, save_classifier

__all__ = ["train_classifier", "classifier_accuracy", "CLASSIFIER_DATASETS", "main"]

# --dataset name -> data module class name in lightning_gen.data
CLASSIFIER_DATASETS: dict[str, str] = {
    "mnist": "MNISTDataModule",
    "fashion_mnist": "FashionMNISTDataModule",
    "cifar10": "CIFAR10DataModule",
}

Device = Union[str, torch.device]


def train_classifier(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    epochs: int = 3,
    lr: float = 1e-3,
    device: Device = "cpu",
    log: Optional[Callable[[str], Any]] = print,
) -> float:
    """Train ``net`` on ``(images, labels)`` batches with Adam and cross-entropy; return the last epoch's accuracy.

    The returned accuracy is the fraction of training images classified correctly during the last epoch (each
    batch scored just before its own update step). ``log`` receives one line per epoch (``None``: silent). The net
    is moved to ``device`` and left in eval mode. Shuffling follows the loader (seed ``torch`` for repeatable runs).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    accuracy = 0.0
    for epoch in range(epochs):
        net.train()
        start = time.perf_counter()
        correct = total = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            total += len(y)
        if total == 0:
            raise ValueError("train_classifier got an empty loader: it yielded no (images, labels) batches")
        accuracy = correct / total
        if log is not None:
            log(
                f"epoch {epoch + 1}/{epochs}: loss {loss_sum.item() / total:.4f}, train accuracy "
                f"{100 * accuracy:.2f} % ({time.perf_counter() - start:.0f} s)"
            )
    net.eval()
    return accuracy


@torch.no_grad()
def classifier_accuracy(
    net: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], device: Optional[Device] = None
) -> float:
    """Fraction of images in ``(images, labels)`` batches that ``net`` (set to eval mode) classifies correctly.

    ``device=None`` uses the device of the net's parameters; otherwise the net is moved there.
    """
    if device is None:
        device = next(net.parameters()).device
    else:
        net.to(device)
    net.eval()
    correct = total = 0
    for x, y in loader:
        y = y.to(device)
        correct += int((net(x.to(device)).argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise ValueError("classifier_accuracy got an empty loader: it yielded no (images, labels) batches")
    return correct / total


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_gen.metrics.classifier",
        description="Train the small ImageClassifier (feature extractor for FID/KID/IS/precision-recall) on the "
        "real images of a data set, report its test accuracy and save it.",
    )
    parser.add_argument("--dataset", required=True, choices=sorted(CLASSIFIER_DATASETS))
    parser.add_argument("--root", default=None, help="folder that holds the data set (as the data module's root; "
                        "default: $LIGHTNING_GEN_DATA, else data)")
    parser.add_argument("--out", type=Path, default=None, help="where to save (default checkpoints/<dataset>_classifier.pt)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image_size", type=int, default=None, help="default: the data set's own size")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--base_channels", type=int, default=32)
    parser.add_argument("--feature_dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Command-line entry point: train, print the test accuracy, save; returns the test accuracy."""
    args = _parse_args(argv)
    import lightning_gen.data  # here, not at the top: the functions above need no Lightning

    data_cls = getattr(lightning_gen.data, CLASSIFIER_DATASETS[args.dataset])
    data = data_cls(root=args.root, image_size=args.image_size, batch_size=args.batch_size, val_fraction=0.0,
                    seed=args.seed)
    data.setup()
    torch.manual_seed(args.seed)  # the net's initialization and the loader's shuffling
    channels, image_size, _ = data.image_shape
    net = ImageClassifier(image_size=image_size, channels=channels, num_classes=data.num_classes,
                          base_channels=args.base_channels, feature_dim=args.feature_dim)
    n_train = len(data.train_dataloader().dataset)
    print(f"training ImageClassifier({image_size} px, {channels} channel(s), {data.num_classes} classes) on "
          f"{n_train} {args.dataset} training images for {args.epochs} epoch(s) on {args.device}")
    train_classifier(net, data.train_dataloader(), epochs=args.epochs, lr=args.lr, device=args.device)
    scale = net.calibrate_feature_scale_(data.train_dataloader())
    print(f"feature scale (RMS of the penultimate activations on the training images): {scale:.4g}")
    test = data.test_dataloader()
    accuracy = classifier_accuracy(net, test, device=args.device)
    print(f"test accuracy: {100 * accuracy:.2f} % on the {len(test.dataset)} images of the official test split")
    out = args.out if args.out is not None else Path("checkpoints") / f"{args.dataset}_classifier.pt"
    path = save_classifier(net, out)
    print(f"saved classifier to {path} (load it with lightning_gen.nets.load_classifier({str(path)!r}))")
    return accuracy


if __name__ == "__main__":
    main()
