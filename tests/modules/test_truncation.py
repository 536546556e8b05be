"""The truncation trick (Brock et al. 2019) in every noise-driven ``sample()``: GAN, cGAN, AE, VAE, RealNVP, InfoGAN,
BiGAN.

Each sample must come from the same noise the module would draw, truncated by
:func:`lightning_gen.noise.truncated_randn`; ``truncation=None`` must be the old ``sample()`` exactly.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

import lightning_gen
from lightning_gen.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    JointMLPDiscriminator,
    MLPDecoder,
    MLPDiscriminator,
    MLPEncoder,
    MLPGenerator,
    MLPInfoGANDiscriminator,
    VectorRealNVP,
)
from lightning_gen.noise import randn, truncated_randn


def _gan() -> lightning_gen.GenerativeModule:
    return lightning_gen.GAN(MLPGenerator(4, 2, (16,)), MLPDiscriminator(2, (16,)))


def _cgan() -> lightning_gen.GenerativeModule:
    return lightning_gen.ConditionalGAN(
        DCGANGenerator(latent_dim=8, image_size=28, channels=1, base_channels=4, num_classes=3),
        DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=3),
    )


def _autoencoder() -> lightning_gen.GenerativeModule:
    model = lightning_gen.Autoencoder(MLPEncoder(2, 3, (16,)), MLPDecoder(3, 2, (16,)), data_range=None)
    model.latent_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    model.latent_scale_tril.copy_(torch.tensor([[2.0, 0, 0], [0.5, 1.0, 0], [0, 0.3, 0.1]]))
    model.latent_fitted.fill_(True)
    return model


def _vae() -> lightning_gen.GenerativeModule:
    return lightning_gen.VAE(MLPEncoder(2, 6, (16,)), MLPDecoder(3, 2, (16,)), likelihood="gaussian", data_range=None)


def _realnvp() -> lightning_gen.GenerativeModule:
    return lightning_gen.RealNVP(VectorRealNVP(2, 4, (16, 16)), temperature=0.7)


def _infogan() -> lightning_gen.GenerativeModule:
    return lightning_gen.InfoGAN(MLPGenerator(3 + 4 + 1, 2, (16,)), MLPInfoGANDiscriminator(2, 4, 1, (16,), (8,)))


def _bigan() -> lightning_gen.GenerativeModule:
    return lightning_gen.BiGAN(MLPGenerator(4, 2, (16,)), MLPEncoder(2, 4, (16,)), JointMLPDiscriminator(2, 4, (16,)))


BUILDERS: dict[str, Callable[[], lightning_gen.GenerativeModule]] = {
    "gan": _gan, "cgan": _cgan, "autoencoder": _autoencoder, "vae": _vae, "realnvp": _realnvp, "infogan": _infogan,
    "bigan": _bigan,
}


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request) -> lightning_gen.GenerativeModule:
    torch.manual_seed(0)
    return BUILDERS[request.param]().eval()


def test_truncation_none_is_the_old_sample(model):
    plain = model.sample(16, generator=_seeded(3))
    assert torch.equal(model.sample(16, generator=_seeded(3), truncation=None), plain)
    truncated = model.sample(16, generator=_seeded(3), truncation=0.5)
    assert torch.equal(model.sample(16, generator=_seeded(3), truncation=0.5), truncated)  # reproducible
    assert truncated.shape == plain.shape and not torch.equal(truncated, plain)


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan")])
def test_a_non_positive_truncation_is_refused(model, bad):
    with pytest.raises(ValueError, match="truncation must be a positive number"):
        model.sample(2, generator=_seeded(0), truncation=bad)


def test_gan_samples_are_the_generator_on_truncated_noise():
    model = _cgan().eval()
    z = truncated_randn((12, 8), 0.7, _seeded(1))
    labels = torch.arange(12) % 3
    torch.testing.assert_close(model.sample(12, generator=_seeded(1), truncation=0.7), model.generate(z, labels),
                               rtol=0, atol=0)


def test_vae_and_autoencoder_codes_are_truncated_before_the_fitted_gaussian():
    vae, ae = _vae(), _autoencoder()
    torch.testing.assert_close(vae.noise(50, _seeded(2), truncation=0.3), truncated_randn((50, 3), 0.3, _seeded(2)),
                               rtol=0, atol=0)
    eps = truncated_randn((50, 3), 0.3, _seeded(2))
    torch.testing.assert_close(ae.noise(50, _seeded(2), truncation=0.3), ae.latent_mean + eps @ ae.latent_scale_tril.T)
    # untruncated codes are the old randn draws
    torch.testing.assert_close(vae.noise(50, _seeded(2)), randn((50, 3), _seeded(2)), rtol=0, atol=0)


def test_realnvp_truncates_before_the_temperature():
    model = _realnvp().eval()
    z = truncated_randn((20, 2), 0.4, _seeded(4)) * 0.7
    with torch.no_grad():
        expected = model.postprocess(model.flow.inverse(z))
    torch.testing.assert_close(model.sample(20, generator=_seeded(4), truncation=0.4), expected, rtol=0, atol=0)


def test_ddpm_does_not_take_a_truncation():
    from lightning_gen.nets import MLPDenoiser

    model = lightning_gen.DDPM(MLPDenoiser(2, (16,), 8), num_timesteps=5, schedule="cosine")
    with pytest.raises(TypeError, match="truncation"):
        model.sample(2, truncation=1.0)


def test_infogan_truncates_the_noise_and_keeps_the_codes():
    model = _infogan().eval()
    parts = model.sample_codes(10, _seeded(5), {"categorical": 2}, truncation=0.3)
    plain = model.sample_codes(10, _seeded(5), {"categorical": 2})
    torch.testing.assert_close(parts["noise"], truncated_randn((10, 3), 0.3, _seeded(5)), rtol=0, atol=0)
    assert torch.equal(parts["categorical"], plain["categorical"]) and bool((parts["categorical"] == 2).all())
    assert parts["continuous"].shape == (10, 1)
    torch.testing.assert_close(model.sample(10, generator=_seeded(5), codes={"categorical": 2}, truncation=0.3),
                               model.generate(model.generator_input(**parts)), rtol=0, atol=0)


def test_bigan_samples_are_the_generator_on_truncated_noise():
    model = _bigan().eval()
    z = truncated_randn((9, 4), 0.6, _seeded(6))
    torch.testing.assert_close(model.sample(9, generator=_seeded(6), truncation=0.6), model.generate(z), rtol=0, atol=0)
