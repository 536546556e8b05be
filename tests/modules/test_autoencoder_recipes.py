"""End-to-end tests of the autoencoder-family recipes (configs/{autoencoder,dae,vae}/mnist.yaml) via `lightning-gen`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lightning_gen
from lightning_gen.cli import GenerativeCLI, main

ROOT = Path(__file__).resolve().parents[2]
RECIPES = [ROOT / "configs" / name / "mnist.yaml" for name in ("autoencoder", "dae", "vae")]


def _quick(config: Path, root: Path, data: Path) -> list[str]:
    """A few training steps on small batches, CSV logging under ``root``."""
    return [
        f"--config={config}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        f"--data.root={data}",
        "--data.batch_size=16",
        "--data.predict_size=20",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("config", RECIPES, ids=lambda p: p.parent.name)
def test_recipe_fits_tests_predicts_and_loads(config, tmp_path, mnist_root, shrink_recipe_metrics):
    args = _quick(shrink_recipe_metrics(config, every_n_epochs=1), tmp_path, mnist_root)
    if "VAE" in config.read_text():
        args.append("--model.test_num_samples=4")
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert sorted(tmp_path.rglob("samples_*.png")), "the sample-grid callback wrote no PNG"

    cli = GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    logged = cli.trainer.callback_metrics
    keys = ["test/fid", "test/precision"] + (["test/nll", "test/elbo", "test/kl"] if "VAE" in config.read_text()
                                              else ["test/loss"])
    for key in keys:
        assert key in logged and torch.isfinite(logged[key]), key
    if "VAE" in config.read_text():
        assert float(logged["test/nll"]) <= -float(logged["test/elbo"]) + 5.0  # IW bound: tighter up to noise

    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (20, 1, 28, 28) and samples.min() >= -1 and samples.max() <= 1
    model = lightning_gen.load_model(last)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(model.sample(3, generator=g()), model.sample(3, generator=g()), rtol=0, atol=0)
