"""FID / KID / Inception Score / precision-recall of a model's samples, every few epochs and on ``test``.

Real-data features are computed once and cached on disk, keyed by data set, split, size and extractor, so later
evaluations (and later runs) only pay for the generated samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_gen.metrics.features import FeatureExtractor
from lightning_gen.metrics.image import (
    as_feature_extractor,
    inception_score,
    kernel_inception_distance,
)
from lightning_gen.metrics.precision_recall import improved_precision_recall, knn_radii
from lightning_gen.metrics.stats import ReferenceStatistics, extractor_provenance

__all__ = ["GenerativeMetricsCallback", "default_cache_dir"]

METRICS = ("fid", "kid", "inception_score", "precision_recall")
CACHE_ENV = "LIGHTNING_GEN_CACHE"
# data-module settings that do not change which images a split holds
_KEY_IGNORED_HPARAMS = {"batch_size", "num_workers", "pin_memory", "predict_size", "download"}


def default_cache_dir() -> Path:
    """``$LIGHTNING_GEN_CACHE/real_features``, else ``~/.cache/lightning_gen/real_features``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "lightning_gen") / "real_features"


def _images_of(dataset: Any, indices: list[int]) -> Tensor:
    """The images (first element of each item) at ``indices``, batched."""
    if hasattr(dataset, "__getitems__"):
        items = dataset.__getitems__(indices)
        if isinstance(items, (list, tuple)) and len(items) == 2 and isinstance(items[0], Tensor):
            return items[0]
        items = list(items)
    else:
        items = [dataset[i] for i in indices]
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])


