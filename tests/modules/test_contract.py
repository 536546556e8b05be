"""The one `sample()` contract every generative module keeps (tests/modules/*: each family's own theory tests).

For every family, on toy vectors and on small images: ``sample(n, generator=...)`` returns ``n`` samples of the
data's shape and range, is reproducible with a seeded generator (and leaves the global random state alone),
gives the same samples after loading a checkpoint, and works with the sample-grid and metrics callbacks. Density
models (VAE, RealNVP, RBM) also expose ``log_prob(x)``, one finite value per example.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import lightning_gen
from lightning_gen.callbacks import GenerativeMetricsCallback, SampleGridCallback, ToyMetricsCallback, ToyScatterCallback
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.metrics import FeatureExtractor
from lightning_gen.nets import (
    BernoulliRBM,
    DCGANDiscriminator,
    DCGANGenerator,
    DCGANInfoGANDiscriminator,
    ImageRealNVP,
    JointMLPDiscriminator,
    MLPDecoder,
    MLPDenoiser,
    MLPDiscriminator,
    MLPEncoder,
    MLPGenerator,
    MLPInfoGANDiscriminator,
    UNet,
    VectorRealNVP,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))

from metrics_fakes import BlobImages, SmallConvFeatures  # noqa: E402

IMAGE = (1, 16, 16)


class Blobs28(BlobImages):
    """The blob images resized to 28 px (for the DCGAN nets, which take 28, 32 or 64 px)."""

    def __init__(self) -> None:
        super().__init__(train_size=120, test_size=60, batch_size=20)
        self.image_shape = (1, 28, 28)
        for split, ds in self.splits.items():
            x = F.interpolate(ds.tensors[0], size=28, mode="bilinear", align_corners=False).clamp(-1, 1)
            self.splits[split] = TensorDataset(x, ds.tensors[1])


@dataclass
class Case:
    """How to build one family's module (``nets()`` fresh nets, ``build(**nets)`` the module) and its data."""

    build: Callable[..., lightning_gen.GenerativeModule]
    nets: Callable[[], dict[str, nn.Module]]
    data: str  # "toy", "image" (1 x 16 x 16) or "image28"
    density: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


def _gan_nets() -> dict[str, nn.Module]:
    return {"generator": MLPGenerator(4, 2, (16,)), "discriminator": MLPDiscriminator(2, (16,))}


def _image_gan_nets() -> dict[str, nn.Module]:
    return {"generator": MLPGenerator(8, IMAGE, (32,), output_activation="tanh"),
            "discriminator": MLPDiscriminator(IMAGE, (32,))}


def _cgan_nets() -> dict[str, nn.Module]:
    return {"generator": DCGANGenerator(latent_dim=8, image_size=28, channels=1, base_channels=4, num_classes=3),
            "discriminator": DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=3)}


def _bigan_nets() -> dict[str, nn.Module]:
    return {"generator": MLPGenerator(4, 2, (16,)), "encoder": MLPEncoder(2, 4, (16,)),
            "discriminator": JointMLPDiscriminator(2, 4, (16,))}


def _infogan_nets() -> dict[str, nn.Module]:
    return {"generator": MLPGenerator(2 + 4 + 1, 2, (16,)), "discriminator": MLPInfoGANDiscriminator(2, 4, 1, (16,), (8,))}


def _infogan_image_nets() -> dict[str, nn.Module]:
    return {"generator": DCGANGenerator(latent_dim=4 + 3 + 2, image_size=28, channels=1, base_channels=4),
            "discriminator": DCGANInfoGANDiscriminator(28, 1, 4, num_categories=3, num_continuous=2, hidden_dim=16,
                                                       q_hidden_dim=8)}


def _ae_nets(shape: Any, code: int, latent: int) -> Callable[[], dict[str, nn.Module]]:
    return lambda: {"encoder": MLPEncoder(shape, code, (32,)), "decoder": MLPDecoder(latent, shape, (32,))}


