"""End-to-end tests of the RealNVP recipes (configs/realnvp/*.yaml) through `lightning-gen fit/test/predict`."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch
import yaml

import lightning_gen
from lightning_gen.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "realnvp"


def _common(config: Path, root: Path) -> list[str]:
    return [
        f"--config={config}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
    ]


def _latest_metrics(root: Path) -> str:
    return sorted(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)[-1].read_text()


def _check_loaded_model(last: Path, shape: tuple[int, ...]) -> lightning_gen.RealNVP:
    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.RealNVP)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample(5, generator=g())
    assert a.shape == (5, *shape)
    torch.testing.assert_close(a, model.sample(5, generator=g()), rtol=0, atol=0)
    return model


def test_recipes_exist():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert names == ["mnist.yaml", "mnist_spline.yaml", "tabular.yaml", "tabular_spline.yaml", "toy_grid.yaml",
                     "toy_grid_spline.yaml", "toy_ring.yaml", "toy_ring_spline.yaml"]  # tabular: tests/data/ and below


def test_spline_recipes_differ_from_their_affine_recipes_only_in_the_flow_and_the_steps():
    for name in ("toy_grid", "toy_ring", "tabular"):
        affine, spline = (yaml.safe_load((CONFIGS / f"{n}.yaml").read_text()) for n in (name, f"{name}_spline"))
        assert spline["data"]["class_path"] == affine["data"]["class_path"]
        assert spline["data"]["init_args"]["batch_size"] >= affine["data"]["init_args"]["batch_size"]
        flow = spline["model"]["init_args"]["flow"]["init_args"]
        assert flow["coupling"] == "spline" and flow["num_bins"] >= 8 and flow["tail_bound"] == 5.0
        assert flow["dim"] == affine["model"]["init_args"]["flow"]["init_args"]["dim"]
        assert "coupling" not in affine["model"]["init_args"]["flow"]["init_args"]  # the affine default
        assert spline["trainer"]["max_steps"] < affine["trainer"]["max_steps"]


def test_mnist_spline_recipe_is_the_mnist_recipe_with_spline_couplings():
    affine, spline = (yaml.safe_load((CONFIGS / n).read_text()) for n in ("mnist.yaml", "mnist_spline.yaml"))
    flow = spline["model"]["init_args"]["flow"]["init_args"]
    assert {k: flow.pop(k) for k in ("coupling", "num_bins", "tail_bound")} == {
        "coupling": "spline", "num_bins": 8, "tail_bound": 5.0}
    spline["trainer"]["logger"]["init_args"]["tags"].remove("spline")
    assert spline == affine  # same flow, data, optimizer, budget and metrics: only the couplings differ


@pytest.mark.slow
def test_tabular_spline_recipe_fits_and_predicts_in_data_units(tmp_path):
    events = runpy.run_path(str(ROOT / "examples" / "make_events.py"))
    table = events["main"]([f"--out={tmp_path / 'events.csv'}", "--num=1000", "--seed=3"])
    args = [f"--config={CONFIGS / 'tabular_spline.yaml'}", f"--data.path={table}", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--model.flow.init_args.num_couplings=2",
            "--model.flow.init_args.hidden_dims=[16]", "--data.predict_size=500", "--trainer.limit_val_batches=1"]
    main(["fit", *args, "--trainer.max_steps=5"])
    last = next(tmp_path.rglob("last.ckpt"))
    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(tmp_path / "samples.pt", weights_only=True)
    assert samples.shape == (500, 6) and torch.isfinite(samples).all()
    assert 20.0 < float(samples[:, 0].mean()) < 60.0  # pT1 in GeV (data units), not standardised


@pytest.mark.slow
@pytest.mark.parametrize("name", ["toy_grid", "toy_ring", "toy_grid_spline", "toy_ring_spline"])
def test_toy_recipe_fits_tests_predicts_and_loads(name, tmp_path):
    args = [
        *_common(CONFIGS / f"{name}.yaml", tmp_path),
        "--trainer.max_steps=4",
        "--trainer.limit_train_batches=4",
        "--trainer.log_every_n_steps=1",
        "--trainer.check_val_every_n_epoch=1",
        "--data.train_size=512",
        "--data.val_size=300",
        "--data.batch_size=64",
        "--model.flow.init_args.num_couplings=4",
        "--model.flow.init_args.hidden_dims=[16, 16]",
    ]
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 4
    metrics = _latest_metrics(tmp_path)
    assert "train/nll" in metrics and "val/nll" in metrics and "val/modes_covered" in metrics

    main(["test", *args, f"--ckpt_path={last}"])
    metrics = _latest_metrics(tmp_path)
    assert "test/nll" in metrics and "test/modes_covered" in metrics and "test/reverse_kl" in metrics

    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (2500, 2) and torch.isfinite(samples).all()
    model = _check_loaded_model(last, (2,))
    kinds = {type(m).__name__ for m in model.flow.modules()}
    assert ("SplineCoupling" in kinds) == name.endswith("_spline")
    assert ("AffineCoupling" in kinds) != ("SplineCoupling" in kinds)


@pytest.mark.slow
def test_mnist_recipe_fits_tests_predicts_and_loads(tmp_path, mnist_root, shrink_recipe_metrics):
    args = [
        *_common(shrink_recipe_metrics(CONFIGS / "mnist.yaml", every_n_epochs=1), tmp_path),
        "--trainer.max_steps=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        f"--data.root={mnist_root}",
        "--data.batch_size=8",
        "--data.predict_size=20",
        "--data.num_workers=0",
        "--model.flow.init_args.hidden_channels=4",
    ]
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert sorted(tmp_path.rglob("samples_step*.png")), "the sample-grid callback wrote no PNG"
    metrics = _latest_metrics(tmp_path)
    assert "train/bits_per_dim" in metrics and "val/bits_per_dim" in metrics and "val/fid" in metrics

    main(["test", *args, f"--ckpt_path={last}"])
    metrics = _latest_metrics(tmp_path)
    assert "test/bits_per_dim" in metrics and "test/nll" in metrics and "test/fid" in metrics

    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (20, 1, 28, 28) and samples.min() >= -1 and samples.max() <= 1
    _check_loaded_model(last, (1, 28, 28))


@pytest.mark.slow
def test_mnist_spline_recipe_fits_and_loads_a_spline_flow(tmp_path, mnist_root, shrink_recipe_metrics):
    # The rest of the recipe is realnvp/mnist's (asserted above) and runs end to end in the test before.
    args = [
        *_common(shrink_recipe_metrics(CONFIGS / "mnist_spline.yaml"), tmp_path),
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
        f"--data.root={mnist_root}",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--model.flow.init_args.hidden_channels=4",
    ]
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    model = _check_loaded_model(last, (1, 28, 28))
    assert model.flow.coupling == "spline"
    assert {type(m).__name__ for m in model.flow.modules()} >= {"SplineCoupling", "ActNorm", "InvertibleConv1x1"}
    assert "AffineCoupling" not in {type(m).__name__ for m in model.flow.modules()}
