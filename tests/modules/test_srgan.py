"""SRGAN and SRResNet (lightning_gen/modules/super_resolution.py): the perceptual loss by hand, the baseline without a
discriminator, sample()/upscale, a short fit with the grid callback, PSNR/SSIM logging, DDP."""

from __future__ import annotations

import copy
import sys
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_script
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.functional.image import structural_similarity_index_measure

from lightning_gen import SRGAN, SRResNet
from lightning_gen.callbacks import SuperResolutionGridCallback
from lightning_gen.data import SuperResolutionDataModule
from lightning_gen.nets import SRGANDiscriminator, SRResNetGenerator, bicubic_downsample

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))

from metrics_fakes import BlobImages  # noqa: E402


def _nets(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return (SRResNetGenerator(1, channels=4, num_blocks=1, scale=2),
            SRGANDiscriminator(1, base_channels=4, num_stages=2, hidden_dim=8))


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    return L.Trainer(**{**options, **kwargs})


def _one_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, DataLoader]:
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    a = bicubic_downsample(b, 2)
    return a, b, DataLoader([{"a": a, "b": b}], batch_size=None)


def test_generator_step_is_content_plus_1e3_adversarial_by_hand(tmp_path):
    generator, discriminator = _nets()
    torch.manual_seed(5)
    features = nn.Conv2d(1, 2, 3)  # a fixed feature network for the content loss
    model = SRGAN(generator, discriminator, content_network=features, content_feature_scale=0.5,
                  generator_optimizer=partial(torch.optim.SGD, lr=0.1),
                  discriminator_optimizer=partial(torch.optim.SGD, lr=0.0))  # D stays put: G's step sees the same D
    assert model.adversarial_weight == 1e-3 and model.loss.name == "nonsaturating"
    ref_g, ref_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    a, b, loader = _one_batch()
    fake = ref_g(a)
    content = ((0.5 * (features(fake) - features(b))) ** 2).mean()  # eq. 5 with rescaled features
    adversarial = F.softplus(-ref_d(fake)).mean()  # -log sigmoid(D(G(a)))
    total = content + 1e-3 * adversarial
    grads = torch.autograd.grad(total, list(ref_g.parameters()))
    expected = [p.detach() - 0.1 * g for p, g in zip(ref_g.parameters(), grads)]

    trainer = _trainer(tmp_path, max_steps=1, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(model, loader)
    logged = trainer.callback_metrics
    assert logged["train/loss_content"].item() == pytest.approx(content.item(), rel=1e-5)
    assert logged["train/loss_gen_adv"].item() == pytest.approx(adversarial.item(), rel=1e-5)
    assert logged["train/loss_gen"].item() == pytest.approx(total.item(), rel=1e-5)
    for (name, p), e in zip(generator.named_parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=2e-6, msg=name)
    assert model.player_steps == {"generator": 1, "discriminator": 1}
    assert not any(p.requires_grad for p in features.parameters())



def test_a_vgg_content_network_stays_frozen_and_in_eval_mode(tmp_path):
    from lightning_gen.nets import VGG19Features

    generator, discriminator = _nets()
    vgg = VGG19Features("relu1_2", pretrained=False)
    before = copy.deepcopy(vgg.state_dict())
    model = SRGAN(generator, discriminator, content_network=vgg)
    _, _, loader = _one_batch()
    trainer = _trainer(tmp_path, max_steps=2, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(model, loader)
    model.train()
    assert not vgg.training and model.generator.training
    assert all(torch.equal(v, before[k]) for k, v in vgg.state_dict().items())
    assert "content_network.features.0.weight" in model.state_dict()
    assert trainer.callback_metrics["train/loss_content"] > 0

def test_discriminator_step_is_the_nonsaturating_loss_on_real_and_detached_fake(tmp_path):
    generator, discriminator = _nets()
    model = SRGAN(generator, discriminator, discriminator_optimizer=partial(torch.optim.SGD, lr=0.1))
    ref_g, ref_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    a, b, loader = _one_batch()
    loss = F.softplus(-ref_d(b)).mean() + F.softplus(ref_d(ref_g(a).detach())).mean()
    grads = torch.autograd.grad(loss, list(ref_d.parameters()))
    trainer = _trainer(tmp_path, max_steps=1, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(model, loader)
    assert trainer.callback_metrics["train/loss_dis"].item() == pytest.approx(loss.item(), rel=1e-5)
    for p, q, g in zip(discriminator.parameters(), ref_d.parameters(), grads):
        torch.testing.assert_close(p.detach(), q.detach() - 0.1 * g, rtol=0, atol=2e-6)


def test_adversarial_weight_zero_is_the_srresnet_baseline(tmp_path):
    g1, d1 = _nets()
    g2, _ = _nets()
    d_before = copy.deepcopy(d1.state_dict())
    gan = SRGAN(g1, d1, adversarial_weight=0.0)
    baseline = SRResNet(g2)
    assert list(gan.players) == ["generator"] == list(baseline.players) and not gan.adversarial
    for model in (gan, baseline):
        L.seed_everything(0)
        data = SuperResolutionDataModule(BlobImages(train_size=64, test_size=8, batch_size=16), scale=2)
        trainer = _trainer(tmp_path, max_steps=3, log_every_n_steps=1, limit_val_batches=0)
        trainer.fit(model, data)
        assert trainer.global_step == 3 and "train/loss_dis" not in trainer.callback_metrics
        logged = trainer.callback_metrics
        assert logged["train/loss_gen"].item() == logged["train/loss_content"].item()
    for (name, p), q in zip(g1.named_parameters(), g2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)  # the same pixel-MSE training
    for name, value in d1.state_dict().items():
        assert torch.equal(value, d_before[name]), f"the unused discriminator changed: {name}"


def test_sample_and_upscale_follow_the_image_to_image_convention():
    generator, discriminator = _nets()
    model = SRGAN(generator, discriminator)
    a = torch.rand(3, 1, 8, 8) * 2 - 1
    model.train()
    out = model.sample(3, a=a)
    assert out.shape == (3, 1, 16, 16) and model.generator.training  # eval mode inside, restored after
    torch.testing.assert_close(out, model.upscale(a), rtol=0, atol=0)
    with torch.no_grad():
        model.generator.eval()
        torch.testing.assert_close(out, model.generator(a), rtol=0, atol=0)
    with pytest.raises(TypeError, match="sample\\(num_samples, a=images\\)"):
        model.sample(3)
    with pytest.raises(ValueError, match="num_samples=2 but 3"):
        model.sample(2, a=a)
    with pytest.raises(TypeError, match="unexpected arguments \\['labels'\\]"):
        model.sample(3, a=a, labels=torch.zeros(3))
    with pytest.raises(ValueError, match="adversarial_weight must be >= 0"):
        SRGAN(*_nets(), adversarial_weight=-1.0)


def test_short_fit_logs_psnr_ssim_and_the_grid(tmp_path):
    generator, discriminator = _nets()
    data = SuperResolutionDataModule(BlobImages(train_size=64, test_size=12, batch_size=8), scale=2)
    grid = SuperResolutionGridCallback(num_images=3, split="test")
    model = SRGAN(generator, discriminator)
    trainer = _trainer(tmp_path, max_steps=4, callbacks=[grid], limit_val_batches=0)
    trainer.fit(model, data)
    assert trainer.global_step == 4 and model.player_steps == {"generator": 4, "discriminator": 4}
    assert grid.last_grid is not None and tuple(grid.last_grid.shape) == (3, 2 + 3 * 18, 2 + 3 * 18)
    png = sorted((tmp_path / "images").glob("super_resolution_step4.png"))
    assert png and np.asarray(Image.open(png[0])).shape == (2 + 3 * 18, 2 + 3 * 18, 3)
    # the grid's columns: bicubic upsampling | model | original
    a, b = grid.images
    tile = lambda col: grid.last_grid[:, 2:18, 2 + 18 * col:18 + 18 * col]  # noqa: E731
    torch.testing.assert_close(tile(2)[0], ((b[0, 0] + 1) / 2).clamp(0, 1), rtol=0, atol=1e-6)
    bicubic = F.interpolate(a[:1], scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    torch.testing.assert_close(tile(0)[0], (bicubic[0, 0] + 1) / 2, rtol=0, atol=1e-6)

    (result,) = trainer.test(model, data, verbose=False)
    fake = torch.cat([model.upscale(batch["a"]) for batch in data.test_dataloader()])
    real = torch.cat([batch["b"] for batch in data.test_dataloader()])
    mse = ((fake - real) ** 2).flatten(1).mean(1)
    psnr = (10 * torch.log10(4.0 / mse)).mean().item()  # per image, data range 2 for [-1, 1]
    assert result["test/psnr"] == pytest.approx(psnr, rel=1e-4)
    # SSIM of the images mapped to [0, 1] (the standard convention; SSIM is not shift-invariant)
    ssim = structural_similarity_index_measure((fake + 1) / 2, (real + 1) / 2, data_range=1.0).item()
    assert result["test/ssim"] == pytest.approx(ssim, rel=1e-4, abs=1e-6) and -1 <= result["test/ssim"] <= 1


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_parameters_identical(tmp_path):
    proc = run_script(ROOT / "tests" / "scripts" / "ddp_srgan.py", str(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    for info in ranks:
        assert info["world_size"] == 2 and info["global_step"] == 6
        assert info["player_steps"] == {"generator": 6, "discriminator": 6}
    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    assert set(a) == set(init)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    for prefix in ("generator.", "discriminator."):  # both players trained
        assert max((a[k] - init[k]).abs().max().item() for k in init if k.startswith(prefix)) > 1e-4, prefix


@pytest.mark.slow
@pytest.mark.parametrize("family", ["srgan", "srresnet"])
def test_mnist_recipe_fits_tests_predicts_and_loads(family, tmp_path, mnist_root):
    """`lightning-gen fit/test/predict --config configs/<family>/mnist.yaml` with small nets, two steps."""
    import lightning_gen
    from lightning_gen.cli import GenerativeCLI, main

    args = [
        f"--config={ROOT / 'configs' / family / 'mnist.yaml'}", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=2",
        "--trainer.accelerator=cpu", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}", "--model.generator.init_args.channels=8",
        "--model.generator.init_args.num_blocks=1", "--data.predict_size=6",
    ]
    if family == "srgan":
        args += ["--model.discriminator.init_args.base_channels=4", "--model.discriminator.init_args.hidden_dim=16"]
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert sorted(tmp_path.rglob("super_resolution_step2.png")), "the super-resolution grid wrote no PNG"
    cli = GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    assert torch.isfinite(cli.trainer.callback_metrics["test/psnr"])
    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (6, 1, 28, 28) and samples.min() >= -1 and samples.max() <= 1
    model = lightning_gen.load_model(last)
    assert type(model).__name__ == {"srgan": "SRGAN", "srresnet": "SRResNet"}[family]
