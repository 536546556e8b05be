"""Tests for the conditional mode and the stabilizer options of lightning_gen/modules/gan.py."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import GAN, WGANGP, ConditionalGAN
from lightning_gen.nets import MLPDiscriminator, MLPGenerator
from lightning_gen.nets.mlp import mlp


class CondGenerator(nn.Module):
    """Tiny conditional MLP generator: noise concatenated with a one-hot label."""

    def __init__(self, latent_dim: int = 2, num_classes: int = 2, out_dim: int = 2) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = mlp(latent_dim + num_classes, (32, 32), out_dim, "relu")

    def forward(self, z, labels):
        return self.net(torch.cat([z, F.one_hot(labels, self.num_classes).float()], 1))


class CondDiscriminator(nn.Module):
    """Tiny conditional MLP discriminator with a ``features`` method."""

    def __init__(self, in_dim: int = 2, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = mlp(in_dim + num_classes, (32,), 32, "leaky_relu")
        self.head = nn.Linear(32, 1)

    def features(self, x, labels):
        return F.leaky_relu(self.body(torch.cat([x, F.one_hot(labels, self.num_classes).float()], 1)), 0.2)

    def forward(self, x, labels):
        return self.head(self.features(x, labels)).squeeze(1)


class FeatureMLPDiscriminator(MLPDiscriminator):
    """The toy discriminator with a ``features`` method (its last hidden layer)."""

    def features(self, x):
        return self.net[:-1](x.flatten(1) / self.input_scale)


def adam(lr: float = 1e-3):
    return partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.9))


def loader(x, y=None, batch_size=64, shuffle=True):
    ds = TensorDataset(x) if y is None else TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=True)


def fit(model, data, trainer_kwargs, **kwargs):
    trainer = L.Trainer(limit_val_batches=0, **{**trainer_kwargs, **kwargs})
    trainer.fit(model, train_dataloaders=data)
    return trainer


def test_conditional_gan_puts_each_class_where_its_data_is(tiny_trainer_kwargs):
    L.seed_everything(0)
    n = 2048
    y = torch.randint(0, 2, (n,))
    centers = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    x = centers[y] + 0.1 * torch.randn(n, 2)
    model = ConditionalGAN(CondGenerator(), CondDiscriminator(), generator_optimizer=adam(), discriminator_optimizer=adam())
    fit(model, loader(x, y), tiny_trainer_kwargs, max_steps=600)
    g = torch.Generator().manual_seed(1)
    for label in (0, 1):
        samples = model.sample(500, generator=g, labels=label)
        assert_close(samples.mean(0), centers[label], atol=0.25, rtol=0)
    # default labels alternate classes: i % num_classes
    both = model.sample(400, generator=g)
    assert_close(both[0::2].mean(0), centers[0], atol=0.25, rtol=0)
    assert_close(both[1::2].mean(0), centers[1], atol=0.25, rtol=0)


def test_conditional_batches_need_labels_and_nets_must_agree(tiny_trainer_kwargs):
    model = GAN(CondGenerator(), CondDiscriminator())
    with pytest.raises(ValueError, match="labels"):
        fit(model, loader(torch.randn(128, 2)), tiny_trainer_kwargs, max_steps=1)
    with pytest.raises(ValueError, match="num_classes"):
        GAN(CondGenerator(num_classes=2), CondDiscriminator(num_classes=3))
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalGAN(MLPGenerator(2, 2), MLPDiscriminator(2))
    with pytest.raises(ValueError, match="labels"):
        GAN(MLPGenerator(2, 2), MLPDiscriminator(2)).sample(4, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.sample(4, labels=torch.tensor([0, 1, 2, 0]))


def test_conditional_predict_uses_the_batch_labels():
    model = GAN(CondGenerator(), CondDiscriminator())
    z_labels = torch.tensor([1, 1, 0])
    torch.manual_seed(0)
    out = model.predict_step((torch.arange(3), z_labels), 0)
    torch.manual_seed(0)
    assert_close(out, model.generate(model.noise(3), z_labels))


def test_one_sided_label_smoothing_caps_the_optimal_discriminator_at_the_target(tiny_trainer_kwargs):
    # With a frozen generator far from the data, the optimal smoothed discriminator gives real data 1 - s
    # (Salimans 2016, sec. 3.4: D*(x) = (1 - s) p_data / (p_data + p_model) with p_model = 0 there).
    results = {}
    for smoothing in (0.0, 0.1):
        L.seed_everything(0)
        x = torch.randn(1024, 2) * 0.1 + 3.0
        model = GAN(
            MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (32, 32)), label_smoothing=smoothing,
            generator_optimizer=partial(torch.optim.SGD, lr=0.0), discriminator_optimizer=adam(3e-3),
        )
        fit(model, loader(x), tiny_trainer_kwargs, max_steps=400)
        results[smoothing] = torch.sigmoid(model.discriminate(x)).mean().item()
    assert results[0.1] == pytest.approx(0.9, abs=0.02)
    assert results[0.0] > 0.97
    with pytest.raises(ValueError, match="label_smoothing"):
        GAN(MLPGenerator(2, 2), MLPDiscriminator(2), loss="wasserstein", label_smoothing=0.1)


class RecordingDiscriminator(MLPDiscriminator):
    """Records every input it sees while training."""

    def __init__(self) -> None:
        super().__init__(2, (8,))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.inputs.append(x.detach().clone())
        return super().forward(x)


def test_instance_noise_is_added_to_discriminator_inputs_and_annealed(tiny_trainer_kwargs):
    L.seed_everything(0)
    D = RecordingDiscriminator()
    model = GAN(MLPGenerator(2, 2, (8,)), D, instance_noise=0.5, instance_noise_anneal_steps=4)
    zeros = torch.zeros(4096, 2)
    fit(model, loader(zeros, batch_size=2048, shuffle=False), tiny_trainer_kwargs, max_steps=3)
    # critic step k (k = 0, 1, 2) sees the real batch first, with std 0.5 * (1 - k / 4) at generator step k
    real_inputs = D.inputs[0::3]  # each generator step: real, fake (critic), fake (generator)
    for k, seen in enumerate(real_inputs):
        assert seen.std().item() == pytest.approx(0.5 * (1 - k / 4), rel=0.05)
    assert model.current_instance_noise() == pytest.approx(0.5 * (1 - 3 / 4))


def test_feature_matching_adds_the_weighted_term(tiny_trainer_kwargs):
    L.seed_everything(0)
    D = FeatureMLPDiscriminator(2, (16, 16))
    model = GAN(MLPGenerator(2, 2, (16,)), D, feature_matching_weight=2.0)
    real = torch.randn(64, 2)
    fake = model.generator(model.noise(64))
    expected = (D.features(real).mean(0) - D.features(fake).mean(0)).pow(2).sum()
    assert_close(model._feature_matching(real, fake, None), expected)
    trainer = fit(model, loader(torch.randn(512, 2)), tiny_trainer_kwargs, max_steps=4, log_every_n_steps=1)
    assert "train/feature_matching" in trainer.callback_metrics
    with pytest.raises(ValueError, match="features"):
        GAN(MLPGenerator(2, 2), MLPDiscriminator(2), feature_matching_weight=1.0)


class GeneratorSnapshots(L.Callback):
    """Copies the generator's parameters after every training batch."""

    def __init__(self) -> None:
        self.g: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.g.append([p.detach().clone() for p in pl_module.generator.parameters()])


