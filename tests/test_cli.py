"""End-to-end tests of the `lightning-gen` command (lightning_gen/cli.py) on every recipe in configs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lightning_gen
from lightning_gen.cli import main

ROOT = Path(__file__).resolve().parents[1]
GAN_FAMILIES = {"gan", "wgan", "wgan_gp", "dragan", "lsgan", "hinge"}
# the likelihood families' toy recipes have their own tests (tests/modules/test_*_recipes.py)
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/toy_*.yaml") if p.parent.name in GAN_FAMILIES)


def _quick(config: Path, root: Path) -> list[str]:
    """Arguments that shrink a recipe to a few seconds."""
    return [
        f"--config={config}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=4",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--data.train_size=512",
        "--data.val_size=300",
        "--data.batch_size=64",
    ]


def test_every_family_has_ring_and_grid_recipes():
    families = {p.parent.name for p in CONFIGS}
    assert families == GAN_FAMILIES
    assert len(CONFIGS) == 2 * len(families)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_fits_validates_tests_predicts_and_loads(config, tmp_path):
    main(["fit", *_quick(config, tmp_path)])
    last = next(tmp_path.rglob("last.ckpt"))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 4  # generator steps

    main(["validate", *_quick(config, tmp_path), f"--ckpt_path={last}"])
    metrics = (sorted(tmp_path.rglob("metrics.csv")))[-1].read_text()
    assert "val/modes_covered" in metrics and "val/hq_percent" in metrics and "val/reverse_kl" in metrics

    # `lightning-gen test` reports the toy metrics of the checkpoint on the test split
    main(["test", *_quick(config, tmp_path), f"--ckpt_path={last}"])
    metrics = (sorted(tmp_path.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime))[-1].read_text()
    assert "test/modes_covered" in metrics and "test/hq_percent" in metrics and "test/reverse_kl" in metrics

    main(["predict", *_quick(config, tmp_path), f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (2500, 2) and torch.isfinite(samples).all()

    model = lightning_gen.load_model(last)
    assert type(model).__name__ == ckpt["hyper_parameters"]["_class_path"].rsplit(".", 1)[1]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(model.sample(5, generator=g()), model.sample(5, generator=g()), rtol=0, atol=0)


def test_unknown_loss_in_config_is_reported(tmp_path, capsys):
    config = ROOT / "configs" / "gan" / "toy_grid.yaml"
    with pytest.raises((SystemExit, ValueError)) as err:
        main(["fit", *_quick(config, tmp_path), "--model.loss=nonsaturatin"])
    text = str(err.value) + capsys.readouterr().err
    assert "Unknown adversarial loss 'nonsaturatin'" in text