class GenerativeMetricsCallback(L.Callback):
    """Every ``every_n_epochs`` training epochs (and after ``test``), draws ``num_samples`` samples with the module's
    ``sample()`` (the EMA generator when the module has one) and logs FID, KID, IS and improved precision/recall.

    Args:
        extractor: feature network (any ``nn.Module``; ``None``: the standard Inception-v3, which needs its weights
            offline, see :class:`~lightning_gen.metrics.InceptionFeatureExtractor`). For digits use
            :class:`~lightning_gen.metrics.ClassifierFeatureExtractor`.
        metrics: any of ``fid``, ``kid``, ``inception_score``, ``precision_recall``.
        num_samples: generated samples per evaluation (sample ``i`` comes from seed ``seed + i // batch_size``, so
            every evaluation uses the same noise, whatever the number of processes).
        num_real: real images in the reference set (default ``num_samples``, capped at the split's size): the whole
            split, or ``num_real`` of its images drawn at random with ``seed`` (the same ones every time).
        batch_size: samples generated and embedded at once.
        every_n_epochs: evaluate after every n-th training epoch; ``None``: only on ``test``.
        fit_split / test_split: the data module's split the samples are compared with during fit / on test.
        on_test: evaluate after ``trainer.test`` (keys ``test/...``; during fit the keys are ``val/...``).
        data_range: the value range of the model's samples and of the data (``(-1, 1)`` for tanh generators).
        cache_dir: where real features are cached (default :func:`default_cache_dir`); ``False`` turns the disk cache
            off (features are still kept in memory for the run).
        kid_subsets / kid_subset_size / is_splits / pr_k: the metrics' usual settings.
        reference: a reference statistics file (:mod:`lightning_gen.metrics.stats`: ``.pt``, or ``.npz`` in
            pytorch-fid's layout) that FID is computed against instead of the split's images; one computed with
            another extractor, resize or data range is refused, naming the difference. KID and precision/recall
            still compare with the split's images (they need the features, not only their mean and covariance).
        fid_bootstrap: with B > 0, also log ``<stage>/fid_std``: the standard deviation of FID over B bootstrap
            resamples of the generated features (seeded; the reference fixed), i.e. how much FID moves with the
            draw of ``num_samples`` samples. ``kid_std`` is another kind of spread: the standard deviation of the
            KID estimates of the ``kid_subsets`` subsets, each of ``kid_subset_size`` samples.

    Logged keys: ``<stage>/fid`` (and ``<stage>/fid_std`` with ``fid_bootstrap``), ``<stage>/kid`` and
    ``<stage>/kid_std``, ``<stage>/inception_score`` and
    ``<stage>/inception_score_std``, ``<stage>/precision`` and ``<stage>/recall``. Under DDP each process generates
    and embeds its share, the features are gathered in a fixed order, and every process computes and logs the same
    values as a single process would.
    """

    def __init__(
        self,
        extractor: Optional[nn.Module] = None,
        metrics: Sequence[str] = METRICS,
        num_samples: int = 10_000,
        num_real: Optional[int] = None,
        batch_size: int = 500,
        every_n_epochs: Optional[int] = 1,
        fit_split: str = "train",
        test_split: str = "test",
        on_test: bool = True,
        data_range: tuple[float, float] = (-1.0, 1.0),
        cache_dir: Optional[Union[str, Path, bool]] = None,
        seed: int = 0,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        pr_k: int = 3,
        reference: Optional[Union[str, Path]] = None,
        fid_bootstrap: int = 0,
    ) -> None:
        super().__init__()
        names = ["inception_score" if m == "is" else m for m in metrics]
        unknown = sorted(set(names) - set(METRICS))
        if unknown or not names:
            raise ValueError(f"metrics must be a non-empty selection of {METRICS}, got {list(metrics)}")
        if num_samples < 2 or batch_size < 1 or (num_real is not None and num_real < 2):
            raise ValueError(f"need num_samples >= 2, num_real >= 2 and batch_size >= 1, got {num_samples}, "
                             f"{num_real}, {batch_size}")
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1 or None, got {every_n_epochs}")
        self.metrics = tuple(dict.fromkeys(names))
        self.num_samples, self.num_real, self.batch_size = num_samples, num_real, batch_size
        self.every_n_epochs, self.on_test = every_n_epochs, on_test
        self.fit_split, self.test_split = fit_split, test_split
        self.data_range = (float(data_range[0]), float(data_range[1]))
        self.cache_dir = None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir()
        self.seed = seed
        self.kid_subsets, self.kid_subset_size, self.is_splits, self.pr_k = kid_subsets, kid_subset_size, is_splits, pr_k
        if fid_bootstrap < 0:
            raise ValueError(f"fid_bootstrap must be >= 0 (0: off), got {fid_bootstrap}")
        self.fid_bootstrap = fid_bootstrap
        self.reference = None if reference is None else Path(reference)
        # read now, so a missing or malformed file fails before training does; checked against the extractor once built
        self._reference = None if reference is None else ReferenceStatistics.load(reference)
        self._extractor_arg = extractor
        self.extractor: Optional[FeatureExtractor] = None
        self._real: dict[str, Tensor] = {}
        self._real_radii: dict[str, Tensor] = {}
        self._kid_cache: dict[tuple[str, int], dict[int, tuple[Tensor, Tensor]]] = {}
        self.last: dict[str, float] = {}
        self.last_seconds: dict[str, float] = {}

    # -- set-up ---------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Build the extractor before training, so missing Inception weights fail before training does; train a
        ``ClassifierFeatureExtractor(train_if_missing=True)`` whose checkpoint does not exist yet. This runs after
        every ``setup`` (the module's checks of its nets against the data come first); ``every_n_epochs=None``
        builds nothing."""
        if self.every_n_epochs is not None:
            self._prepare_extractor(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Build (or train) the extractor before the test batches, after the module's set-up checks."""
        if self.on_test:
            self._prepare_extractor(trainer)

    def _prepare_extractor(self, trainer: L.Trainer) -> FeatureExtractor:
        """Build the extractor once (and train a missing classifier); return it."""
        if self.extractor is None:
            self.extractor = as_feature_extractor(self._extractor_arg)
        if getattr(self.extractor, "needs_training", False):
            self._train_extractor(trainer)
        if self._reference is not None and not getattr(self, "_reference_checked", False):
            self._reference.check(extractor_provenance(self.extractor, self.data_range),
                                  source=f"the reference statistics {str(self.reference)!r}")
            self._reference_checked = True
        return self.extractor

    def _train_extractor(self, trainer: L.Trainer) -> None:
        """Rank 0 trains the classifier on the data module's training split and saves it; the others receive it."""
        extractor = self.extractor
        datamodule = trainer.datamodule
        if trainer.is_global_zero:
            if datamodule is None or not hasattr(datamodule, "train_dataloader"):
                raise ValueError("ClassifierFeatureExtractor(train_if_missing=True) trains on the data module's "
                                 "train_dataloader(): run with a data module, or train the classifier beforehand")
            if trainer.state.fn != "fit":  # test/validate set up only their own split
                datamodule.setup("fit")
            shape = getattr(datamodule, "image_shape", None)
            num_classes = int(getattr(datamodule, "num_classes", 0) or 0)
            if shape is None:
                shape = tuple(_images_of(self._dataset(trainer, "train"), [0]).shape[1:])
            start = time.perf_counter()
            # test and validate run their hooks under inference mode, in which nothing can be trained
            with torch.inference_mode(False), torch.enable_grad():
                path = extractor.train_on(datamodule.train_dataloader(), tuple(shape), num_classes)
            rank_zero_info(f"GenerativeMetricsCallback: trained the feature classifier in "
                           f"{time.perf_counter() - start:.0f} s (train accuracy "
                           f"{100 * extractor.train_accuracy:.2f} %) and saved it to {path}")
        # every process gets rank 0's weights (no shared file system needed across nodes)
        net = trainer.strategy.broadcast(extractor.net.cpu() if trainer.is_global_zero else None, src=0)
        if not trainer.is_global_zero:
            extractor.use(net)

    def state_dict(self) -> dict[str, Any]:
        """Nothing to resume: the cache lives on disk."""
        return {}

    # -- sharded work, gathered in a fixed order ------------------------------------------------------------------
    def _sharded(self, trainer: L.Trainer, num_items: int, work: Callable[[int, int], Tensor]) -> Tensor:
        """Run ``work(start, stop)`` for each ``batch_size`` chunk of ``range(num_items)``, chunks dealt round-robin
        to the processes, and return every chunk's rows concatenated in chunk order on every process."""
        world, rank = trainer.world_size, trainer.global_rank
        starts = list(range(0, num_items, self.batch_size))
        mine = [work(s, min(s + self.batch_size, num_items)) for s in starts[rank::world]]
        if world == 1:
            return torch.cat(mine)
        per_rank = -(-len(starts) // world)
        width = mine[0].shape[1] if mine else None
        width = int(trainer.strategy.broadcast(width, src=0))
        padded = torch.zeros(per_rank, self.batch_size, width, device=trainer.strategy.root_device)
        for j, rows in enumerate(mine):
            padded[j, : rows.shape[0]] = rows
        gathered = trainer.strategy.all_gather(padded)  # (world, per_rank, batch_size, width)
        chunks = []
        for i, s in enumerate(starts):
            size = min(s + self.batch_size, num_items) - s
            chunks.append(gathered[i % world, i // world, :size])
        return torch.cat(chunks)

    # -- real features --------------------------------------------------------------------------------------------
    def _dataset(self, trainer: L.Trainer, split: str) -> Any:
        datamodule = trainer.datamodule
        loader_fn = getattr(datamodule, f"{split}_dataloader", None) if datamodule is not None else None
        if loader_fn is None:
            raise ValueError(
                f"GenerativeMetricsCallback compares samples with the data module's {split!r} split: fit/test with a "
                f"data module that has {split}_dataloader() (or set fit_split/test_split)"
            )
        loader = loader_fn()
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__"):
            raise ValueError(f"the {split!r} data loader has no sized dataset to take reference images from")
        return dataset

    def _cache_key(self, trainer: L.Trainer, split: str, size: int, dataset_len: int) -> str:
        datamodule = trainer.datamodule
        hparams = {}
        for key, value in dict(getattr(datamodule, "hparams", {})).items():
            if key in _KEY_IGNORED_HPARAMS:
                continue
            # data folders by where they resolved (a left-out root follows LIGHTNING_GEN_DATA)
            folder = getattr(datamodule, key, None)
            if isinstance(folder, Path):
                hparams[key] = str(folder.expanduser().resolve())
            else:
                hparams[key] = str(Path(value).expanduser().resolve()) if key == "root" and value else repr(value)
        assert self.extractor is not None
        description = {
            "data": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}",
            "hparams": hparams,
            "split": split,
            "split_size": dataset_len,
            "size": size,
            # which images: all of the split, or a seeded random subset (v2; v1 took the first `size`)
            "subset": "all" if size == dataset_len else f"random-v2-seed{self.seed}",
            "extractor": self.extractor.fingerprint(),
            "data_range": self.data_range,
        }
        digest = hashlib.sha1(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
        return f"{type(datamodule).__name__}-{split}-{size}-{self.extractor.name}-{digest}"

    def _real_indices(self, size: int, dataset_len: int) -> list[int]:
        """The reference images of a split: all of them, or ``size`` drawn at random with ``seed`` (in index order).
        Never the first ``size``: data sets stored sorted by class (e.g. MNIST digits grouped by label) would give
        a reference set of a few classes."""
        if size >= dataset_len:
            return list(range(dataset_len))
        chosen = torch.randperm(dataset_len, generator=torch.Generator().manual_seed(self.seed))[:size]
        return sorted(chosen.tolist())

    def _real_features(self, trainer: L.Trainer, split: str) -> tuple[str, Tensor]:
        """``(cache key, features)`` of the split's reference images: from memory, the disk cache, or computed."""
        dataset = self._dataset(trainer, split)
        size = min(self.num_real or self.num_samples, len(dataset))
        if size < 2:
            raise ValueError(
                f"GenerativeMetricsCallback compares samples with the data module's {split!r} split, which holds "
                f"{len(dataset)} image(s); the metrics need at least 2 (thousands are usual): give that split more "
                "images (e.g. a larger val_fraction) or choose another with fit_split/test_split"
            )
        key = self._cache_key(trainer, split, size, len(dataset))
        if key in self._real:
            return key, self._real[key]
        path = self.cache_dir / f"{key}.pt" if self.cache_dir is not None else None
        features = None
        if path is not None and trainer.strategy.broadcast(path.is_file(), src=0):
            loaded = torch.load(path, map_location="cpu", weights_only=True) if trainer.is_global_zero else None
            features = trainer.strategy.broadcast(loaded, src=0)
        if features is None:
            start = time.perf_counter()
            assert self.extractor is not None
            indices = self._real_indices(size, len(dataset))
            features = self._sharded(
                trainer, size,
                lambda a, b: self.extractor.extract(_images_of(dataset, indices[a:b]), self.data_range)[0],
            ).cpu()
            if path is not None and trainer.is_global_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save(features, tmp)
                os.replace(tmp, path)  # atomic: a concurrent run never reads half a file
                rank_zero_info(f"GenerativeMetricsCallback: real features of {size} {split} images computed in "
                               f"{time.perf_counter() - start:.1f} s and cached at {path}")
        self._real[key] = features
        return key, features

    # -- generated features and metrics ---------------------------------------------------------------------------
    def _generated_features(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, Tensor]:
        """``(features, logits)`` of ``num_samples`` samples (logits empty when the extractor has none)."""
        assert self.extractor is not None

        def work(start: int, stop: int) -> Tensor:
            generator = torch.Generator().manual_seed(self.seed + start // self.batch_size)
            samples = pl_module.sample(stop - start, generator=generator)
            features, logits = self.extractor.extract(samples, self.data_range)
            return features if logits is None else torch.cat([features, logits], dim=1)

        both = self._sharded(trainer, self.num_samples, work)
        d = self.extractor.num_features
        return both[:, :d], both[:, d:]

    def compute(
        self, real: Optional[Tensor], fake: Tensor, fake_logits: Optional[Tensor] = None,
        real_radii: Optional[Tensor] = None, kid_cache: Optional[dict[int, tuple[Tensor, Tensor]]] = None,
    ) -> dict[str, float]:
        """The chosen metrics from real and generated features (and the generated samples' class logits;
        ``real_radii``: the real set's k-NN radii for precision/recall, when already known). FID is against the
        ``reference`` statistics when given (``real`` may then be ``None`` if no other metric needs it);
        ``kid_cache``: the real-real kernel sums of earlier evaluations against the same real set (see
        :func:`~lightning_gen.metrics.kernel_inception_distance`)."""
        values: dict[str, float] = {}
        if "fid" in self.metrics:
            # the real Gaussian is fitted once, not again for every bootstrap draw
            reference = self._reference if self._reference is not None else ReferenceStatistics.from_features(real)
            fid = reference.frechet_distance
            values["fid"] = float(fid(fake))
            if self.fid_bootstrap:
                g = torch.Generator().manual_seed(self.seed)
                draws = [float(fid(fake[torch.randint(len(fake), (len(fake),), generator=g).to(fake.device)]))
                         for _ in range(self.fid_bootstrap)]
                values["fid_std"] = float(torch.tensor(draws, dtype=torch.float64).std())
        if "kid" in self.metrics:
            mean, std = kernel_inception_distance(real, fake, self.kid_subsets, self.kid_subset_size,
                                                  generator=torch.Generator().manual_seed(self.seed),
                                                  real_cache=kid_cache)
            values["kid"], values["kid_std"] = float(mean), float(std)
        if "inception_score" in self.metrics:
            if fake_logits is None or fake_logits.shape[1] == 0:
                raise ValueError(
                    "inception_score needs class logits, but the extractor gives only features: remove "
                    "inception_score from `metrics` or use an extractor with logits (Inception, ImageClassifier)"
                )
            mean, std = inception_score(fake_logits, self.is_splits)
            values["inception_score"], values["inception_score_std"] = float(mean), float(std)
        if "precision_recall" in self.metrics:
            precision, recall = improved_precision_recall(real, fake, self.pr_k, real_radii=real_radii)
            values["precision"], values["recall"] = float(precision), float(recall)
        return values

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> dict[str, float]:
        """Compute the metrics of ``pl_module``'s samples against the data module's ``split`` (all processes)."""
        self._prepare_extractor(trainer).to(pl_module.device)
        start = time.perf_counter()
        needs_real = self._reference is None or any(m in self.metrics for m in ("kid", "precision_recall"))
        key, real = self._real_features(trainer, split) if needs_real else ("reference", None)
        if "precision_recall" in self.metrics and key not in self._real_radii:  # fixed real set: its radii once
            self._real_radii[key] = knn_radii(real.to(pl_module.device), self.pr_k)
        after_real = time.perf_counter()
        fake, fake_logits = self._generated_features(trainer, pl_module)
        after_fake = time.perf_counter()
        # the same seed and set sizes draw the same real KID subsets every evaluation: keep their kernel sums
        kid_cache = self._kid_cache.setdefault((key, len(fake)), {}) if "kid" in self.metrics else None
        values = self.compute(None if real is None else real.to(fake.device), fake, fake_logits,
                              self._real_radii.get(key), kid_cache)
        end = time.perf_counter()
        self.last_seconds = {"real": after_real - start, "generated": after_fake - after_real,
                             "compute": end - after_fake, "total": end - start}
        self.last = values
        return values

    def _log(self, pl_module: L.LightningModule, stage: str, values: dict[str, float]) -> None:
        # every process holds the same values; the (exact) mean over processes only keeps Lightning from warning
        logs = {f"{stage}/{k}": v for k, v in values.items()}
        if "fid" in values:
            pl_module.log(f"{stage}/fid", logs.pop(f"{stage}/fid"), sync_dist=True, prog_bar=True)
        if pl_module.trainer.state.fn == "fit":  # the x-axis: trainer.global_step (generator steps), not batches
            logs["step"], logs["epoch"] = float(pl_module.trainer.global_step), float(pl_module.current_epoch)
        pl_module.log_dict(logs, sync_dist=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate after every ``every_n_epochs``-th training epoch (keys ``val/...``)."""
        if self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._log(pl_module, "val", self.evaluate(trainer, pl_module, self.fit_split))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate after testing (keys ``test/...``)."""
        if self.on_test:
            self._log(pl_module, "test", self.evaluate(trainer, pl_module, self.test_split))
