"""Tests for lightning_gen/nets/classifier.py: shapes, feature scale, saving and loading, errors."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.nets import ImageClassifier, load_classifier, save_classifier


@pytest.mark.parametrize("size, channels, side", [(16, 1, 8), (28, 1, 7), (32, 3, 8), (64, 3, 8)])
def test_shapes_at_every_size(size, channels, side):
    net = ImageClassifier(image_size=size, channels=channels, num_classes=5, base_channels=4, feature_dim=12)
    x = torch.rand(3, channels, size, size) * 2 - 1
    assert net.conv(x).shape[1] % (side * side) == 0  # the last maps are side x side
    assert net.hidden[0].in_features == net.conv(x).shape[1]
    features, logits = net.features_and_logits(x)
    assert features.shape == (3, 12) and logits.shape == (3, 5)
    torch.testing.assert_close(features, net.features(x))
    torch.testing.assert_close(logits, net(x))


def test_feature_scale_gives_unit_rms_and_leaves_the_logits_alone():
    torch.manual_seed(0)
    net = ImageClassifier(image_size=16, num_classes=3, base_channels=4, feature_dim=10).eval()
    images = torch.rand(64, 1, 16, 16) * 2 - 1
    logits_before, raw = net(images), net.features(images)
    scale = net.calibrate_feature_scale_([(images[:40], None), (images[40:], None)])
    assert scale == pytest.approx(float(raw.double().pow(2).mean().sqrt()), rel=1e-6)
    assert float(net.features(images).double().pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(net(images), logits_before)
    torch.testing.assert_close(net.features(images), raw / scale)
    with pytest.raises(ValueError, match="non-zero"):
        net.calibrate_feature_scale_([])


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    net = ImageClassifier(image_size=16, channels=3, num_classes=4, base_channels=4, feature_dim=8)
    net.feature_scale.fill_(2.5)
    path = save_classifier(net, tmp_path / "deep" / "c.pt")
    again = load_classifier(path)
    assert not again.training and again.init_kwargs() == net.init_kwargs()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(again.features_and_logits(x), net.eval().features_and_logits(x), rtol=0, atol=0)


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="image_size >= 16"):
        ImageClassifier(image_size=8)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ImageClassifier(num_classes=1)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        ImageClassifier()(torch.zeros(2, 3, 28, 28))
    with pytest.raises(FileNotFoundError, match="python -m lightning_gen.metrics.classifier"):
        load_classifier(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a classifier checkpoint"):
        load_classifier(tmp_path / "other.pt")
    with pytest.raises(TypeError, match="ImageClassifier"):
        save_classifier(torch.nn.Linear(2, 2), tmp_path / "x.pt")
