"""Tests for lightning_gen/metrics/stats.py: reference statistics as files (ours and pytorch-fid's .npz), their
provenance checks, the command, and the metrics callback's FID against a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gen.callbacks import GenerativeMetricsCallback
from lightning_gen.metrics import ClassifierFeatureExtractor, FeatureExtractor, frechet_distance
from lightning_gen.metrics.stats import ReferenceStatistics, extractor_provenance, file_list_hash, main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))

from metrics_fakes import BlobImages, BlobSampler, SmallConvFeatures  # noqa: E402


def _features(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g) @ torch.randn(6, 6, generator=g) + shift


def test_statistics_are_the_float64_mean_and_unbiased_covariance_and_give_the_same_fid():
    real, fake = _features(400, 1), _features(300, 2, shift=0.5)
    stats = ReferenceStatistics.from_features(real)
    torch.testing.assert_close(stats.mean, real.double().mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(stats.cov, torch.from_numpy(np.cov(real.double().numpy().T)), rtol=1e-10, atol=1e-10)
    assert stats.num_images == 400 and stats.mean.dtype == torch.float64
    expected = float(frechet_distance(real, fake))
    assert expected > 0.1  # a case where a wrong value would show
    assert float(stats.frechet_distance(fake)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_files_round_trip_with_their_provenance(suffix, tmp_path):
    stats = ReferenceStatistics.from_features(_features(50, 3), extractor="net-abc", resize="none",
                                              data_range=[-1.0, 1.0], num_features=6, source="unit test")
    path = stats.save(tmp_path / f"s{suffix}")
    again = ReferenceStatistics.load(path)
    assert torch.equal(again.mean, stats.mean) and torch.equal(again.cov, stats.cov) and again.num_images == 50
    assert again.provenance == stats.provenance
    if suffix == ".npz":  # pytorch-fid's layout: mu (D,), sigma (D, D); our provenance as a JSON string beside them
        with np.load(path) as data:
            assert data["mu"].shape == (6,) and data["sigma"].shape == (6, 6)
            assert json.loads(str(data["lightning_gen_provenance"]))["source"] == "unit test"


def test_a_foreign_npz_is_used_as_is_with_a_warning_that_nothing_was_checked(tmp_path):
    real = _features(80, 4)
    np.savez(tmp_path / "published.npz", mu=real.double().mean(0).numpy(), sigma=np.cov(real.double().numpy().T))
    stats = ReferenceStatistics.load(tmp_path / "published.npz")
    assert stats.provenance == {} and stats.num_images == 0
    with pytest.warns(UserWarning, match="carry no provenance"):
        stats.check({"extractor": "anything"})
    fake = _features(60, 5, shift=1.0)
    assert float(stats.frechet_distance(fake)) == pytest.approx(float(frechet_distance(real, fake)), rel=1e-9)
    np.savez(tmp_path / "other.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match="needs `mu` and `sigma`"):
        ReferenceStatistics.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="python -m lightning_gen.metrics.stats"):
        ReferenceStatistics.load(tmp_path / "missing.npz")


def test_a_mismatched_extractor_resize_or_data_range_is_refused_by_name():
    a = FeatureExtractor(SmallConvFeatures())
    torch.manual_seed(1)
    b = FeatureExtractor(SmallConvFeatures(), image_size=32)  # other weights and a resize
    stats = ReferenceStatistics.from_features(_features(20, 6), **extractor_provenance(a, (-1, 1)))
    stats.check(extractor_provenance(a, (-1.0, 1.0)))  # the same: no error
    with pytest.raises(ValueError, match=r"extractor: .*resize: 'none' in the file, 'bilinear-antialias-32px' here"):
        stats.check(extractor_provenance(b, (-1, 1)))
    with pytest.raises(ValueError, match=r"data_range: \[-1.0, 1.0\] in the file, \[0.0, 1.0\] here"):
        stats.check(extractor_provenance(a, (0, 1)))


def test_the_command_computes_a_folders_statistics_with_the_extractor(tmp_path, mnist_classifier_path):
    folder = tmp_path / "digits"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(12)]
    for i, array in enumerate(arrays):  # recursively, in sorted order
        Image.fromarray(array).save(folder / ("sub" if i % 2 else ".") / f"{i:02d}.png")
    path = main(["--folder", str(folder), "--classifier", str(mnist_classifier_path), "--batch-size", "5",
                 "--out", str(tmp_path / "stats.npz")])
    stats = ReferenceStatistics.load(path)
    extractor = ClassifierFeatureExtractor(str(mnist_classifier_path))
    images = torch.from_numpy(np.stack(arrays)).float().div(255).unsqueeze(1)
    by_hand = extractor.extract(images, (0.0, 1.0))[0].double()
    assert stats.num_images == 12
    torch.testing.assert_close(stats.mean, by_hand.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats.cov, torch.cov(by_hand.T), rtol=1e-5, atol=1e-6)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    assert stats.provenance["files"] == file_list_hash(names)
    assert stats.provenance["extractor"] == extractor.fingerprint() and stats.provenance["data_range"] == [0.0, 1.0]
    # the classifier takes 28 px: other sizes would be resized so (these are 28 px already)
    assert stats.provenance["resize"] == "bilinear-antialias-28px"
    assert stats.provenance["num_features"] == extractor.num_features


def test_the_callback_computes_fid_against_a_reference_file(tmp_path):
    """FID against a statistics file equals FID against the features it was made from; KID still uses the split."""
    extractor = FeatureExtractor(SmallConvFeatures())
    kwargs = dict(num_samples=250, num_real=300, batch_size=64, cache_dir=False, seed=5, kid_subsets=4,
                  kid_subset_size=100)
    plain = GenerativeMetricsCallback(extractor=extractor, metrics=["fid", "kid"], **kwargs)
    model, data = BlobSampler(shift=2.0), BlobImages()
    trainer = L.Trainer(accelerator="cpu", devices=1, limit_train_batches=1, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[plain], default_root_dir=str(tmp_path))
    trainer.fit(model, data)
    _, real = next(iter(plain._real.items()))
    path = ReferenceStatistics.from_features(real, **extractor_provenance(extractor, (-1, 1))).save(tmp_path / "r.pt")
    with_file = GenerativeMetricsCallback(extractor=extractor, metrics=["fid", "kid"], reference=path, **kwargs)
    values = with_file.evaluate(trainer, model, "train")
    assert values["fid"] == pytest.approx(plain.last["fid"], rel=1e-6)
    unshifted = GenerativeMetricsCallback(extractor=extractor, metrics=["fid"], reference=path, **kwargs)
    assert unshifted.evaluate(trainer, BlobSampler(shift=0.0), "train")["fid"] < plain.last["fid"] / 5
    assert values["kid"] == pytest.approx(plain.last["kid"], rel=1e-6)
    fid_only = GenerativeMetricsCallback(extractor=extractor, metrics=["fid"], reference=path, **kwargs)
    assert fid_only.evaluate(trainer, model, "train")["fid"] == pytest.approx(plain.last["fid"], rel=1e-6)
    assert fid_only._real == {}  # no real image was embedded: the file is the reference
    other = ReferenceStatistics.from_features(real, **extractor_provenance(extractor, (0, 1))).save(tmp_path / "o.pt")
    wrong = GenerativeMetricsCallback(extractor=extractor, metrics=["fid"], reference=other, **kwargs)
    with pytest.raises(ValueError, match="data_range"):
        wrong.evaluate(trainer, model, "train")


def test_the_command_computes_a_data_module_splits_statistics(tmp_path, mnist_root, mnist_classifier_path):
    from lightning_gen.data import MNISTDataModule

    path = main(["--mnist", str(mnist_root), "--split", "test", "--classifier", str(mnist_classifier_path),
                 "--out", str(tmp_path / "mnist_test.pt")])
    stats = ReferenceStatistics.load(path)
    data = MNISTDataModule(root=str(mnist_root))
    data.setup("test")
    images = data.test_dataloader().dataset
    assert stats.num_images == len(images) > 1000
    assert stats.provenance["source"] == "lightning_gen.data.images.MNISTDataModule test split"
    extractor = ClassifierFeatureExtractor(str(mnist_classifier_path))
    features = torch.cat([extractor.extract(torch.stack([images[i][0] for i in range(a, min(a + 500, len(images)))]),
                                            (-1.0, 1.0))[0] for a in range(0, len(images), 500)]).double()
    torch.testing.assert_close(stats.mean, features.mean(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(stats.cov, torch.cov(features.T), rtol=1e-5, atol=1e-7)


def test_the_fid_metric_class_takes_a_reference_file_for_the_real_images(tmp_path):
    from lightning_gen.metrics import FrechetInceptionDistance

    extractor = FeatureExtractor(SmallConvFeatures())
    data = BlobImages()
    real_images = data.splits["train"].tensors[0][:300]
    fake_images = BlobSampler(shift=1.0).sample(200, generator=torch.Generator().manual_seed(0))
    plain = FrechetInceptionDistance(extractor=extractor)
    plain.update(real_images, real=True)
    plain.update(fake_images, real=False)
    real = extractor.extract(real_images)[0]
    path = ReferenceStatistics.from_features(real, **extractor_provenance(extractor, (-1, 1))).save(tmp_path / "r.npz")
    metric = FrechetInceptionDistance(extractor=extractor, reference=path)
    metric.update(fake_images[:120], real=False)
    metric.update(fake_images[120:], real=False)
    assert float(metric.compute()) == pytest.approx(float(plain.compute()), rel=1e-4)
    same = FrechetInceptionDistance(extractor=extractor, reference=path)  # samples of the data's own distribution
    same.update(BlobSampler(shift=0.0).sample(200, generator=torch.Generator().manual_seed(0)), real=False)
    assert float(same.compute()) < float(plain.compute()) / 5
    with pytest.raises(ValueError, match="generated images only"):
        metric.update(real_images, real=True)
    with pytest.raises(ValueError, match="data_range"):
        FrechetInceptionDistance(extractor=extractor, data_range=(0.0, 1.0), reference=path)