def _one(name: str, make: Callable[[], nn.Module]) -> Callable[[], dict[str, nn.Module]]:
    return lambda: {name: make()}


CASES: dict[str, Case] = {
    "gan/toy": Case(lightning_gen.GAN, _gan_nets, "toy"),
    "wgan/toy": Case(lightning_gen.WGAN, _gan_nets, "toy"),
    "wgan_gp/toy": Case(lightning_gen.WGANGP, _gan_nets, "toy"),
    "dragan/toy": Case(lightning_gen.DRAGAN, _gan_nets, "toy"),
    "lsgan/toy": Case(lightning_gen.LSGAN, _gan_nets, "toy"),
    "hinge/image": Case(lightning_gen.HingeGAN, _image_gan_nets, "image"),
    "gan_ema/image": Case(lightning_gen.GAN, _image_gan_nets, "image", kwargs={"ema_decay": 0.9}),
    "bigan/toy": Case(lightning_gen.BiGAN, _bigan_nets, "toy"),
    "cgan/image28": Case(lightning_gen.ConditionalGAN, _cgan_nets, "image28"),
    "infogan/toy": Case(lightning_gen.InfoGAN, _infogan_nets, "toy"),
    "infogan/image28": Case(lightning_gen.InfoGAN, _infogan_image_nets, "image28"),
    "autoencoder/toy": Case(lightning_gen.Autoencoder, _ae_nets(2, 2, 2), "toy", kwargs={"data_range": None}),
    "autoencoder/image": Case(lightning_gen.Autoencoder, _ae_nets(IMAGE, 4, 4), "image"),
    "dae/image": Case(lightning_gen.DenoisingAutoencoder, _ae_nets(IMAGE, 4, 4), "image",
                      kwargs={"reconstruction": "bernoulli"}),
    "vae/toy": Case(lightning_gen.VAE, _ae_nets(2, 4, 2), "toy", density=True,
                    kwargs={"likelihood": "gaussian", "data_range": None}),
    "vae/image": Case(lightning_gen.VAE, _ae_nets(IMAGE, 8, 4), "image", density=True),
    "realnvp/toy": Case(lightning_gen.RealNVP, _one("flow", lambda: VectorRealNVP(2, 4, (16, 16))), "toy", density=True),
    "realnvp/image": Case(lightning_gen.RealNVP, _one("flow", lambda: ImageRealNVP(1, 16, 2, hidden_channels=8, num_blocks=1)),
                          "image", density=True, kwargs={"dequantize": True}),
    "realnvp/glow": Case(lightning_gen.RealNVP, _one("flow", lambda: ImageRealNVP(
        1, 16, 2, hidden_channels=8, num_blocks=1, actnorm=True, permutation="conv1x1", layout="glow",
        steps_per_scale=2)), "image", density=True, kwargs={"dequantize": True}),
    # neural spline flows (Durkan et al. 2019): rational-quadratic spline couplings in the vector and image flows
    "spline_flow/toy": Case(lightning_gen.RealNVP, _one("flow", lambda: VectorRealNVP(2, 4, (16, 16), coupling="spline")),
                            "toy", density=True),
    "spline_flow/image": Case(lightning_gen.RealNVP, _one("flow", lambda: ImageRealNVP(
        1, 16, 2, hidden_channels=8, num_blocks=1, actnorm=True, layout="glow", steps_per_scale=2, coupling="spline",
        num_bins=4)), "image", density=True, kwargs={"dequantize": True}),
    "ddpm/toy": Case(lightning_gen.DDPM, _one("denoiser", lambda: MLPDenoiser(2, (32, 32), 16)), "toy",
                     kwargs={"num_timesteps": 25, "variance": "beta_tilde"}),
    "ddpm/image": Case(lightning_gen.DDPM, _one("denoiser", lambda: UNet(1, 16, base_channels=8, channel_mults=(1, 2))),
                       "image", kwargs={"schedule": "cosine", "num_timesteps": 10, "clip_denoised": True,
                                        "ema_decay": 0.99}),
    # classifier-free guidance: labels from the blob batches (3 classes), guided sampling (w = 1) by default
    "guided_ddpm/image": Case(lightning_gen.GuidedDDPM,
                              _one("denoiser", lambda: UNet(1, 16, base_channels=8, channel_mults=(1, 2), num_classes=3)),
                              "image", kwargs={"schedule": "cosine", "num_timesteps": 10, "clip_denoised": True,
                                               "ema_decay": 0.99, "guidance_scale": 1.0}),
    # annealed Langevin dynamics: 3 levels x 2 steps; images clamped to [-1, 1]
    "score/image": Case(lightning_gen.ScoreModel, _one("net", lambda: UNet(1, 16, base_channels=8, channel_mults=(1, 2))),
                        "image", kwargs={"sigma_max": 1.0, "num_levels": 3, "steps_per_level": 2,
                                         "clip_denoised": True, "ema_decay": 0.99}),
    # PCD (persistent chains are module state); short Gibbs chains and a small AIS keep it fast
    "rbm/image": Case(lightning_gen.RBM, _one("rbm", lambda: BernoulliRBM(IMAGE, 8)), "image", density=True,
                      kwargs={"persistent": True, "persistent_chains": 10, "sampling_steps": 20,
                              "ais_num_chains": 10, "ais_num_betas": 100}),
}


