"""Tests for lightning_gen/metrics/features.py: the Inception extractor's offline behaviour and input handling."""

from __future__ import annotations

import builtins
import time

import pytest
import torch

from lightning_gen.metrics import InceptionFeatureExtractor, InceptionWeightsNotFoundError
from lightning_gen.metrics.features import INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No weights anywhere: an empty torch hub folder and no environment variable."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    return tmp_path


def test_missing_weights_fail_at_once_with_every_way_to_provide_them(no_weights):
    start = time.perf_counter()
    with pytest.raises(InceptionWeightsNotFoundError) as info:
        InceptionFeatureExtractor()
    assert time.perf_counter() - start < 5  # no download attempt, no hang
    message = str(info.value)
    for hint in (INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE, "weights_path", "download=True",
                 "ClassifierFeatureExtractor", str(no_weights / "torch_home" / "hub" / "checkpoints")):
        assert hint in message
    with pytest.raises(InceptionWeightsNotFoundError, match="is not a file"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(INCEPTION_WEIGHTS_ENV, str(no_weights / "nowhere.pth"))
            InceptionFeatureExtractor()
    with pytest.raises(InceptionWeightsNotFoundError, match="weights_path="):
        InceptionFeatureExtractor(weights_path=str(no_weights / "nowhere.pth"))
    with pytest.raises(ValueError, match="64, 192, 768, 2048"):
        InceptionFeatureExtractor(feature_dim=1000)


def test_without_torch_fidelity_the_error_says_what_to_install(no_weights, monkeypatch):
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("torch_fidelity"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ModuleNotFoundError, match=r"lightning_gen\[inception\].*ClassifierFeatureExtractor"):
        InceptionFeatureExtractor()


def test_failed_download_is_explained(no_weights, monkeypatch):
    tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tfi, "load_state_dict_from_url", offline)
    with pytest.raises(InceptionWeightsNotFoundError, match=f"Downloading .* failed.*{INCEPTION_WEIGHTS_ENV}"):
        InceptionFeatureExtractor(download=True)


@pytest.mark.slow
def test_the_real_architecture_with_stand_in_weights_takes_grayscale_digits(no_weights, monkeypatch):
    tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    # build torch-fidelity's Inception once without weights, and save its random initialization as a weights file
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *args, **kwargs: {})
    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    torch.manual_seed(0)
    random_init = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(no_weights / "torch_home"))
    path = no_weights / "stand_in.pth"
    torch.save(random_init.state_dict(), path)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(path))

    extractor = InceptionFeatureExtractor()
    assert extractor.num_features == 2048 and extractor.name == "inception-v3-2048"
    digits = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    features, logits = extractor.extract(digits)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    # grayscale is the RGB image with three equal channels; [0, 1] input with data_range=(0, 1) is the same picture
    rgb_features, _ = extractor.extract(digits.expand(-1, 3, -1, -1))
    unit_features, _ = extractor.extract((digits + 1) / 2, data_range=(0.0, 1.0))
    torch.testing.assert_close(features, rgb_features)
    torch.testing.assert_close(features, unit_features)
    assert features.std() > 0
