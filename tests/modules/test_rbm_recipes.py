"""End-to-end tests of the RBM recipe (configs/rbm/mnist.yaml) through `lightning-gen fit/test/predict`: CD-1 as
written and the PCD variant set from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lightning_gen
from lightning_gen.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "rbm" / "mnist.yaml"


def _latest_metrics(root: Path) -> str:
    return sorted(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)[-1].read_text()


@pytest.mark.slow
@pytest.mark.parametrize("variant", [[], ["--model.persistent=true", "--model.persistent_chains=20"]],
                         ids=["cd1", "pcd"])
def test_recipe_fits_tests_predicts_and_loads(variant, tmp_path, mnist_root):
    args = [
        f"--config={CONFIG}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.log_every_n_steps=1",
        f"--data.root={mnist_root}",
        "--data.batch_size=16",
        "--data.predict_size=6",
        "--data.num_workers=0",
        "--model.sampling_steps=5",
        "--model.ais_num_chains=8",
        "--model.ais_num_betas=50",
        *variant,
    ]
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3
    assert ("persistent_chains" in ckpt["state_dict"]) == bool(variant)
    assert sorted(tmp_path.rglob("samples_step*.png")), "the sample-grid callback wrote no PNG"
    metrics = _latest_metrics(tmp_path)
    assert "train/reconstruction_error" in metrics and "val/free_energy" in metrics

    main(["test", *args, f"--ckpt_path={last}"])
    metrics = _latest_metrics(tmp_path)
    assert "test/nll" in metrics and "test/log_partition_stderr" in metrics and "test/log_partition_ess" in metrics

    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (6, 1, 28, 28) and set(samples.unique().tolist()) <= {-1.0, 1.0}

    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.RBM) and model.persistent == bool(variant)
    assert model.rbm.num_hidden == 500 and bool(model.marginals_fitted)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(model.sample(3, generator=g()), model.sample(3, generator=g()), rtol=0, atol=0)