def test_historical_average_is_the_mean_of_all_past_parameters(tiny_trainer_kwargs):
    L.seed_everything(0)
    model = GAN(MLPGenerator(2, 2, (8,)), MLPDiscriminator(2, (8,)), historical_averaging_weight=0.5)
    initial = [p.detach().clone() for p in model.generator.parameters()]
    snap = GeneratorSnapshots()
    fit(model, loader(torch.randn(512, 2)), tiny_trainer_kwargs, max_steps=5, callbacks=[snap])
    history = [initial] + snap.g  # n_critic = 1: one generator step per batch
    for i, mean in enumerate(model.generator_average.means()):
        assert_close(mean, torch.stack([h[i] for h in history]).mean(0), rtol=1e-5, atol=1e-6)
    assert int(model.generator_average.count) == 6


def test_ema_generator_tracks_the_generator_and_is_used_for_sampling(tiny_trainer_kwargs):
    L.seed_everything(0)
    model = GAN(MLPGenerator(2, 2, (8,)), MLPDiscriminator(2, (8,)), ema_decay=0.9, ema_warmup=False)
    expected = [p.detach().clone() for p in model.generator.parameters()]
    snap = GeneratorSnapshots()
    fit(model, loader(torch.randn(512, 2)), tiny_trainer_kwargs, max_steps=6, callbacks=[snap])
    for params in snap.g:
        expected = [0.9 * e + 0.1 * p for e, p in zip(expected, params)]
    for e, p in zip(expected, model.generator_ema.module.parameters()):
        assert_close(p, e, rtol=1e-5, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    assert_close(model.sample(10, generator=g), model.generator_ema.module(z))
    assert not torch.allclose(model.sample(10, generator=torch.Generator().manual_seed(0)), model.generator(z))


def test_python_built_named_game_reloads_from_its_checkpoint(tmp_path, tiny_trainer_kwargs):
    model = WGANGP(MLPGenerator(2, 2, (8,)), MLPDiscriminator(2, (8,)), gp_weight=3.0, n_critic=2, ema_decay=0.99)
    assert "regularizer_weight" not in model.hparams and model.hparams["gp_weight"] == 3.0
    trainer = fit(model, loader(torch.randn(256, 2)), tiny_trainer_kwargs, max_steps=2)
    path = tmp_path / "wgangp.ckpt"
    trainer.save_checkpoint(path)
    again = WGANGP.load_from_checkpoint(path, generator=MLPGenerator(2, 2, (8,)), discriminator=MLPDiscriminator(2, (8,)))
    assert again.regularizer_weight == 3.0 and again.n_critic == 2
    assert_close(again.generator_ema.module.net[0].weight, model.generator_ema.module.net[0].weight)


def test_relativistic_average_loss_scores_the_real_batch_in_the_generator_step():
    """RaGAN through the registered loss: the generator's loss sees the running step's real scores, and the critic's
    loss gets label smoothing; both equal the pure functions on the same scores."""
    from lightning_gen.losses import relativistic_average_loss_dis, relativistic_average_loss_gen

    torch.manual_seed(0)
    model = GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), loss="relativistic_average",
                label_smoothing=0.1)
    real, fake = torch.randn(32, 2), torch.randn(32, 2)
    model.current_real = real
    r, f = model.discriminator(real), model.discriminator(fake)
    assert_close(model.generator_loss(fake), relativistic_average_loss_gen(f, r))
    loss_d, _ = model.critic_loss(real, fake)
    assert_close(loss_d, relativistic_average_loss_dis(r, f, real_target=0.9))
    assert not torch.allclose(loss_d, relativistic_average_loss_dis(r, f))  # the smoothing is applied


