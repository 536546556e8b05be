"""Tests for lightning_gen/metrics/classifier.py: training and scoring the classifier, and its command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lightning_gen.metrics.classifier import classifier_accuracy, main, train_classifier
from lightning_gen.nets import ImageClassifier, load_classifier

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))

from metrics_fakes import BlobImages  # noqa: E402


def test_training_learns_the_blob_classes_and_accuracy_is_counted_right():
    torch.manual_seed(0)
    data = BlobImages(train_size=600, test_size=300)
    net = ImageClassifier(image_size=16, num_classes=3, base_channels=8, feature_dim=16)
    lines: list[str] = []
    train_accuracy = train_classifier(net, data.train_dataloader(), epochs=6, log=lines.append)
    assert len(lines) == 6 and lines[-1].startswith("epoch 6/6")
    assert not net.training and train_accuracy > 0.9
    assert classifier_accuracy(net, data.test_dataloader()) > 0.95
    # accuracy is the fraction right: flip the labels of a third of the test images and it drops by a third
    images, labels = data.splits["test"].tensors
    predicted = net(images).argmax(1)
    wrong = torch.where(torch.arange(300) < 100, (predicted + 1) % 3, predicted)
    assert classifier_accuracy(net, [(images, wrong)]) == pytest.approx(200 / 300)


def test_training_arguments_are_checked():
    net = ImageClassifier(image_size=16, num_classes=3)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_classifier(net, [], epochs=0)
    with pytest.raises(ValueError, match="empty loader"):
        train_classifier(net, [], epochs=1, log=None)
    with pytest.raises(ValueError, match="empty loader"):
        classifier_accuracy(net, [])


@pytest.mark.slow
def test_the_command_trains_on_the_real_digits_and_saves_a_calibrated_classifier(tmp_path, capsys, mnist_root):
    out = tmp_path / "mnist.pt"
    # no --root: the command reads the digits from $LIGHTNING_GEN_DATA, as the data modules do
    accuracy = main(["--dataset", "mnist", "--out", str(out), "--epochs", "1", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert 0.9 < accuracy <= 1.0 and f"{100 * accuracy:.2f} %" in printed and str(out) in printed
    net = load_classifier(out)
    assert float(net.feature_scale) != 1.0 and net.image_shape == (1, 28, 28) and net.num_classes == 10
