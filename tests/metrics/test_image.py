"""FID / IS / KID / precision-recall against theory and against torchmetrics; extractor input handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torchmetrics.image import fid as tm_fid
from torchmetrics.image import inception as tm_inception
from torchmetrics.image import kid as tm_kid
from torch import nn

from lightning_gen.metrics import (
    FeatureExtractor,
    FrechetInceptionDistance,
    InceptionScore,
    KernelInceptionDistance,
    PrecisionRecall,
    as_feature_extractor,
    frechet_distance,
    gaussian_frechet_distance,
    improved_precision_recall,
    inception_score,
    kernel_inception_distance,
)


class Identity(nn.Module):
    """Features = the input vector itself (tests feed feature vectors shaped as 1x1 'images')."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_features, self.scale = dim, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).double() * self.scale


def gaussian(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mean.numel(), generator=g, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def closed_form_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def random_spd(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)


def test_gaussian_frechet_distance_is_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    s1, s2 = random_spd(3, 0), random_spd(3, 1)
    expected = closed_form_fid(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    assert float(gaussian_frechet_distance(mu1, s1, mu2, s2)) == pytest.approx(expected, rel=1e-9)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 plus the mean term, by hand
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    by_hand = 5.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    assert float(gaussian_frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))) == pytest.approx(by_hand, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_of_two_gaussians_matches_the_closed_form():
    dim = 4
    mu1, mu2 = torch.zeros(dim, dtype=torch.float64), torch.tensor([1.0, -0.5, 0.0, 0.25], dtype=torch.float64)
    s1, s2 = random_spd(dim, 2), random_spd(dim, 3)
    x, y = gaussian(40_000, mu1, s1, seed=0), gaussian(40_000, mu2, s2, seed=1)
    assert abs(float(frechet_distance(x, x))) < 1e-8
    expected = closed_form_fid(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    assert expected > 1.0
    assert float(frechet_distance(x, y)) == pytest.approx(expected, rel=0.03)
    # two independent samples of the same Gaussian: FID is small, of the order dim / n, and positive
    same = float(frechet_distance(x, gaussian(40_000, mu1, s1, seed=5)))
    assert 0.0 < same < 0.01


def test_our_fid_equals_torchmetrics_on_the_same_features():
    x = gaussian(500, torch.zeros(6, dtype=torch.float64), random_spd(6, 4), seed=2)
    y = gaussian(400, torch.ones(6, dtype=torch.float64), random_spd(6, 5), seed=3)
    reference = tm_fid.FrechetInceptionDistance(feature=Identity(6))
    reference.update(x[:, :, None, None], real=True)
    reference.update(y[:, :, None, None], real=False)
    ours = float(frechet_distance(x, y))
    assert ours > 1.0
    assert ours == pytest.approx(float(reference.compute()), rel=1e-6)
    # the image-level class, fed the same features through an extractor, agrees as well
    metric = FrechetInceptionDistance(extractor=FeatureExtractor(Identity(6, scale=50.0)))
    metric.update(x[:, :, None, None].float() / 50, real=True)
    metric.update(y[:, :, None, None].float() / 50, real=False)
    assert float(metric.compute()) == pytest.approx(ours, rel=1e-4)


def test_inception_score_of_a_perfect_uniform_classifier_is_the_number_of_classes():
    for classes in (2, 10):
        labels = torch.arange(1000) % classes
        logits = 60.0 * F.one_hot(labels, classes).double()  # p(y|x) one-hot, p(y) uniform
        mean, std = inception_score(logits, splits=5)
        assert float(mean) == pytest.approx(classes, rel=1e-9)
        assert float(std) == pytest.approx(0.0, abs=1e-9)
    # one class for everything: KL(p(y|x) || p(y)) = 0, IS = 1; uniform p(y|x): also 1
    assert float(inception_score(60.0 * F.one_hot(torch.zeros(100, dtype=torch.long), 10).double(), 1)[0]) == \
        pytest.approx(1.0, abs=1e-9)
    assert float(inception_score(torch.zeros(100, 10), 1)[0]) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_matches_torchmetrics_and_the_image_metric():
    logits = torch.randn(300, 7, generator=torch.Generator().manual_seed(0)) * 3
    reference = tm_inception.InceptionScore(feature=Identity(7), splits=1)
    reference.update(logits[:, :, None, None])
    expected = float(reference.compute()[0])
    assert float(inception_score(logits, splits=1)[0]) == pytest.approx(expected, rel=1e-6)
    metric = InceptionScore(extractor=FeatureExtractor(_FeaturesAndLogits()), splits=1)
    metric.update(logits[:, :, None, None] / 50)
    assert float(metric.compute()[0]) == pytest.approx(expected, rel=1e-5)


class _FeaturesAndLogits(nn.Module):
    num_features = 7

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1) * 0, x.flatten(1) * 50


def test_kid_is_unbiased_near_zero_for_the_same_distribution_and_positive_otherwise():
    cov = random_spd(8, 6)
    x = gaussian(2000, torch.zeros(8, dtype=torch.float64), cov, seed=10)
    y = gaussian(2000, torch.zeros(8, dtype=torch.float64), cov, seed=11)
    z = gaussian(2000, torch.full((8,), 0.5, dtype=torch.float64), cov, seed=12)
    same, same_std = kernel_inception_distance(x, y, subsets=50, subset_size=500,
                                               generator=torch.Generator().manual_seed(0))
    different, _ = kernel_inception_distance(x, z, subsets=50, subset_size=500,
                                             generator=torch.Generator().manual_seed(0))
    # unbiased: the same-distribution estimate is centred on zero (it can be negative), far below the shifted one
    assert abs(float(same)) < 3 * float(same_std) / math.sqrt(50) + 1e-3
    assert float(different) > 20 * abs(float(same))
    # with whole sets as the only subset, our value equals torchmetrics' KID on the same features
    reference = tm_kid.KernelInceptionDistance(feature=Identity(8), subsets=1, subset_size=2000)
    reference.update(x[:, :, None, None], real=True)
    reference.update(z[:, :, None, None], real=False)
    ours = kernel_inception_distance(x, z, subsets=1, subset_size=2000)[0]
    assert float(ours) == pytest.approx(float(reference.compute()[0]), rel=1e-6)


def test_kid_image_metric_and_precision_recall_metric_use_the_extractor():
    x = gaussian(300, torch.zeros(5, dtype=torch.float64), random_spd(5, 7), seed=20).float()
    y = x + 4.0
    kid = KernelInceptionDistance(extractor=FeatureExtractor(Identity(5, scale=50.0)), subsets=1, subset_size=300)
    kid.update(x[:, :, None, None] / 50, real=True)
    kid.update(y[:, :, None, None] / 50, real=False)
    assert float(kid.compute()[0]) == pytest.approx(float(kernel_inception_distance(x, y, 1, 300)[0]), rel=1e-5)
    pr = PrecisionRecall(extractor=FeatureExtractor(Identity(5, scale=50.0)), k=3)
    pr.update(x[:, :, None, None] / 50, real=True)
    pr.update(x[:150, :, None, None] / 50, real=False)
    precision, recall = pr.compute()
    expected = improved_precision_recall(x, x[:150], k=3)
    assert float(precision) == pytest.approx(float(expected[0])) and float(recall) == pytest.approx(float(expected[1]))
    assert float(precision) == pytest.approx(1.0)


# -- extractor input handling -------------------------------------------------------------------------------------
class Record(nn.Module):
    """Returns the mean of each channel and keeps the last input, to see what the extractor fed the net."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x.float().mean(dim=(2, 3))


def test_extractor_checks_the_value_range_and_dtype():
    extractor = FeatureExtractor(Record(), num_features=1)
    with pytest.raises(ValueError, match=r"data_range=\(-1.0, 1.0\).*\[0, 255\]"):
        extractor.extract(torch.full((2, 1, 4, 4), 200.0))
    with pytest.raises(ValueError, match="uint8"):
        extractor.extract(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extractor.extract(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="data_range"):
        extractor.extract(torch.full((2, 1, 4, 4), -0.5), data_range=(0.0, 1.0))
    # the same picture given in [0, 1] or [-1, 1] reaches the net identically
    unit = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = extractor.extract(unit, data_range=(0.0, 1.0))[0]
    b = extractor.extract(unit * 2 - 1)[0]
    torch.testing.assert_close(a, b)
    assert float(a.min()) >= -1.0 and float(b.max()) <= 1.0


def test_extractor_repeats_grayscale_resizes_and_converts_to_the_nets_range():
    gray = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    net = Record()
    FeatureExtractor(net, channels=3, image_size=8, net_range="uint8", num_features=3).extract(gray)
    assert net.seen.dtype == torch.uint8 and net.seen.shape == (2, 3, 8, 8)
    expected = F.interpolate((gray + 1) / 2, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    expected = (expected.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    assert torch.equal(net.seen, expected)
    FeatureExtractor(net, channels=1, net_range="zero_one", num_features=1).extract(gray)
    torch.testing.assert_close(net.seen, (gray + 1) / 2)
    with pytest.raises(ValueError, match="only 1 -> 3"):
        FeatureExtractor(net, channels=1, num_features=1).extract(gray.expand(-1, 3, -1, -1))


def test_extractor_infers_feature_size_and_fingerprints_its_weights():
    conv = nn.Sequential(nn.Conv2d(1, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    extractor = as_feature_extractor(conv)
    with pytest.raises(ValueError, match="num_features"):
        _ = extractor.num_features
    sized = FeatureExtractor(conv, channels=1, image_size=8)
    assert sized.num_features == 5
    before = sized.fingerprint()
    other = FeatureExtractor(nn.Sequential(nn.Conv2d(1, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 1, 8)
    assert other.fingerprint() != before and FeatureExtractor(conv, 1, 8).fingerprint() == before
    assert not extractor.train().training and not conv.training


def test_kid_reuses_the_real_kernel_sums_of_the_same_subsets_and_gives_the_same_answer(monkeypatch):
    import lightning_gen.metrics.image as image

    real = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    fakes = [torch.randn(200, 6, generator=torch.Generator().manual_seed(s)) + 0.2 for s in (2, 3)]
    calls = []
    kernel = image.poly_kernel
    monkeypatch.setattr(image, "poly_kernel", lambda a, b, *args: calls.append(a is b or torch.equal(a, b)) or
                        kernel(a, b, *args))
    cache: dict = {}
    for fake in fakes:  # two evaluations of different samples against the same real set, the same seed
        plain = kernel_inception_distance(real, fake, 5, 100, generator=torch.Generator().manual_seed(0))
        calls.clear()
        cached = kernel_inception_distance(real, fake, 5, 100, generator=torch.Generator().manual_seed(0),
                                           real_cache=cache)
        assert torch.equal(plain[0], cached[0]) and torch.equal(plain[1], cached[1])
    assert len(cache) == 5 and len(calls) == 10  # the second evaluation: fake-fake and real-fake kernels only
    # another seed draws other real subsets: the cache is not used for them, and the answer is still exact
    other = kernel_inception_distance(real, fakes[0], 5, 100, generator=torch.Generator().manual_seed(9),
                                      real_cache=cache)
    assert torch.equal(other[0], kernel_inception_distance(real, fakes[0], 5, 100,
                                                           generator=torch.Generator().manual_seed(9))[0])