def test_relativistic_loss_trains_from_a_name_with_the_stabilizers(tiny_trainer_kwargs):
    """`loss: relativistic` (RSGAN) with instance noise and R1 trains through Lightning (no subclass needed)."""
    L.seed_everything(0)
    data = DataLoader(TensorDataset(torch.randn(256, 2)), batch_size=32, shuffle=True)
    model = GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), loss="rsgan", instance_noise=0.1,
                regularizer="r1", regularizer_weight=1.0)
    init = [p.clone() for p in model.generator.parameters()]
    trainer = L.Trainer(max_steps=5, log_every_n_steps=1, **tiny_trainer_kwargs)
    trainer.fit(model, data)
    assert model.loss.name == "relativistic" and trainer.global_step == 5
    assert torch.isfinite(trainer.callback_metrics["train/loss_gen"]) and "train/penalty" in trainer.callback_metrics
    assert all(not torch.equal(a, p) for a, p in zip(init, model.generator.parameters()))


# -- BigGAN's orthogonal regularization of the generator -------------------------------------------------------------
class ZeroAdversarialGAN(GAN):
    """A GAN whose generator loss has no adversarial part: its step follows the orthogonal regularization alone."""

    def generator_loss(self, fake, labels=None):
        return 0.0 * fake.sum()


