"""Reference statistics for FID as files, with their provenance.

A :class:`ReferenceStatistics` holds what FID needs of the real images -- the features' mean and covariance and their
number -- plus where they came from: the extractor (name and a hash of its weights and input conversion), the resize
it applies, the data range the images were read in, the source (a data module split or an image folder) and a hash of
the list of images. Using the file with another extractor, resize or data range raises an error that names the
mismatch, since the numbers would not be comparable.

Files: ``.pt`` (this package's layout) or ``.npz`` in pytorch-fid's layout (``mu``, ``sigma``), so published
statistics can be read and ours read by other tools; our ``.npz`` files add the provenance as a JSON string
(``lightning_gen_provenance``), which other tools ignore. A foreign ``.npz`` has no provenance: it is used as is,
with a warning that nothing could be checked.

Compute them from the command line::

    python -m lightning_gen.metrics.stats --folder path/to/images --classifier checkpoints/mnist_classifier.pt \\
        --out stats/digits.npz
    python -m lightning_gen.metrics.stats --mnist data --split test --classifier checkpoints/mnist_classifier.pt \\
        --out stats/mnist_test.pt
    python -m lightning_gen.metrics.stats --folder path/to/images --inception --out stats/folder.npz

and pass the file to :class:`~lightning_gen.callbacks.GenerativeMetricsCallback` as ``reference`` (FID against it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from lightning_gen.metrics.features import FeatureExtractor
from lightning_gen.metrics.image import gaussian_frechet_distance

__all__ = ["ReferenceStatistics", "extractor_provenance", "file_list_hash", "main"]

PROVENANCE_KEY = "lightning_gen_provenance"
# provenance entries that must agree for two sets of statistics (or statistics and an extractor) to be comparable
CHECKED = ("extractor", "resize", "data_range", "num_features")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def extractor_provenance(extractor: FeatureExtractor, data_range: Sequence[float]) -> dict[str, Any]:
    """What an extractor contributes to the provenance: its fingerprint, its resize, the images' value range and
    the feature length."""
    return {"extractor": extractor.fingerprint(), "extractor_name": extractor.name, "resize": extractor.resize,
            "data_range": [float(data_range[0]), float(data_range[1])], "num_features": extractor.num_features}


def file_list_hash(names: Iterable[str]) -> str:
    """A short hash of the (sorted) image names that made a set of statistics."""
    digest = hashlib.sha1()
    for name in sorted(names):
        digest.update(name.encode() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class ReferenceStatistics:
    """The mean and covariance of a reference set's features (float64), their number, and their provenance."""

    mean: Tensor
    cov: Tensor
    num_images: int
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean, self.cov = torch.as_tensor(self.mean).double(), torch.as_tensor(self.cov).double()
        if self.mean.ndim != 1 or self.cov.shape != (self.mean.numel(), self.mean.numel()):
            raise ValueError(f"statistics need a (D,) mean and a (D, D) covariance, got {tuple(self.mean.shape)} and "
                             f"{tuple(self.cov.shape)}")

    @classmethod
    def from_features(cls, features: Tensor, **provenance: Any) -> "ReferenceStatistics":
        """Fit the Gaussian of ``(N, D)`` features in float64 (unbiased covariance, as :func:`frechet_distance`)."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need (N, D) features with N >= 2, got {tuple(features.shape)}")
        x = features.double()
        return cls(x.mean(0), torch.cov(x.T), int(x.shape[0]), dict(provenance))

    def save(self, path: Union[str, Path]) -> Path:
        """Write ``.npz`` (pytorch-fid's ``mu``/``sigma`` plus the provenance) or ``.pt``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        provenance = {**self.provenance, "num_images": self.num_images}
        if path.suffix == ".npz":
            np.savez(path, mu=self.mean.cpu().numpy(), sigma=self.cov.cpu().numpy(),
                     **{PROVENANCE_KEY: np.array(json.dumps(provenance, sort_keys=True))})
        else:
            torch.save({"mean": self.mean.cpu(), "cov": self.cov.cpu(), "num_images": self.num_images,
                        "provenance": provenance}, path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "ReferenceStatistics":
        """Read a file written by :meth:`save`, or a pytorch-fid ``.npz`` (``mu``, ``sigma``; no provenance)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No reference statistics at {str(path)!r}: compute them with `python -m "
                                    "lightning_gen.metrics.stats` (see its --help).")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "mu" not in data or "sigma" not in data:
                    raise ValueError(f"{str(path)!r} is not a statistics file: an .npz needs `mu` and `sigma` "
                                     f"(pytorch-fid's layout), it holds {sorted(data.files)}")
                provenance = json.loads(str(data[PROVENANCE_KEY])) if PROVENANCE_KEY in data else {}
                mean, cov = torch.from_numpy(data["mu"]), torch.from_numpy(data["sigma"])
            num = int(provenance.pop("num_images", 0))
            return cls(mean, cov, num, provenance)
        state = torch.load(path, map_location="cpu", weights_only=True)
        provenance = dict(state.get("provenance") or {})
        provenance.pop("num_images", None)
        return cls(state["mean"], state["cov"], int(state["num_images"]), provenance)

    def check(self, expected: dict[str, Any], source: str = "these statistics") -> None:
        """Raise ``ValueError`` naming every provenance entry (extractor, resize, data range, feature length) that
        differs from ``expected``; warn when the statistics carry no provenance (a foreign file)."""
        if not self.provenance:
            warnings.warn(f"{source} carry no provenance (a foreign .npz?): the extractor, resize and data range they "
                          "were computed with cannot be checked, so FID against them is comparable only if they match "
                          "yours.", UserWarning, stacklevel=2)
            return
        differ = [f"{key}: {self.provenance.get(key)!r} in the file, {expected.get(key)!r} here"
                  for key in CHECKED if key in self.provenance and key in expected
                  and _normal(self.provenance[key]) != _normal(expected[key])]
        if differ:
            raise ValueError(f"{source} do not match this evaluation, so FID against them would not be comparable: "
                             + "; ".join(differ) + ". Compute statistics with this extractor and settings "
                             "(python -m lightning_gen.metrics.stats), or evaluate with the file's.")

    def frechet_distance(self, features: Tensor) -> Tensor:
        """FID of ``(N, D)`` features against these statistics (float64; the same as :func:`frechet_distance`
        against the features the statistics came from)."""
        if features.ndim != 2 or features.shape[1] != self.mean.numel() or features.shape[0] < 2:
            raise ValueError(f"need (N >= 2, {self.mean.numel()}) features, got {tuple(features.shape)}")
        x = features.double().to(self.mean.device)  # where the statistics are (a file's: the CPU)
        return gaussian_frechet_distance(self.mean, self.cov, x.mean(0), torch.cov(x.T))


def _normal(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


def _folder_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively), sorted."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {str(folder)!r}.")
    return files


def _read_images(files: Sequence[Path], channels: Optional[int]) -> Tensor:
    """The files as a float batch in [0, 1] with ``channels`` channels (1: grayscale, else RGB)."""
    from PIL import Image

    mode = {1: "L", 3: "RGB"}.get(channels or 3, "RGB")
    arrays = []
    for path in files:
        with Image.open(path) as img:
            arrays.append(np.asarray(img.convert(mode), dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).float() / 255
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


def folder_statistics(folder: Union[str, Path], extractor: FeatureExtractor, batch_size: int = 250,
                      channels: Optional[int] = None) -> ReferenceStatistics:
    """Statistics of every image under ``folder`` (read in [0, 1], as ``channels`` channels: 1 grayscale, 3 RGB;
    default the extractor's); the images must share one size."""
    folder = Path(folder)
    files = _folder_images(folder)
    channels = channels or extractor.channels or 3
    chunks = [extractor.extract(_read_images(files[i:i + batch_size], channels), (0.0, 1.0))[0]
              for i in range(0, len(files), batch_size)]
    names = [str(p.relative_to(folder)) for p in files]
    return ReferenceStatistics.from_features(
        torch.cat(chunks), source=f"folder {folder.resolve()}", files=file_list_hash(names),
        **extractor_provenance(extractor, (0.0, 1.0)))


def datamodule_statistics(datamodule: Any, split: str, extractor: FeatureExtractor, batch_size: int = 250,
                          data_range: Sequence[float] = (-1.0, 1.0)) -> ReferenceStatistics:
    """Statistics of every image of a data module's split (its ``<split>_dataloader()``'s dataset, in order)."""
    datamodule.setup("test" if split == "test" else "fit")
    loader = getattr(datamodule, f"{split}_dataloader")()
    dataset = loader.dataset
    chunks = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])
        chunks.append(extractor.extract(images, tuple(data_range))[0])
    name = f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"
    return ReferenceStatistics.from_features(
        torch.cat(chunks), source=f"{name} {split} split", files=file_list_hash(map(str, range(len(dataset)))),
        **extractor_provenance(extractor, data_range))


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """The command line (see the module docstring); returns the file written."""
    parser = argparse.ArgumentParser(description="Compute FID reference statistics with their provenance.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="every image under this folder (recursively)")
    source.add_argument("--mnist", type=Path, metavar="ROOT", help="the MNIST data module's split (ROOT holds MNIST/)")
    parser.add_argument("--split", default="test", help="with --mnist: train, val or test (default test)")
    net = parser.add_mutually_exclusive_group(required=True)
    net.add_argument("--classifier", type=Path, help="a ClassifierFeatureExtractor checkpoint (e.g. MNIST digits)")
    net.add_argument("--inception", action="store_true", help="the standard Inception-v3 (weights offline, see README)")
    parser.add_argument("--inception-weights", type=Path, default=None, help="Inception weights file (--inception)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--out", type=Path, required=True, help=".npz (pytorch-fid layout) or .pt")
    args = parser.parse_args(argv)
    from lightning_gen.metrics.features import ClassifierFeatureExtractor, InceptionFeatureExtractor

    if args.classifier is not None:
        extractor: FeatureExtractor = ClassifierFeatureExtractor(str(args.classifier))
    else:
        extractor = InceptionFeatureExtractor(
            weights_path=None if args.inception_weights is None else str(args.inception_weights))
    if args.folder is not None:
        stats = folder_statistics(args.folder, extractor, args.batch_size)
    else:
        from lightning_gen.data import MNISTDataModule

        stats = datamodule_statistics(MNISTDataModule(root=str(args.mnist)), args.split, extractor, args.batch_size)
    path = stats.save(args.out)
    print(f"reference statistics of {stats.num_images} images ({stats.provenance['source']}; extractor "
          f"{stats.provenance['extractor']}, resize {stats.provenance['resize']}) written to {path}")
    return path


if __name__ == "__main__":
    main()
