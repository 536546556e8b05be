"""Our FID, KID and IS against the tools reviewers trust, on the same features: torch-fidelity's FID, KID and IS and
pytorch-fid's FID (both dev dependencies); and our metric classes (torchmetrics') against their functional twins,
with several IS splits. The networks are not compared here: the Inception weights cannot be downloaded, and our
``InceptionFeatureExtractor`` is torch-fidelity's own network (README, "Evaluation", lists what differs before it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gen.metrics import (
    FeatureExtractor,
    FrechetInceptionDistance,
    InceptionScore,
    KernelInceptionDistance,
    ReferenceStatistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
)

fidelity_fid = pytest.importorskip("torch_fidelity.metric_fid")
fidelity_kid = pytest.importorskip("torch_fidelity.metric_kid")
fidelity_isc = pytest.importorskip("torch_fidelity.metric_isc")
pytorch_fid = pytest.importorskip("pytorch_fid.fid_score")


def _features(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """Correlated, non-negative features (like Inception's pool features after a ReLU), in float32."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=g) / dim**0.5
    return ((torch.randn(n, dim, generator=g) + shift) @ mixing).relu().float()


@pytest.mark.parametrize("dim", [64, 256])
def test_fid_agrees_with_torch_fidelity_and_pytorch_fid(dim, tmp_path):
    real, fake = _features(3000, dim, 1), _features(2500, dim, 2, shift=0.3)
    ours = float(frechet_distance(real, fake))
    fidelity = fidelity_fid.fid_statistics_to_metric(fidelity_fid.fid_features_to_statistics(real),
                                                     fidelity_fid.fid_features_to_statistics(fake), verbose=False)
    stats = [(f.double().mean(0).numpy(), np.cov(f.double().numpy(), rowvar=False)) for f in (real, fake)]
    reference = pytorch_fid.calculate_frechet_distance(*stats[0], *stats[1])
    assert ours > 0.05  # far enough from 0 for relative tolerances to mean something
    assert ours == pytest.approx(fidelity["frechet_inception_distance"], rel=1e-6)
    assert ours == pytest.approx(reference, rel=1e-6)
    # our statistics file is pytorch-fid's layout: pytorch-fid reads it and gets the same number
    path = ReferenceStatistics.from_features(real).save(tmp_path / "real.npz")
    with np.load(path) as data:
        assert pytorch_fid.calculate_frechet_distance(data["mu"], data["sigma"], *stats[1]) == pytest.approx(
            ours, rel=1e-6)


def test_kid_agrees_with_torch_fidelity():
    real, fake = _features(500, 32, 3), _features(500, 32, 4, shift=0.2)
    # one subset holding every sample: the unbiased MMD^2 estimate does not depend on which permutation was drawn
    ours, _ = kernel_inception_distance(real, fake, subsets=1, subset_size=500)
    fidelity = fidelity_kid.kid_features_to_metric(real, fake, kid_subsets=1, kid_subset_size=500, verbose=False)
    assert float(ours) > 1e-3
    # torch-fidelity computes the kernel in the features' dtype, we in float64: float32 features put them 2e-6 apart,
    # float64 features make them equal
    assert float(ours) == pytest.approx(fidelity["kernel_inception_distance_mean"], rel=1e-5)
    exact = fidelity_kid.kid_features_to_metric(real.double(), fake.double(), kid_subsets=1, kid_subset_size=500,
                                                verbose=False)
    assert float(ours) == pytest.approx(exact["kernel_inception_distance_mean"], rel=1e-12)
    # with random subsets the two tools draw different ones: the means agree within their spread
    ours_mean, ours_std = kernel_inception_distance(real, fake, subsets=50, subset_size=200,
                                                    generator=torch.Generator().manual_seed(0))
    fidelity = fidelity_kid.kid_features_to_metric(real, fake, kid_subsets=50, kid_subset_size=200, verbose=False)
    spread = (float(ours_std) + fidelity["kernel_inception_distance_std"]) / 50**0.5
    assert abs(float(ours_mean) - fidelity["kernel_inception_distance_mean"]) < 4 * spread


@pytest.mark.parametrize("splits", [1, 5, 7])
def test_inception_score_agrees_with_torch_fidelity(splits):
    logits = torch.randn(1003, 10, generator=torch.Generator().manual_seed(5)) * 3  # 1003: uneven splits too
    mean, std = inception_score(logits, splits)
    fidelity = fidelity_isc.isc_features_to_metric(logits, splits=splits, shuffle=False)
    assert float(mean) == pytest.approx(fidelity["inception_score_mean"], rel=1e-9)
    assert float(std) == pytest.approx(fidelity["inception_score_std"], rel=1e-7, abs=1e-12)
    assert splits == 1 or float(std) > 0


class _Passthrough(nn.Module):
    """Features = the first 5 input values, logits = the rest (images of shape (N, 12, 1, 1))."""

    num_features = 5

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(1)
        return flat[:, :5], flat[:, 5:] * 20


def _images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 12, 1, 1, generator=g) * 0.8 + shift).clamp(-1, 1)


def test_the_metric_classes_give_the_functions_answers():
    """FID, KID and IS (with 4 splits, shuffled with the metric's seed) from the torchmetrics path equal the functional
    twins on the same features."""
    extractor = FeatureExtractor(_Passthrough())
    real, fake = _images(400, 1), _images(300, 2, shift=-0.3)
    features = {name: extractor.extract(x)[0] for name, x in (("real", real), ("fake", fake))}
    fid = FrechetInceptionDistance(extractor=extractor)
    kid = KernelInceptionDistance(extractor=extractor, subsets=1, subset_size=300)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    assert float(fid.compute()) == pytest.approx(float(frechet_distance(features["real"], features["fake"])),
                                                 rel=1e-5)
    torch.manual_seed(7)  # torchmetrics' KID draws its subsets from the global random state
    kid_mean, _ = kid.compute()
    torch.manual_seed(7)
    chosen_real, chosen_fake = torch.randperm(400)[:300], torch.randperm(300)[:300]
    expected_kid, _ = kernel_inception_distance(features["real"][chosen_real], features["fake"][chosen_fake], 1, 300)
    assert float(kid_mean) == pytest.approx(float(expected_kid), rel=1e-5) and float(expected_kid) > 1e-3
    score = InceptionScore(extractor=extractor, splits=4, seed=3)
    score.update(fake[:150])
    score.update(fake[150:])
    logits = extractor.extract(fake)[1]
    order = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    expected = inception_score(logits[order], 4)
    got = score.compute()
    assert float(got[0]) == pytest.approx(float(expected[0]), rel=1e-6)
    assert float(got[1]) == pytest.approx(float(expected[1]), rel=1e-5) and float(expected[1]) > 0