def _data(kind: str) -> L.LightningDataModule:
    if kind == "toy":
        return ToyGaussiansDataModule(mixture="ring", train_size=256, val_size=64, batch_size=32)
    if kind == "image28":
        return Blobs28()
    return BlobImages(train_size=120, test_size=60, batch_size=20)


def _data_shape(kind: str) -> tuple[int, ...]:
    return {"toy": (2,), "image": IMAGE, "image28": (1, 28, 28)}[kind]


def _callbacks(kind: str, tmp_path: Path) -> list[L.Callback]:
    if kind == "toy":
        return [ToyScatterCallback(every_n_epochs=1, num_samples=200, resolution=10), ToyMetricsCallback(num_samples=200)]
    grid = SampleGridCallback(num_samples=4, every_n_epochs=1)
    metrics = GenerativeMetricsCallback(
        extractor=FeatureExtractor(SmallConvFeatures()), metrics=["fid", "precision_recall"], num_samples=24,
        num_real=24, batch_size=12, every_n_epochs=None, cache_dir=tmp_path / "cache",
    )
    return [grid, metrics]


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request, tmp_path_factory) -> tuple[str, lightning_gen.GenerativeModule, L.Trainer, Path]:
    """Each family fitted for 2 steps with the callbacks, tested (metrics), and checkpointed."""
    name = request.param
    case = CASES[name]
    tmp_path = tmp_path_factory.mktemp(name.replace("/", "_"))
    L.seed_everything(0)
    model = case.build(**case.nets(), **case.kwargs)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=_callbacks(case.data, tmp_path), default_root_dir=str(tmp_path),
    )
    data = _data(case.data)
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return name, model, trainer, ckpt


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_samples_have_the_data_shape_and_range(trained):
    name, model, _, _ = trained
    kind = CASES[name].data
    x = model.sample(7, generator=_seeded(0))
    assert x.shape == (7, *_data_shape(kind))
    assert torch.isfinite(x).all()
    if kind != "toy":
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_a_seeded_generator_makes_samples_reproducible_and_leaves_the_global_rng_alone(trained):
    _, model, _, _ = trained
    state = torch.get_rng_state()
    a, b, c = model.sample(6, generator=_seeded(3)), model.sample(6, generator=_seeded(3)), model.sample(6, generator=_seeded(4))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    model.train()
    modes = [m.training for m in model.modules()]
    model.sample(2, generator=_seeded(0))
    assert [m.training for m in model.modules()] == modes  # sampling runs in eval mode, then restores the modes


