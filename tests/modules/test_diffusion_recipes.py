"""End-to-end tests of the DDPM recipes (configs/ddpm/*.yaml) through `lightning-gen` fit, test, predict and loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lightning_gen
from lightning_gen.cli import GenerativeCLI, main

ROOT = Path(__file__).resolve().parents[2]
TOY_CONFIGS = sorted((ROOT / "configs" / "ddpm").glob("toy_*.yaml"))


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_the_ddpm_recipes_exist():
    names = {p.stem for p in (ROOT / "configs" / "ddpm").glob("*.yaml")}
    assert names == {"toy_grid", "toy_ring", "mnist", "mnist_guided"}


def _quick_toy(config: Path, root: Path) -> list[str]:
    """Arguments that shrink a toy recipe to seconds: 4 steps, a narrow net and a 25-step chain."""
    return [
        f"--config={config}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=4",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--data.train_size=512",
        "--data.val_size=300",
        "--data.batch_size=64",
        "--model.num_timesteps=25",
        "--model.denoiser.init_args.hidden_dims=[32, 32]",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("config", TOY_CONFIGS, ids=lambda p: p.stem)
def test_toy_recipe_fits_tests_predicts_and_loads(config, tmp_path):
    args = _quick_toy(config, tmp_path)
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 4
    metrics = sorted(tmp_path.rglob("metrics.csv"))[-1].read_text()
    assert "train/loss" in metrics

    cli = GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    logged = cli.trainer.callback_metrics
    for key in ("test/modes_covered", "test/hq_percent", "test/reverse_kl", "test/loss"):
        assert key in logged, key
    assert 0 <= float(logged["test/modes_covered"]) <= (25 if "grid" in config.stem else 8)

    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (2500, 2) and torch.isfinite(samples).all()

    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.DDPM) and model.num_timesteps == 25
    torch.testing.assert_close(model.sample(5, generator=_g()), model.sample(5, generator=_g()), rtol=0, atol=0)


@pytest.mark.slow
def test_mnist_recipe_fits_predicts_tests_and_loads(tmp_path, mnist_root, shrink_recipe_metrics):
    args = [
        f"--config={shrink_recipe_metrics(ROOT / 'configs' / 'ddpm' / 'mnist.yaml')}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
        f"--data.root={mnist_root}",
        "--data.batch_size=8",
        "--data.predict_size=10",
        "--data.num_workers=0",
        "--model.num_timesteps=50",
        "--model.sampling_steps=5",
        "--model.denoiser.init_args.base_channels=8",
    ]
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert sorted(tmp_path.rglob("samples_step*.png")), "the sample-grid callback wrote no PNG"

    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (10, 1, 28, 28) and samples.min() >= -1 and samples.max() <= 1

    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.DDPM) and model.sampling_steps == 5 and model.denoiser_ema is not None
    torch.testing.assert_close(model.sample(3, generator=_g()), model.sample(3, generator=_g()), rtol=0, atol=0)

    cli = GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    logged = cli.trainer.callback_metrics
    for key in ("test/fid", "test/kid", "test/precision", "test/recall", "test/loss"):
        assert key in logged and torch.isfinite(logged[key]), key
    assert float(logged["test/fid"]) > 0 and 0.0 <= float(logged["test/precision"]) <= 1.0


@pytest.mark.slow
def test_mnist_guided_recipe_fits_predicts_digits_by_index_and_loads(tmp_path, mnist_root, shrink_recipe_metrics):
    args = [
        f"--config={shrink_recipe_metrics(ROOT / 'configs' / 'ddpm' / 'mnist_guided.yaml')}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
        f"--data.root={mnist_root}",
        "--data.batch_size=8",
        "--data.predict_size=10",
        "--data.num_workers=0",
        "--model.num_timesteps=50",
        "--model.sampling_steps=5",
        "--model.denoiser.init_args.base_channels=8",
    ]
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert sorted(tmp_path.rglob("samples_step*.png")), "the sample-grid callback wrote no PNG"

    main(["predict", *args, f"--ckpt_path={last}", "--model.guidance_scale=3.0"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (10, 1, 28, 28) and samples.min() >= -1 and samples.max() <= 1

    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.GuidedDDPM) and model.num_classes == 10
    assert model.guidance_scale == 1.0 and model.label_dropout == 0.1 and model.denoiser_ema is not None
    # predict drew sample i as digit i % 10 at the overriding scale: the same as sample() with those labels
    expected = model.sample(10, generator=_g(), labels=torch.arange(10), guidance_scale=3.0)
    assert expected.shape == samples.shape
    torch.testing.assert_close(model.sample(10, generator=_g(), guidance_scale=3.0), expected, rtol=0, atol=0)
