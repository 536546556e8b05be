"""Tests for lightning_gen/callbacks/metrics.py: values equal the functions on the same samples, the real-feature
cache, the auto-trained classifier extractor, and DDP (2 CPU processes give the single-process values)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import run_script

from lightning_gen.callbacks import GenerativeMetricsCallback
from lightning_gen.metrics import (
    ClassifierFeatureExtractor,
    FeatureExtractor,
    frechet_distance,
    improved_precision_recall,
    kernel_inception_distance,
    sliced_wasserstein_distance,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))

from ddp_metrics import make_callback, precision_recall_metric, swd_samples  # noqa: E402
from metrics_fakes import BlobImages, BlobSampler, SmallConvFeatures  # noqa: E402


def trainer(tmp_path: Path, callback: GenerativeMetricsCallback, **kwargs) -> L.Trainer:
    kwargs = {"max_epochs": 1, **kwargs}
    return L.Trainer(accelerator="cpu", devices=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                     default_root_dir=str(tmp_path), **kwargs)


class CountingExtractor(FeatureExtractor):
    """The fixed conv extractor, counting the images it embeds."""

    def __init__(self) -> None:
        super().__init__(SmallConvFeatures())
        self.embedded = 0

    def extract(self, images, data_range=(-1.0, 1.0), check=True):
        self.embedded += len(images)
        return super().extract(images, data_range, check)


def test_logged_values_equal_the_metric_functions_on_the_same_samples(tmp_path):
    callback = GenerativeMetricsCallback(extractor=FeatureExtractor(SmallConvFeatures()), num_samples=250,
                                         num_real=300, batch_size=64, cache_dir=tmp_path / "cache", seed=5,
                                         kid_subsets=4, kid_subset_size=100, is_splits=1,
                                         metrics=["fid", "kid", "precision_recall"])
    model, data = BlobSampler(shift=2.0), BlobImages()
    t = trainer(tmp_path, callback)
    t.fit(model, data)
    # by hand: 300 training images drawn with seed 5; samples in chunks of 64 from seeds 5, 6, 7, 8
    net = SmallConvFeatures().eval()
    chosen = torch.randperm(600, generator=torch.Generator().manual_seed(5))[:300].sort().values
    with torch.no_grad():
        real = net(data.splits["train"].tensors[0][chosen])
        fake = net(torch.cat([model.sample(min(64, 250 - s), generator=torch.Generator().manual_seed(5 + s // 64))
                              for s in range(0, 250, 64)]))
    expected_kid = kernel_inception_distance(real, fake, 4, 100, generator=torch.Generator().manual_seed(5))
    expected_pr = improved_precision_recall(real, fake, 3)
    assert callback.last["fid"] == pytest.approx(float(frechet_distance(real, fake)), rel=1e-5)
    assert callback.last["kid"] == pytest.approx(float(expected_kid[0]), rel=1e-5)
    assert callback.last["kid_std"] == pytest.approx(float(expected_kid[1]), rel=1e-5)
    assert (callback.last["precision"], callback.last["recall"]) == pytest.approx(
        (float(expected_pr[0]), float(expected_pr[1])), abs=1e-6)
    for key in ("fid", "kid", "precision", "recall"):
        assert float(t.callback_metrics[f"val/{key}"]) == pytest.approx(callback.last[key], rel=1e-5, abs=1e-7)
    # the same evaluation from the data distribution itself is much closer (a case where a wrong value shows)
    shifted = dict(callback.last)
    same = callback.evaluate(t, BlobSampler(shift=0.0), "train")
    assert same["fid"] < shifted["fid"] / 5 and same["precision"] > shifted["precision"]


def test_real_features_are_cached_on_disk_and_reused(tmp_path):
    first = GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["fid"], num_samples=100,
                                      num_real=200, batch_size=50, cache_dir=tmp_path / "cache")
    t = trainer(tmp_path, first)
    t.fit(BlobSampler(), BlobImages())
    assert first.extractor.embedded == 200 + 100
    (cached,) = (tmp_path / "cache").iterdir()
    assert cached.name.startswith("BlobImages-train-200-") and cached.suffix == ".pt"
    # a new run (new callback, same data, extractor and size) reads the file: only the 100 samples are embedded
    second = GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["fid"], num_samples=100,
                                       num_real=200, batch_size=50, cache_dir=tmp_path / "cache")
    t2 = trainer(tmp_path, second)
    t2.fit(BlobSampler(), BlobImages())
    assert second.extractor.embedded == 100
    assert second.last["fid"] == pytest.approx(first.last["fid"], rel=1e-9)
    # within a run the features stay in memory: a second evaluation embeds only the samples again
    second.evaluate(t2, BlobSampler(), "train")
    assert second.extractor.embedded == 200
    # another size, another split, other data or other extractor weights: other cache entries
    third = GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["fid"], num_samples=100,
                                      num_real=150, batch_size=50, cache_dir=tmp_path / "cache")
    trainer(tmp_path, third).fit(BlobSampler(), BlobImages())
    trainer(tmp_path, third).fit(BlobSampler(), BlobImages(seed=1))
    other = CountingExtractor()
    with torch.no_grad():
        other.net.net[0].weight.mul_(2)
    fourth = GenerativeMetricsCallback(extractor=other, metrics=["fid"], num_samples=100, num_real=200,
                                       batch_size=50, cache_dir=tmp_path / "cache", every_n_epochs=None)
    trainer(tmp_path, fourth).test(BlobSampler(), BlobImages())
    assert fourth.extractor.embedded == 200 + 100
    names = sorted(p.name.split("-")[1] + "-" + p.name.split("-")[2] for p in (tmp_path / "cache").iterdir())
    assert names == ["test-200", "train-150", "train-150", "train-200"]
    # cache_dir=False: nothing written
    off = GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["fid"], num_samples=100, num_real=100,
                                    batch_size=50, cache_dir=False)
    trainer(tmp_path, off).fit(BlobSampler(), BlobImages())
    assert len(list((tmp_path / "cache").iterdir())) == 4 and off.extractor.embedded == 200


def test_every_n_epochs_and_test_keys(tmp_path):
    callback = GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["fid"], num_samples=60,
                                         num_real=60, batch_size=30, every_n_epochs=2, cache_dir=False)
    model = BlobSampler()
    t = trainer(tmp_path, callback, max_epochs=5)
    t.fit(model, BlobImages())
    assert model.sample_calls == [30, 30] * 2  # after epochs 2 and 4
    (result,) = t.test(model, BlobImages(), verbose=False)
    assert set(result) == {"test/fid"} and result["test/fid"] == pytest.approx(callback.last["fid"], rel=1e-5)
    never = GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["fid"], num_samples=60,
                                      every_n_epochs=None, on_test=False, cache_dir=False)
    quiet = BlobSampler()
    trainer(tmp_path, never).fit(quiet, BlobImages())
    trainer(tmp_path, never).test(quiet, BlobImages(), verbose=False)
    assert quiet.sample_calls == []


def test_classifier_extractor_is_trained_once_when_missing_and_scores_the_data(tmp_path):
    path = tmp_path / "classifiers" / "blobs.pt"
    with pytest.raises(FileNotFoundError, match="python -m lightning_gen.metrics.classifier"):
        ClassifierFeatureExtractor(str(path))
    extractor = ClassifierFeatureExtractor(str(path), train_if_missing=True, epochs=3)
    with pytest.raises(RuntimeError, match="not been trained"):
        extractor.extract(torch.zeros(2, 1, 16, 16))
    callback = GenerativeMetricsCallback(extractor=extractor, metrics=["inception_score", "fid"], num_samples=300,
                                         batch_size=100, is_splits=1, cache_dir=False)
    trainer(tmp_path, callback).fit(BlobSampler(), BlobImages())
    assert path.is_file() and extractor.train_accuracy > 0.95
    # the inception score of the data distribution under a confident classifier: near the number of classes (3),
    # and samples of one class only score near 1
    assert 2.6 < callback.last["inception_score"] <= 3.0
    one_class = callback.compute(torch.zeros(3, 2), torch.zeros(3, 2), extractor.extract(
        BlobImages().splits["train"].tensors[0][BlobImages().splits["train"].tensors[1] == 0])[1])
    assert 1.0 <= one_class["inception_score"] < 1.2
    # a later run loads the saved classifier instead of training again (same weights, same fingerprint)
    again = ClassifierFeatureExtractor(str(path), train_if_missing=True)
    assert not again.needs_training and again.fingerprint() == extractor.fingerprint()


def test_a_missing_classifier_is_trained_when_test_is_the_first_command(tmp_path):
    """`lightning-gen test` on a run whose classifier is missing: Lightning runs test hooks under inference mode, in
    which the classifier could not be trained (it raised "element 0 of tensors does not require grad")."""
    path = tmp_path / "blobs.pt"
    extractor = ClassifierFeatureExtractor(str(path), train_if_missing=True, epochs=3)
    callback = GenerativeMetricsCallback(extractor=extractor, metrics=["fid"], num_samples=300, batch_size=100,
                                         cache_dir=False)
    (result,) = trainer(tmp_path, callback).test(BlobSampler(), BlobImages(), verbose=False)
    assert path.is_file() and extractor.train_accuracy > 0.95
    assert set(result) == {"test/fid"} and result["test/fid"] >= 0


def test_training_the_classifier_leaves_the_global_random_state_alone(tmp_path):
    extractor = ClassifierFeatureExtractor(str(tmp_path / "c.pt"), train_if_missing=True, epochs=1)
    data = BlobImages(train_size=200)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    extractor.train_on(data.train_dataloader(), data.image_shape, data.num_classes)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="num_classes=0"):
        ClassifierFeatureExtractor(str(tmp_path / "d.pt"), train_if_missing=True).train_on([], (1, 16, 16), 0)


def test_arguments_and_missing_logits_are_explained(tmp_path):
    with pytest.raises(ValueError, match="metrics must be"):
        GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["fid", "lpips"])
    with pytest.raises(ValueError, match="every_n_epochs"):
        GenerativeMetricsCallback(extractor=CountingExtractor(), every_n_epochs=0)
    callback = GenerativeMetricsCallback(extractor=CountingExtractor(), metrics=["is"], num_samples=20,
                                         cache_dir=False)
    with pytest.raises(ValueError, match="inception_score needs class logits"):
        trainer(tmp_path, callback).fit(BlobSampler(), BlobImages())


@pytest.mark.slow
def test_ddp_two_cpu_processes_log_the_single_process_values(tmp_path):
    proc = run_script(ROOT / "tests" / "scripts" / "ddp_metrics.py", str(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    # rank 0 trained the classifier and sent it: both ranks extract with the same weights
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    assert ranks[0]["fit"] == ranks[1]["fit"] and ranks[0]["test"] == ranks[1]["test"]
    # one process, the same callback settings and the classifier the DDP run saved: the same numbers
    callback = make_callback(tmp_path / "single_cache", tmp_path / "classifier.pt")
    single = trainer(tmp_path, callback)
    single.fit(BlobSampler(shift=1.5), BlobImages())
    assert callback.extractor.fingerprint() == ranks[0]["fingerprint"]
    for key, value in callback.last.items():
        assert ranks[0]["fit"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        assert ranks[0]["fit_logged"][f"val/{key}"] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    (test_single,) = single.test(BlobSampler(shift=1.5), BlobImages(), verbose=False)
    for key, value in test_single.items():
        assert ranks[0]["test_logged"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert ranks[0]["fit"]["fid"] > 0.1 and 0.0 < ranks[0]["fit"]["precision"] < 1.0
    # SlicedWassersteinDistance gathered from two ranks equals the function on all samples in one process
    real, fake = swd_samples()
    expected = float(sliced_wasserstein_distance(real, fake, 64, 2, torch.Generator().manual_seed(0)))
    assert ranks[0]["swd"] == ranks[1]["swd"] == pytest.approx(expected, rel=1e-6) and expected > 0.3
    single_pr = precision_recall_metric()
    single_pr.update(torch.tanh(real)[:, :, None, None], real=True)
    single_pr.update(torch.tanh(fake + 1.0)[:, :, None, None], real=False)
    expected_pr = [float(v) for v in single_pr.compute()]
    assert ranks[0]["precision_recall"] == ranks[1]["precision_recall"] == pytest.approx(expected_pr, abs=1e-6)
    assert 0.05 < min(expected_pr) < 0.95  # not a trivial 0 or 1


def test_the_inception_extractor_is_built_only_by_stages_that_evaluate(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_gen.metrics import InceptionWeightsNotFoundError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no Inception weights anywhere
    monkeypatch.delenv("LIGHTNING_GEN_INCEPTION_WEIGHTS", raising=False)
    callback = GenerativeMetricsCallback(num_samples=10, cache_dir=False)  # extractor None: Inception
    model = BlobSampler()
    # predict never evaluates, so it needs no weights
    (samples,) = trainer(tmp_path, callback).predict(model, DataLoader(TensorDataset(torch.arange(4)), batch_size=4))
    assert samples.shape == (4, 1, 16, 16)
    # fit does: it stops at set-up, before the first training step, and says how to provide the weights
    with pytest.raises((InceptionWeightsNotFoundError, ModuleNotFoundError), match="ClassifierFeatureExtractor"):
        trainer(tmp_path, callback).fit(model, BlobImages())
    assert float(model.dummy) == 0.0


def test_a_reference_subset_of_a_class_sorted_split_covers_every_class(tmp_path):
    # a split stored sorted by label (as the shipped MNIST test digits are): the first 300 images would be one class
    callback = GenerativeMetricsCallback(extractor=FeatureExtractor(SmallConvFeatures()), metrics=["fid"],
                                         num_samples=50, num_real=300, batch_size=50, cache_dir=False)
    data = BlobImages()
    images, labels = data.splits["train"].tensors
    order = labels.argsort(stable=True)
    data.splits["train"] = torch.utils.data.TensorDataset(images[order], labels[order])
    assert labels[order][:300].unique().numel() < 3  # the first 300 miss a class
    chosen = callback._real_indices(300, 600)
    counts = torch.bincount(labels[order][chosen], minlength=3)
    assert len(set(chosen)) == 300 and chosen == callback._real_indices(300, 600)  # distinct and reproducible
    assert (counts.float() / 300 - torch.bincount(labels, minlength=3).float() / 600).abs().max() < 0.1
    assert callback._real_indices(600, 600) == list(range(600))  # the whole split when it is small enough


def test_the_fid_bootstrap_spread_matches_the_spread_over_independent_sample_sets():
    """``fid_std`` (bootstrap of the generated features, the reference fixed) estimates how FID varies from one draw of
    ``num_samples`` samples to the next: Gaussian features, FID of 40 independent sets of 500 against one reference."""
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(8, 8, generator=g) / 8**0.5
    real = torch.randn(4000, 8, generator=g) @ mixing

    def draw() -> torch.Tensor:
        return (torch.randn(500, 8, generator=g) + 0.3) @ mixing * 1.1

    spread = torch.tensor([float(frechet_distance(real, draw())) for _ in range(40)], dtype=torch.float64).std()
    callback = GenerativeMetricsCallback(extractor=FeatureExtractor(SmallConvFeatures()), metrics=["fid"],
                                         fid_bootstrap=40, cache_dir=False)
    one = draw()
    values = callback.compute(real, one)
    assert values["fid"] == pytest.approx(float(frechet_distance(real, one)), rel=1e-12)
    assert 0.6 < values["fid_std"] / float(spread) < 1.6, (values["fid_std"], float(spread))
    plain = GenerativeMetricsCallback(extractor=FeatureExtractor(SmallConvFeatures()), metrics=["fid"], cache_dir=False)
    assert "fid_std" not in plain.compute(real, one)
    with pytest.raises(ValueError, match="fid_bootstrap must be >= 0"):
        GenerativeMetricsCallback(fid_bootstrap=-1)