def test_samples_are_the_same_after_loading_the_checkpoint(trained):
    name, model, _, ckpt = trained
    case = CASES[name]
    loaded = type(model).load_from_checkpoint(ckpt, **case.nets())
    torch.testing.assert_close(loaded.sample(5, generator=_seeded(7)), model.sample(5, generator=_seeded(7)),
                               rtol=0, atol=0)


def test_callbacks_rendered_and_logged(trained):
    name, model, trainer, ckpt = trained
    if CASES[name].data == "toy":
        assert sorted(ckpt.parent.rglob("*.png")), "the toy scatter callback wrote no picture"
    else:
        grid = next(cb for cb in trainer.callbacks if isinstance(cb, SampleGridCallback))
        assert grid.last_grid is not None and grid.last_grid.shape[0] == 3
    keys = ["test/modes_covered", "test/hq_percent"] if CASES[name].data == "toy" else ["test/fid", "test/precision"]
    for key in keys:
        assert key in trainer.callback_metrics and torch.isfinite(trainer.callback_metrics[key]), key


def test_density_models_expose_log_prob(trained):
    name, model, _, _ = trained
    if not CASES[name].density:
        pytest.skip(f"{name} has no density")
    data = _data(CASES[name].data)
    data.setup("fit")
    x = next(iter(data.train_dataloader()))[0][:9]
    log_p = model.log_prob(x)
    assert log_p.shape == (9,) and torch.isfinite(log_p).all()


def test_evaluation_steps_leave_the_global_rng_alone(trained, monkeypatch):
    """Validation and test steps draw from seeded generators, so evaluating never shifts a training run's noise.

    (Lightning's data loaders draw a seed from the global RNG whenever they are iterated; that part is not ours.)
    """
    name, model, _, _ = trained
    data = _data(CASES[name].data)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    monkeypatch.setattr(model, "log_dict", lambda *args, **kwargs: None)
    state = torch.get_rng_state()
    model.validation_step(batch, 0)
    model.test_step(batch, 1)
    assert torch.equal(torch.get_rng_state(), state)


# -- conditional image-to-image families: sample(num_samples, a=inputs) --------------------------------------------
# Their samples are deterministic functions of the given inputs, so the contract is: the data's shape and range for
# the inputs' count, the same output whatever ``generator`` (and the global RNG untouched), eval mode inside with the
# modes restored, the same output after loading a checkpoint, clear errors for missing or extra arguments, and every
# trained parameter receiving a gradient in a training step.
def _sr_nets() -> dict[str, nn.Module]:
    from lightning_gen.nets import SRGANDiscriminator, SRResNetGenerator

    return {"generator": SRResNetGenerator(1, channels=4, num_blocks=1, scale=2),
            "discriminator": SRGANDiscriminator(1, base_channels=4, num_stages=2, hidden_dim=8)}


def _srresnet_nets() -> dict[str, nn.Module]:
    return {"generator": _sr_nets()["generator"]}


def _stargan_nets() -> dict[str, nn.Module]:
    from lightning_gen.nets import StarGANDiscriminator, StarGANGenerator

    return {"generator": StarGANGenerator(3, channels=1, base_channels=4, num_residual_blocks=1),
            "discriminator": StarGANDiscriminator(3, image_size=16, channels=1, base_channels=4, num_layers=3)}


CONDITIONAL_CASES: dict[str, Case] = {
    "srgan/image": Case(lightning_gen.SRGAN, _sr_nets, "sr_image"),
    "srresnet/image": Case(lightning_gen.SRResNet, _srresnet_nets, "sr_image"),
    # n_critic 1: the gradient check runs one training step, which must reach the generator too
    "stargan/image": Case(lightning_gen.StarGAN, _stargan_nets, "domains", kwargs={"n_critic": 1}),
}


