"""A small image classifier whose penultimate layer serves as a feature extractor for FID, KID, IS and precision/recall.

The standard Inception network cannot be downloaded offline and knows nothing of 28 px digits; for MNIST-like data
a small CNN trained on the real images is the usual stand-in. ``features(x)`` gives the penultimate activations
(FID, KID, precision/recall) and ``forward(x)`` the class logits (Inception Score, conditional accuracy). Train one
with ``python -m lightning_gen.metrics.classifier`` and reload it with :func:`load_classifier`.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable
from typing import Any, Union

import torch
from torch import Tensor, nn

from lightning_gen.nets.layers import check_images

__all__ = ["ImageClassifier", "save_classifier", "load_classifier", "CLASSIFIER_MIN_IMAGE_SIZE"]

CLASSIFIER_MIN_IMAGE_SIZE = 16
_FORMAT = "lightning_gen.ImageClassifier/2"  # 2: with feature_scale


def _train_command(path: Path) -> str:
    """The shell command that trains and saves a classifier to ``path``."""
    return (
        "python -m lightning_gen.metrics.classifier --dataset {mnist,fashion_mnist,cifar10} --root <data folder> "
        f"--out {path} --epochs 3"
    )


def _stage_count(image_size: int) -> int:
    """Number of conv + 2x2 max-pool stages: halve until the side is at most 8, and at least twice (28 -> 7)."""
    side, stages = image_size, 0
    while side > 8 or stages < 2:
        side //= 2
        stages += 1
    return stages


class ImageClassifier(nn.Module):
    """Small CNN classifier for ``(N, channels, image_size, image_size)`` images in [-1, 1]; exposes its features.

    Stages of 3x3 conv (``base_channels`` doubling per stage, at most 4x) + ReLU + 2x2 max-pool until the maps are
    at most 8x8 (7x7 for 28 px, 8x8 for 32 and 64 px), then a ``feature_dim`` linear layer + ReLU (the features)
    and a linear layer to ``num_classes`` logits. At 28 px with the defaults it is the classic two-conv MNIST CNN
    (about 99 % test accuracy on full MNIST after a few epochs).

    ``features`` are the penultimate activations divided by the buffer ``feature_scale``, which
    :meth:`calibrate_feature_scale_` sets after training to their root mean square over the real images: the
    features then have unit scale, as Inception's pool features roughly do, which KID's default polynomial kernel
    ``(x.y / d + 1)^3`` assumes (unscaled ReLU features make its values huge and noisy).
    """

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        base_channels: int = 32,
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        if image_size < CLASSIFIER_MIN_IMAGE_SIZE:
            raise ValueError(
                f"ImageClassifier needs image_size >= {CLASSIFIER_MIN_IMAGE_SIZE}, got {image_size}; resize your "
                "images (e.g. the data module's image_size argument)"
            )
        for name, value in (("channels", channels), ("base_channels", base_channels), ("feature_dim", feature_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (a classifier needs at least two classes), got {num_classes}")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.num_classes = int(num_classes)
        self.base_channels = int(base_channels)
        self.feature_dim = int(feature_dim)
        self.image_shape: tuple[int, int, int] = (self.channels, self.image_size, self.image_size)

        layers: list[nn.Module] = []
        in_ch, side = self.channels, self.image_size
        for stage in range(_stage_count(self.image_size)):
            out_ch = self.base_channels * 2 ** min(stage, 2)
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch, side = out_ch, side // 2
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(in_ch * side * side, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    def init_kwargs(self) -> dict[str, int]:
        """The constructor arguments that rebuild this architecture (what :func:`save_classifier` stores)."""
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "num_classes": self.num_classes,
            "base_channels": self.base_channels,
            "feature_dim": self.feature_dim,
        }

    def _hidden(self, x: Tensor) -> Tensor:
        check_images(x, self.image_shape, type(self).__name__)
        return self.hidden(self.conv(x))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``(N, feature_dim)`` (after the ReLU) divided by ``feature_scale``."""
        return self._hidden(x) / self.feature_scale

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, num_classes)``."""
        return self.head(self._hidden(x))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(features(x), forward(x))`` from one pass through the net."""
        h = self._hidden(x)
        return h / self.feature_scale, self.head(h)

    @torch.no_grad()
    def calibrate_feature_scale_(self, batches: Iterable[Any]) -> float:
        """Set ``feature_scale`` to the root mean square of the unscaled features over ``batches`` (images, or
        ``(images, labels)``) in eval mode, so the features have unit scale; return it."""
        was_training = self.training
        self.eval()
        device = self.feature_scale.device
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            h = self._hidden(images.to(device))
            total += h.double().pow(2).sum()
            count += h.numel()
        self.train(was_training)
        if count == 0 or total <= 0:
            raise ValueError("calibrate_feature_scale_ needs images on which some features are non-zero")
        self.feature_scale.fill_(float((total / count).sqrt()))
        return float(self.feature_scale)


def save_classifier(net: ImageClassifier, path: Union[str, Path]) -> Path:
    """Write ``net``'s constructor arguments and weights to ``path`` (folders created); return the path."""
    if not isinstance(net, ImageClassifier):
        raise TypeError(f"save_classifier saves an ImageClassifier, got {type(net).__name__}")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"format": _FORMAT, "kwargs": net.init_kwargs(), "state_dict": state}, path)
    return path


def load_classifier(path: Union[str, Path], map_location: Any = "cpu") -> ImageClassifier:
    """Rebuild an :class:`ImageClassifier` written by :func:`save_classifier`, in eval mode."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"No classifier checkpoint at {path} ({path.resolve()}). Train one on the real images of your data set "
            f"with:\n  {_train_command(path)}\nor point the path at an existing file."
        )
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(
            f"{path} is not a classifier checkpoint written by lightning_gen.nets.save_classifier; train one with:\n"
            f"  {_train_command(path)}"
        )
    net = ImageClassifier(**ckpt["kwargs"])
    net.load_state_dict(ckpt["state_dict"])
    # the loaded tensors sit where map_location put them; move the net there too (load_state_dict copies to CPU)
    return net.to(next(iter(ckpt["state_dict"].values())).device).eval()
