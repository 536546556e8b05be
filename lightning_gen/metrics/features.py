"""Feature extractors for image metrics: the standard Inception network or any ``nn.Module``, with the input
conversion each one needs (value range, grayscale to RGB, resizing) done explicitly in one place.

Images handed to every metric in this package are float tensors ``(N, C, H, W)`` in ``data_range`` — ``(-1, 1)`` by
default, which is what our generators emit and our data modules yield; pass ``data_range=(0, 1)`` for images in
[0, 1]. Values outside the range raise instead of being clipped silently. An extractor then

1. rescales the images to [0, 1],
2. repeats a single channel three times when its network wants RGB (grayscale digits for Inception), and refuses
   other channel mismatches,
3. resizes (bilinear, antialiased) to the network's input size when it has a fixed one,
4. converts to the network's own input range (``"minus_one_one"``, ``"zero_one"`` or ``"uint8"``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.nets.weights import find_weights

__all__ = [
    "ClassifierFeatureExtractor",
    "FeatureExtractor",
    "INCEPTION_WEIGHTS_ENV",
    "InceptionFeatureExtractor",
    "InceptionWeightsNotFoundError",
    "check_data_range",
]

INCEPTION_WEIGHTS_ENV = "LIGHTNING_GEN_INCEPTION_WEIGHTS"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
_NET_RANGES = ("minus_one_one", "zero_one", "uint8")
_RANGE_TOLERANCE = 1e-3


class InceptionWeightsNotFoundError(FileNotFoundError):
    """The Inception weights are not on this machine and may not be downloaded."""


def check_data_range(images: Tensor, data_range: tuple[float, float]) -> None:
    """Raise a ``ValueError`` that says what to do when ``images`` are not float ``(N, C, H, W)`` in ``data_range``."""
    if images.ndim != 4:
        raise ValueError(f"image metrics expect a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"image metrics expect float images in {data_range}, got dtype {images.dtype}: convert uint8 images "
            "with `images.float() / 255` and pass data_range=(0, 1)"
        )
    lo, hi = data_range
    if not lo < hi:
        raise ValueError(f"data_range must be (low, high) with low < high, got {data_range}")
    if images.numel() == 0:
        return
    found_lo, found_hi = float(images.min()), float(images.max())
    slack = _RANGE_TOLERANCE * (hi - lo)
    if found_lo < lo - slack or found_hi > hi + slack or found_lo != found_lo:
        hint = " (they look like [0, 255] pixels: divide by 255 and pass data_range=(0, 1))" if found_hi > 2 else ""
        raise ValueError(
            f"images must lie in data_range={tuple(data_range)}, found values in [{found_lo:.4g}, {found_hi:.4g}]"
            f"{hint}. Images in [0, 1] need data_range=(0, 1); generator outputs in [-1, 1] (tanh) need the default."
        )


class FeatureExtractor(nn.Module):
    """Wraps any network that maps images to feature vectors (and optionally class logits) for FID/KID/IS/PR.

    ``net(x)`` must return ``(N, D)`` features, a tuple ``(features, logits)``, or the net may have a
    ``features_and_logits(x)`` method (our :class:`~lightning_gen.nets.ImageClassifier` has one). ``channels`` and
    ``image_size`` are what the net takes (``None``: whatever comes in); ``net_range`` is the value range it takes.
    ``name`` goes into the real-statistics cache key together with a hash of the weights.
    """

    def __init__(
        self,
        net: nn.Module,
        channels: Optional[int] = None,
        image_size: Optional[int] = None,
        net_range: str = "minus_one_one",
        name: Optional[str] = None,
        num_features: Optional[int] = None,
    ) -> None:
        super().__init__()
        if net_range not in _NET_RANGES:
            raise ValueError(f"net_range must be one of {_NET_RANGES}, got {net_range!r}")
        self.net = net.eval().requires_grad_(False)
        self.channels = channels
        self.image_size = image_size
        self.net_range = net_range
        self.name = name or type(net).__name__
        if num_features is None:
            guess = getattr(net, "num_features", getattr(net, "feature_dim", None))
            num_features = guess if isinstance(guess, int) else None
        self._num_features = num_features
        self._fingerprint: Optional[str] = None
        self._resize: Optional[str] = None  # a net that resizes inside says how (see ``resize``)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Stay in evaluation mode: an extractor is never trained by the metrics (BatchNorm must not update)."""
        return super().train(False)

    @property
    def num_features(self) -> int:
        """Length of the feature vector (found by one forward pass when the net does not say)."""
        if self._num_features is None:
            if self.channels is None or self.image_size is None:
                raise ValueError(
                    f"{type(self).__name__} cannot infer the feature size of {self.name}: pass num_features, or "
                    "channels and image_size"
                )
            dummy = torch.zeros(1, self.channels, self.image_size, self.image_size, device=self._device())
            self._num_features = int(self.extract(dummy, check=False)[0].shape[1])
        return self._num_features

    @property
    def resize(self) -> str:
        """How images reach the net's input size, as reference statistics record it (:mod:`lightning_gen.metrics.
        stats`): ``none``, ``bilinear-antialias-<size>px`` (:meth:`preprocess`) or the net's own."""
        if self._resize is not None:
            return self._resize
        return "none" if self.image_size is None else f"bilinear-antialias-{self.image_size}px"

    def _device(self) -> torch.device:
        tensor = next(iter(self.net.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.net.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def preprocess(self, images: Tensor, data_range: tuple[float, float] = (-1.0, 1.0), check: bool = True) -> Tensor:
        """Images in ``data_range`` -> the net's channels, size and value range (see the module docstring)."""
        if check:
            check_data_range(images, data_range)
        lo, hi = data_range
        x = ((images.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] == 1 and self.channels == 3:
                x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB by repeating the channel
            else:
                raise ValueError(
                    f"{self.name} takes {self.channels}-channel images, got {x.shape[1]} channels: only 1 -> 3 "
                    "(grayscale to RGB) is converted automatically; pass an extractor made for this data"
                )
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True).clamp(0.0, 1.0)
        if self.net_range == "minus_one_one":
            return x * 2 - 1
        if self.net_range == "uint8":
            return (x * 255).round().to(torch.uint8)
        return x

    def _run_net(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        if hasattr(self.net, "features_and_logits"):
            out = self.net.features_and_logits(x)
        else:
            out = self.net(x)
        if isinstance(out, (tuple, list)):
            features, logits = out[0], (out[1] if len(out) > 1 else None)
        else:
            features, logits = out, None
        return features.flatten(1), None if logits is None else logits.flatten(1)

    @torch.no_grad()
    def extract(
        self, images: Tensor, data_range: tuple[float, float] = (-1.0, 1.0), check: bool = True
    ) -> tuple[Tensor, Optional[Tensor]]:
        """``(features (N, D), logits (N, K) or None)`` of images in ``data_range``, as float32."""
        features, logits = self._run_net(self.preprocess(images.to(self._device()), data_range, check))
        return features.float(), None if logits is None else logits.float()

    def forward(self, images: Tensor) -> Tensor:
        """Features of images in [-1, 1] (the form torchmetrics' ``feature=`` argument calls)."""
        return self.extract(images)[0]

    def fingerprint(self) -> str:
        """``name`` plus a hash of the weights and the input conversion: part of the real-statistics cache key."""
        if self._fingerprint is None:
            digest = hashlib.sha1(repr((self.name, self.channels, self.image_size, self.net_range)).encode())
            for key, tensor in sorted(self.net.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = f"{self.name}-{digest.hexdigest()[:16]}"
        return self._fingerprint


def _inception_weights(weights_path: Optional[Union[str, Path]], download: bool) -> Optional[Path]:
    """Where the Inception weights are: argument, environment variable, torch hub cache; ``None`` means download."""
    return find_weights("Inception", weights_path, INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE, download,
                        InceptionWeightsNotFoundError, lambda cached: (
        f"The FID/IS/KID Inception weights ({INCEPTION_WEIGHTS_FILE}) are not on this machine and download=False. "
        f"Either download {INCEPTION_WEIGHTS_URL} on a machine with internet and point "
        f"${INCEPTION_WEIGHTS_ENV} (or weights_path) at it, or copy it to {cached}; or set download=True here; or "
        "pass another extractor, e.g. lightning_gen.metrics.ClassifierFeatureExtractor(checkpoint=...) trained "
        "with `python -m lightning_gen.metrics.classifier` (for digits and other small images)."
    ))


class InceptionFeatureExtractor(FeatureExtractor):
    """The standard FID Inception-v3 (torch-fidelity's port of the TF graph): pool features and 1008 logits.

    Weights are looked up, in order, at ``weights_path``, ``$LIGHTNING_GEN_INCEPTION_WEIGHTS`` and the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``); only ``download=True`` fetches them. Missing weights raise
    :class:`InceptionWeightsNotFoundError` at once, with the ways to provide them. Images of any size and 1 or 3
    channels are accepted: grayscale is repeated to RGB and torch-fidelity resizes to 299 px like TF1 did.
    """

    def __init__(
        self, feature_dim: int = 2048, weights_path: Optional[str] = None, download: bool = False
    ) -> None:
        if feature_dim not in (64, 192, 768, 2048):
            raise ValueError(f"feature_dim must be one of 64, 192, 768, 2048 (Inception blocks), got {feature_dim}")
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as err:
            raise ModuleNotFoundError(
                "InceptionFeatureExtractor needs torch-fidelity: `pip install \"lightning_gen[inception]\"` (or "
                "`pip install torch-fidelity`), or pass another extractor such as "
                "lightning_gen.metrics.ClassifierFeatureExtractor."
            ) from err
        path = _inception_weights(weights_path, download)
        try:
            net = FeatureExtractorInceptionV3(
                "inception-v3-compat", [str(feature_dim), "logits_unbiased"],
                feature_extractor_weights_path=None if path is None else str(path),
            )
        except OSError as err:  # the download failed (URLError is an OSError)
            raise InceptionWeightsNotFoundError(
                f"Downloading the Inception weights from {INCEPTION_WEIGHTS_URL} failed ({err!r}). Download the file "
                f"elsewhere and set ${INCEPTION_WEIGHTS_ENV} to its path, or pass another extractor."
            ) from err
        super().__init__(net, channels=3, image_size=None, net_range="uint8", name=f"inception-v3-{feature_dim}",
                         num_features=feature_dim)
        self._resize = "tf1-bilinear-299px"  # torch-fidelity's network resizes inside, as TF1 did

    def _run_net(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        features, logits = self.net(x)
        return features.flatten(1), logits.flatten(1)


class ClassifierFeatureExtractor(FeatureExtractor):
    """Features and logits of a small :class:`~lightning_gen.nets.ImageClassifier` saved at ``checkpoint`` (the
    offline choice for MNIST-like data; train one with ``python -m lightning_gen.metrics.classifier``).

    With ``train_if_missing=True`` a missing checkpoint is not an error: the first
    :class:`~lightning_gen.callbacks.GenerativeMetricsCallback` that uses the extractor trains the classifier on the
    data module's training images and labels (``epochs`` epochs, seed ``seed``; under DDP rank 0 trains and sends
    the weights to the others) and saves it at ``checkpoint``, so later runs reuse it. Inputs are resized to the classifier's
    image size and converted to its channel count (1 -> 3 only).
    """

    def __init__(
        self,
        checkpoint: str,
        map_location: Any = "cpu",
        train_if_missing: bool = False,
        epochs: int = 2,
        seed: int = 0,
    ) -> None:
        from lightning_gen.nets.classifier import load_classifier

        self.checkpoint = Path(checkpoint).expanduser()
        self.train_epochs, self.train_seed, self.map_location = epochs, seed, map_location
        if train_if_missing and not self.checkpoint.is_file():
            # placeholder until train_on() builds the real net: nothing may extract features before that
            super().__init__(nn.Identity(), net_range="minus_one_one", name=f"classifier-{self.checkpoint.stem}")
            self.needs_training = True
            return
        net = load_classifier(self.checkpoint, map_location=map_location)
        self.use(net)

    def use(self, net: nn.Module) -> None:
        """Extract with ``net`` (an :class:`~lightning_gen.nets.ImageClassifier`) from now on."""
        if "_modules" not in self.__dict__:  # the first net: nn.Module is not initialized yet
            super().__init__(net, channels=net.channels, image_size=net.image_size, net_range="minus_one_one",
                             name=f"classifier-{self.checkpoint.stem}", num_features=net.feature_dim)
        else:
            self.net = net.eval().requires_grad_(False)
            self.channels, self.image_size, self._num_features = net.channels, net.image_size, net.feature_dim
            self._fingerprint = None
        self.needs_training = False

    def extract(
        self, images: Tensor, data_range: tuple[float, float] = (-1.0, 1.0), check: bool = True
    ) -> tuple[Tensor, Optional[Tensor]]:
        """``(features, logits)``, once the classifier exists (see :meth:`train_on`)."""
        if self.needs_training:
            raise RuntimeError(
                f"the classifier {self.checkpoint} has not been trained yet: GenerativeMetricsCallback trains it at "
                "setup, or call train_on(loader, image_shape, num_classes) yourself"
            )
        return super().extract(images, data_range, check)

    def train_on(self, loader: Any, image_shape: tuple[int, int, int], num_classes: int) -> Path:
        """Train an ImageClassifier on ``(images in [-1, 1], labels)`` batches, calibrate its feature scale on them,
        save it at ``checkpoint`` and use it.

        The global random state is left untouched (training runs under ``torch.random.fork_rng`` with ``seed``).
        """
        from lightning_gen.metrics.classifier import train_classifier
        from lightning_gen.nets.classifier import ImageClassifier, save_classifier

        if num_classes < 2:
            raise ValueError(
                f"ClassifierFeatureExtractor(train_if_missing=True) trains on class labels, but the data has "
                f"num_classes={num_classes}: train a classifier on labelled images of this kind with "
                "`python -m lightning_gen.metrics.classifier`, or pass another extractor"
            )
        channels, height, width = image_shape
        if height != width:
            raise ValueError(f"the classifier takes square images, got {height}x{width}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.train_seed)
            net = ImageClassifier(image_size=height, channels=channels, num_classes=num_classes)
            accuracy = train_classifier(net, loader, epochs=self.train_epochs, log=None)
            net.calibrate_feature_scale_(loader)
        save_classifier(net, self.checkpoint)
        self.use(net.eval())
        self.train_accuracy = accuracy
        return self.checkpoint