def _conditional_inputs(kind: str, batch: Any, n: int) -> tuple[dict[str, torch.Tensor], torch.Size]:
    """The ``sample()`` conditions for ``n`` samples of a held-out batch, and the shape the samples must have."""
    if kind == "sr_image":  # low-resolution images to upscale
        return {"a": batch["a"][:n]}, batch["b"][:n].shape
    x, domains = batch  # images and the domains to translate them into (each one's next domain)
    return {"a": x[:n], "domains": (domains[:n] + 1) % 3}, x[:n].shape


def _sr_data() -> L.LightningDataModule:
    from lightning_gen.data import SuperResolutionDataModule

    return SuperResolutionDataModule(BlobImages(train_size=60, test_size=20, batch_size=10), scale=2)


@pytest.fixture(scope="module", params=sorted(CONDITIONAL_CASES))
def trained_conditional(request, tmp_path_factory) -> tuple[str, lightning_gen.GenerativeModule, dict, Path]:
    """Each conditional family fitted for 2 steps, with a training batch and a checkpoint."""
    name = request.param
    case = CONDITIONAL_CASES[name]
    tmp_path = tmp_path_factory.mktemp(name.replace("/", "_"))
    L.seed_everything(0)
    model = case.build(**case.nets(), **case.kwargs)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=2, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    data = _sr_data() if case.data == "sr_image" else BlobImages(train_size=60, test_size=20, batch_size=10)
    trainer.fit(model, data)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return name, model, next(iter(data.test_dataloader())), ckpt


def test_conditional_samples_are_the_inputs_translated(trained_conditional):
    name, model, batch, _ = trained_conditional
    inputs, shape = _conditional_inputs(CONDITIONAL_CASES[name].data, batch, 7)
    state = torch.get_rng_state()
    x = model.sample(7, **inputs)
    assert x.shape == shape and torch.isfinite(x).all()
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    torch.testing.assert_close(model.sample(7, generator=_seeded(1), **inputs), x, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)
    model.train()
    modes = [m.training for m in model.modules()]
    model.sample(2, **_conditional_inputs(CONDITIONAL_CASES[name].data, batch, 2)[0])
    assert [m.training for m in model.modules()] == modes
    with pytest.raises(TypeError):
        model.sample(7)
    with pytest.raises(ValueError):
        model.sample(6, **inputs)
    with pytest.raises(TypeError, match="unexpected"):
        model.sample(7, **inputs, labels=torch.zeros(7))


def test_conditional_samples_are_the_same_after_loading_the_checkpoint(trained_conditional):
    name, model, batch, ckpt = trained_conditional
    loaded = type(model).load_from_checkpoint(ckpt, **CONDITIONAL_CASES[name].nets())
    inputs, _ = _conditional_inputs(CONDITIONAL_CASES[name].data, batch, 5)
    torch.testing.assert_close(loaded.sample(5, **inputs), model.sample(5, **inputs), rtol=0, atol=0)


def test_conditional_training_step_gives_every_trained_parameter_a_gradient(trained_conditional, monkeypatch):
    import copy

    _, model, batch, _ = trained_conditional
    model = copy.deepcopy(model)
    seen: dict[str, set[str]] = {}
    names = {id(p): n for n, p in model.named_parameters()}

    def backward(player: str, loss: torch.Tensor, check_finite: bool = True) -> None:
        params = model.players[player].parameters()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        seen[player] = {names[id(p)] for p, g in zip(params, grads) if g is not None and g.abs().sum() > 0}

    monkeypatch.setattr(model, "player_backward", backward)
    monkeypatch.setattr(model, "player_step", lambda name: True)
    monkeypatch.setattr(model, "should_log", lambda batch_idx: False)
    model.training_step(batch, 0)
    for player, p in model.players.items():
        expected = {names[id(q)] for q in p.parameters()}
        assert seen[player] == expected, f"{player}: no gradient for {sorted(expected - seen[player])}"