def test_orthogonal_reg_adds_beta_times_the_penalty_to_the_generator_step(tiny_trainer_kwargs):
    from lightning_gen.losses import orthogonal_regularization

    L.seed_everything(0)
    beta, lr = 0.5, 0.1
    model = ZeroAdversarialGAN(MLPGenerator(2, 2, (8, 8)), MLPDiscriminator(2, (8,)), orthogonal_reg=beta,
                               generator_optimizer=partial(torch.optim.SGD, lr=lr))
    weights = [m.weight.detach().clone() for m in model.generator.modules() if isinstance(m, nn.Linear)]
    biases = [m.bias.detach().clone() for m in model.generator.modules() if isinstance(m, nn.Linear)]
    initial = orthogonal_regularization(weights)
    trainer = fit(model, loader(torch.randn(128, 2)), tiny_trainer_kwargs, max_steps=1, log_every_n_steps=1)
    assert_close(trainer.callback_metrics["train/orthogonal_reg"], initial)  # logged unweighted
    layers = [m for m in model.generator.modules() if isinstance(m, nn.Linear)]
    for w, b, layer in zip(weights, biases, layers):
        off = (w @ w.T) * (1 - torch.eye(w.shape[0]))
        assert_close(layer.weight.detach(), w - lr * beta * 4 * off @ w)  # one SGD step on beta * R(W)
        assert torch.equal(layer.bias.detach(), b)  # biases are not regularized


def test_orthogonal_reg_off_by_default_and_validated(tiny_trainer_kwargs):
    L.seed_everything(0)
    model = GAN(MLPGenerator(2, 2, (8,)), MLPDiscriminator(2, (8,)))
    assert model.orthogonal_reg == 0.0
    trainer = fit(model, loader(torch.randn(128, 2)), tiny_trainer_kwargs, max_steps=1, log_every_n_steps=1)
    assert "train/orthogonal_reg" not in trainer.callback_metrics
    with pytest.raises(ValueError, match="orthogonal_reg must be >= 0"):
        GAN(MLPGenerator(2, 2), MLPDiscriminator(2), orthogonal_reg=-1e-4)


def test_cli_sets_orthogonal_reg_and_batchnorm_conditioning_from_yaml(tmp_path):
    from pathlib import Path

    from lightning_gen.cli import GenerativeCLI
    from lightning_gen.nets import ConditionalBatchNorm2d

    override = tmp_path / "biggan_tricks.yaml"
    override.write_text(
        "model:\n  init_args:\n    orthogonal_reg: 1.0e-4\n"
        "    generator:\n      init_args: {conditioning: batchnorm}\n"
        "    discriminator:\n      init_args: {projection: true}\n"
    )
    config = Path(__file__).resolve().parents[2] / "configs" / "cgan" / "mnist.yaml"
    cli = GenerativeCLI(args=["--config", str(config), "--config", str(override), "--trainer.logger=false"],
                        run=False)
    assert isinstance(cli.model, ConditionalGAN) and cli.model.orthogonal_reg == 1e-4
    assert cli.model.generator.conditioning == "batchnorm" and cli.model.discriminator.projection
    assert any(isinstance(m, ConditionalBatchNorm2d) for m in cli.model.generator.modules())


def test_conditional_gan_with_batchnorm_conditioning_and_projection_trains(tiny_trainer_kwargs):
    from lightning_gen.nets import DCGANDiscriminator, DCGANGenerator

    L.seed_everything(0)
    g = DCGANGenerator(latent_dim=8, image_size=28, channels=1, base_channels=4, num_classes=3, conditioning="batchnorm")
    d = DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=3, projection=True)
    model = ConditionalGAN(g, d, orthogonal_reg=1e-4)
    gains = [p.detach().clone() for n, p in g.named_parameters() if n.endswith("gamma.weight")]
    x, y = torch.rand(48, 1, 28, 28) * 2 - 1, torch.arange(48) % 3
    trainer = fit(model, loader(x, y, batch_size=16), tiny_trainer_kwargs, max_steps=2, log_every_n_steps=1)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss_gen"]) and "train/orthogonal_reg" in trainer.callback_metrics
    after = [p for n, p in g.named_parameters() if n.endswith("gamma.weight")]
    assert all(not torch.equal(a, b) for a, b in zip(gains, after))  # the per-class gains are trained
    samples = model.sample(6, generator=torch.Generator().manual_seed(0), labels=torch.tensor([0, 1, 2, 0, 1, 2]),
                           truncation=1.0)
    assert samples.shape == (6, 1, 28, 28)
