"""Tests for lightning_gen/modules/autoencoder.py: the VAE's bounds against an exactly solvable model, training
towards the maximum-likelihood value, binarization; the autoencoders' latent Gaussian and the optimal denoiser."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import VAE, Autoencoder, DenoisingAutoencoder
from lightning_gen.losses import gaussian_kl
from lightning_gen.nets import MLPDecoder, MLPEncoder

# a linear-Gaussian model: z ~ N(0, 1), x | z ~ N(A z + B, S^2), so x ~ N(B, A^2 + S^2) and the posterior is
# N(A (x - B) / (A^2 + S^2), S^2 / (A^2 + S^2)): a VAE whose encoder computes it exactly has ELBO = log p(x).
A, B, S = 1.5, 0.3, 0.5


def exact_linear_gaussian_vae() -> VAE:
    enc, dec = MLPEncoder(1, 2, ()), MLPDecoder(1, 1, ())
    var_x = A * A + S * S
    with torch.no_grad():
        enc.net[0].weight.copy_(torch.tensor([[A / var_x], [0.0]]))
        enc.net[0].bias.copy_(torch.tensor([-A * B / var_x, math.log(S * S / var_x)]))
        dec.net[0].weight.fill_(A)
        dec.net[0].bias.fill_(B)
    return VAE(enc, dec, likelihood="gaussian", decoder_std=S, data_range=None).double()


def log_marginal(x: torch.Tensor) -> torch.Tensor:
    var_x = A * A + S * S
    return -0.5 * (math.log(2 * math.pi * var_x) + (x.squeeze(1) - B) ** 2 / var_x)


@pytest.mark.parametrize("num_samples", [2, 7, 200])
def test_importance_weighted_bound_equals_log_p_x_when_the_posterior_is_exact(num_samples):
    # every importance weight p(x, z) / q(z | x) equals p(x), whatever z is drawn
    model = exact_linear_gaussian_vae()
    x = torch.linspace(-3, 3, 11, dtype=torch.float64).unsqueeze(1)
    bound = model.log_prob(x, num_samples=num_samples, generator=torch.Generator().manual_seed(0), chunk_size=16)
    torch.testing.assert_close(bound, log_marginal(x), rtol=0, atol=1e-6)  # the nets hold float32-rounded weights


def test_one_sample_elbo_is_unbiased_for_log_p_x_when_the_posterior_is_exact():
    # with the analytic KL, one draw gives log p(x) + (log p(x|z) - E_q log p(x|z)): mean log p(x), spread known
    model = exact_linear_gaussian_vae()
    x = torch.full((40000, 1), 0.8, dtype=torch.float64)
    elbo = model.log_prob(x, num_samples=1, generator=torch.Generator().manual_seed(0))
    var_post = S * S / (A * A + S * S)
    spread = math.sqrt(0.5) * A * A * var_post / (S * S)  # std of (A^2 / 2 S^2) (z - m)^2 ... = A^2 v / (sqrt(2) S^2)
    assert float(elbo.std()) == pytest.approx(spread, rel=0.03)
    assert float(elbo.mean()) == pytest.approx(float(log_marginal(x[:1])), abs=4 * spread / math.sqrt(40000))


def test_importance_weighting_tightens_a_loose_bound():
    # a posterior that ignores x (the prior): the ELBO is loose; the IW bound rises with K towards log p(x)
    model = exact_linear_gaussian_vae()
    with torch.no_grad():
        model.encoder.net[0].weight.zero_()
        model.encoder.net[0].bias.zero_()
    x = torch.full((2000, 1), 1.0, dtype=torch.float64)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    exact = float(log_marginal(x[:1]))
    b1, b10, b1000 = (float(model.log_prob(x, k, g(), chunk_size=500).mean()) for k in (1, 10, 1000))
    assert b1 < b10 < b1000 < exact + 1e-3
    # K = 1 is the ELBO: E log p(x|z) - KL(prior || prior) = E_z log N(x; A z + B, S^2), in closed form
    elbo = -0.5 * (math.log(2 * math.pi * S * S) + ((1.0 - B) ** 2 + A * A) / (S * S))
    assert b1 == pytest.approx(elbo, abs=4 * 2.0 / math.sqrt(2000))
    assert exact - b1000 < 0.05


def test_logged_kl_is_the_closed_form_of_the_encoder_output():
    torch.manual_seed(0)
    model = VAE(MLPEncoder(4, 6, (8,)), MLPDecoder(3, 4, (8,)), likelihood="gaussian", data_range=None)
    x = torch.randn(5, 4)
    terms = model.elbo_terms(x, torch.Generator().manual_seed(0))
    mu, logvar = model.encoder(x).chunk(2, dim=1)
    torch.testing.assert_close(terms["kl"], gaussian_kl(mu, logvar, reduction="none"))
    torch.testing.assert_close(terms["elbo"], terms["log_likelihood"] - terms["kl"])


def test_training_reaches_the_maximum_likelihood_elbo(tiny_trainer_kwargs):
    # data from the linear-Gaussian model: the best ELBO of the (exactly expressive) VAE family is the data's
    # average log-likelihood under the fitted Gaussian, -1/2 log(2 pi e var_x)
    L.seed_everything(0)
    x = B + math.sqrt(A * A + S * S) * torch.randn(4096, 1)
    model = VAE(MLPEncoder(1, 2, ()), MLPDecoder(1, 1, ()), likelihood="gaussian", data_range=None,
                optimizer=partial(torch.optim.Adam, lr=2e-2))
    trainer = L.Trainer(max_epochs=25, limit_val_batches=0, **tiny_trainer_kwargs)
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=256, shuffle=True))
    best = -0.5 * math.log(2 * math.pi * math.e * float(x.var()))
    # (not seed 0: that stream drew x itself)
    elbo = float(model.log_prob(x.repeat(20, 1), 1, torch.Generator().manual_seed(5)).mean())  # one-sample: average
    iw = float(model.log_prob(x, 100, torch.Generator().manual_seed(5)).mean())
    assert best - 0.03 < elbo < iw + 0.003  # E[ELBO] <= IW bound (up to the ELBO's Monte Carlo error)
    assert best - 0.02 < iw < best + 0.01   # the fitted Gaussian can only beat the sample's own by chance
    # an untrained model is far from it
    fresh = VAE(MLPEncoder(1, 2, ()), MLPDecoder(1, 1, ()), likelihood="gaussian", data_range=None)
    assert float(fresh.log_prob(x, 1, torch.Generator().manual_seed(0)).mean()) < best - 0.3


def test_dynamic_binarization_draws_each_pixel_with_its_grey_level():
    model = VAE(MLPEncoder(4, 4, ()), MLPDecoder(2, 4, ()))
    grey = torch.tensor([-1.0, -0.5, 0.5, 1.0])  # p = 0, 0.25, 0.75, 1 in [0, 1]
    x = grey.expand(40000, 4)
    t = model.targets(x, torch.Generator().manual_seed(0))
    assert set(t.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(t.mean(0), torch.tensor([0.0, 0.25, 0.75, 1.0]), rtol=0, atol=4 * 0.433 / 200)
    torch.testing.assert_close(t, model.targets(x, torch.Generator().manual_seed(0)))  # seeded: reproducible
    # without binarization the grey levels themselves are the targets
    plain = VAE(MLPEncoder(4, 4, ()), MLPDecoder(2, 4, ()), binarize=False)
    torch.testing.assert_close(plain.targets(grey[None]), torch.tensor([[0.0, 0.25, 0.75, 1.0]]))


def test_vae_samples_are_decoder_means_of_prior_codes():
    torch.manual_seed(0)
    model = VAE(MLPEncoder((1, 4, 4), 4, (8,)), MLPDecoder(2, (1, 4, 4), (8,)))
    z = model.noise(6, torch.Generator().manual_seed(3))
    expected = torch.sigmoid(model.decoder(z)) * 2 - 1
    torch.testing.assert_close(model.sample(6, generator=torch.Generator().manual_seed(3)), expected)
    drawn = VAE(model.encoder, model.decoder, sample_mean=False).sample(500, generator=torch.Generator().manual_seed(0))
    assert set(drawn.unique().tolist()) == {-1.0, 1.0}


def test_autoencoder_fits_the_gaussian_of_its_codes(tiny_trainer_kwargs):
    # lr 0: the encoder stays fixed for the epoch, so the fitted Gaussian is the codes' exact mean and covariance
    L.seed_everything(0)
    x = torch.randn(600, 3) @ torch.tensor([[2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -0.3, 0.2]]) + 1.0
    model = Autoencoder(MLPEncoder(3, 3, ()), MLPDecoder(3, 3, ()), data_range=None,
                        optimizer=partial(torch.optim.SGD, lr=0.0))
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, **tiny_trainer_kwargs)
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=64))
    with torch.no_grad():
        codes = model.encoder(x).double()
    torch.testing.assert_close(model.latent_mean.double(), codes.mean(0), rtol=0, atol=1e-5)
    cov = model.latent_scale_tril.double() @ model.latent_scale_tril.double().T
    torch.testing.assert_close(cov, torch.cov(codes.T), rtol=0, atol=1e-4)
    # samples are decoded draws of that Gaussian; fit_latent_gaussian refits the same values from a loader
    z = model.noise(20000, torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(z.mean(0), codes.mean(0), rtol=0, atol=4 * codes.std(0).max().item() / math.sqrt(20000))
    mean_before = model.latent_mean.clone()
    model.fit_latent_gaussian(DataLoader(TensorDataset(x), batch_size=100))
    torch.testing.assert_close(model.latent_mean, mean_before, rtol=0, atol=1e-5)


def test_denoising_autoencoder_learns_the_bayes_optimal_linear_denoiser(tiny_trainer_kwargs):
    # x ~ N(0, 1), input x + sigma eps: the MSE-optimal reconstruction is E[x | x~] = x~ / (1 + sigma^2)
    L.seed_everything(0)
    sigma = 1.0
    model = DenoisingAutoencoder(MLPEncoder(1, 1, ()), MLPDecoder(1, 1, ()), noise_std=sigma, data_range=None,
                                 optimizer=partial(torch.optim.Adam, lr=1e-2))
    x = torch.randn(8192, 1)
    trainer = L.Trainer(max_epochs=15, limit_val_batches=0, **tiny_trainer_kwargs)
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=256, shuffle=True))
    with torch.no_grad():
        slope = float(model.decoder(model.encoder(torch.ones(1, 1))) - model.decoder(model.encoder(torch.zeros(1, 1))))
    assert slope == pytest.approx(1.0 / (1.0 + sigma * sigma), abs=0.05)
    corrupted = model.corrupt(torch.zeros(20000, 1), torch.Generator().manual_seed(0))
    assert float(corrupted.std()) == pytest.approx(sigma, rel=0.03)
    # a plain autoencoder learns the identity instead
    L.seed_everything(0)
    plain = Autoencoder(MLPEncoder(1, 1, ()), MLPDecoder(1, 1, ()), data_range=None,
                        optimizer=partial(torch.optim.Adam, lr=1e-2))
    L.Trainer(max_epochs=15, limit_val_batches=0, **tiny_trainer_kwargs).fit(
        plain, DataLoader(TensorDataset(x), batch_size=256, shuffle=True))
    with torch.no_grad():
        slope = float(plain.decoder(plain.encoder(torch.ones(1, 1))) - plain.decoder(plain.encoder(torch.zeros(1, 1))))
    assert slope == pytest.approx(1.0, abs=0.05)


def test_errors_say_what_to_do():
    enc, dec = MLPEncoder(4, 4, ()), MLPDecoder(2, 4, ())
    with pytest.raises(ValueError, match="bounded `data_range`"):
        VAE(enc, dec, likelihood="bernoulli", data_range=None)
    with pytest.raises(ValueError, match="likelihood"):
        VAE(enc, dec, likelihood="laplace")
    with pytest.raises(ValueError, match="2 \\* latent_dim"):
        VAE(MLPEncoder(4, 3, ()), dec).encode(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="noise_std > 0"):
        DenoisingAutoencoder(enc, dec, noise_std=0.0)
    with pytest.raises(ValueError, match="reconstruction"):
        Autoencoder(enc, dec, reconstruction="l1")
    with pytest.raises(RuntimeError, match="fit_latent_gaussian"):
        Autoencoder(MLPEncoder(4, 2, ()), dec).sample(3)
    with pytest.raises(TypeError, match="unexpected arguments"):
        VAE(enc, dec).sample(3, labels=1)
    with pytest.raises(ValueError, match="unconditional"):
        VAE(enc, dec).generate(torch.zeros(1, 2), labels=torch.zeros(1))


def test_a_non_finite_loss_stops_training_with_advice_unless_the_check_is_off(tiny_trainer_kwargs):
    x = torch.randn(64, 2)
    x[5, 0] = float("nan")
    model = VAE(MLPEncoder(2, 4, ()), MLPDecoder(2, 2, ()), likelihood="gaussian", data_range=None)
    with pytest.raises(FloatingPointError, match="learning rate or enable gradient clipping"):
        L.Trainer(max_epochs=1, limit_val_batches=0, **tiny_trainer_kwargs).fit(model, DataLoader(TensorDataset(x), batch_size=64))
    model.detect_non_finite = False
    L.Trainer(max_epochs=1, limit_val_batches=0, **tiny_trainer_kwargs).fit(model, DataLoader(TensorDataset(x), batch_size=64))
    assert torch.isnan(model.decoder.net[0].weight).any()  # unchecked, the NaN reached the weights
