"""Tests for lightning_gen/data/tabular.py (TabularDataModule, read_table) and configs/realnvp/tabular.yaml, on
tables the tests write."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from lightning_gen.cli import main as cli_main
from lightning_gen.data import TabularDataModule, read_table

ROOT = Path(__file__).resolve().parents[2]
LEPTONS = ["pt1", "eta1", "phi1", "pt2", "eta2", "phi2"]


def _table(n: int = 200, seed: int = 0) -> np.ndarray:
    """Three correlated, shifted and scaled columns (means far from 0, stds far from 1)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(50.0, 10.0, n)
    b = 0.5 * a + rng.exponential(2.0, n)
    c = rng.uniform(-3.0, 3.0, n)
    return np.stack([a, b, c], axis=1)


def _write_csv(path: Path, values: np.ndarray, header: str | None = "a,b,c", delimiter: str = ",") -> Path:
    np.savetxt(path, values, fmt="%.17g", delimiter=delimiter, header=header or "", comments="")
    return path


def _all_rows(dm: TabularDataModule) -> torch.Tensor:
    """The rows of every split in data units (val, test, train order)."""
    return torch.cat([dm._raw[s] for s in ("val", "test", "train")])


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    return x[torch.argsort(x[:, 0])]


# -- reading ------------------------------------------------------------------------------------------------------
def test_csv_with_header_by_name_without_header_by_index_and_npy_npz_give_the_same_data(tmp_path):
    """The same table as CSV with a header (columns by name), headerless TSV and whitespace .txt (by index), .npy and
    .npz: identical selected rows, splits and statistics; names are the header's or ``col<i>``."""
    values = _table()
    modules = {
        "csv": TabularDataModule(_write_csv(tmp_path / "t.csv", values), columns=["c", "a"]),
        "tsv": TabularDataModule(_write_csv(tmp_path / "t.tsv", values, None, "\t"), columns=[2, 0]),
        "txt": TabularDataModule(_write_csv(tmp_path / "t.txt", values, None, " "), columns=[-1, 0]),
    }
    np.save(tmp_path / "t.npy", values)
    np.savez(tmp_path / "t.npz", table=values, other=np.zeros(3))
    modules["npy"] = TabularDataModule(tmp_path / "t.npy", columns=[2, 0])
    modules["npz"] = TabularDataModule(tmp_path / "t.npz", columns=[2, 0], array_key="table")
    for dm in modules.values():
        dm.setup()
    assert modules["csv"].column_names == ["c", "a"]
    assert modules["tsv"].column_names == ["col2", "col0"] and modules["npy"].column_names == ["col2", "col0"]
    expected = torch.from_numpy(values[:, [2, 0]])
    for name, dm in modules.items():
        assert dm.data_shape == (2,), name
        assert_close(_sorted_rows(_all_rows(dm)), _sorted_rows(expected), rtol=0, atol=0)
        for split in ("train", "val", "test"):
            assert_close(dm._raw[split], modules["csv"]._raw[split], rtol=0, atol=0)
        assert_close(dm.mean, modules["csv"].mean, rtol=0, atol=0)
    table, names = read_table(tmp_path / "t.csv")
    assert names == ["a", "b", "c"] and table.shape == (200, 3)


def test_header_detection_and_override(tmp_path):
    """A first row of numbers is data (``header=None``); ``header=True`` takes it as names anyway."""
    values = _table(20)
    path = _write_csv(tmp_path / "t.csv", values, None)
    table, names = read_table(path)
    assert names is None and table.shape == (20, 3)
    table, names = read_table(path, header=True)
    assert names == [f"{v:.17g}" for v in values[0]] and table.shape == (19, 3)


def test_batches_are_float32_tensors_of_the_columns(tmp_path):
    """A training batch is the ``(B, D)`` float32 tensor itself (what RealNVP.training_step takes)."""
    dm = TabularDataModule(_write_csv(tmp_path / "t.csv", _table()), batch_size=32)
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, torch.Tensor) and batch.shape == (32, 3) and batch.dtype == torch.float32
    assert sum(len(b) for b in dm.val_dataloader()) == 20 and sum(len(b) for b in dm.test_dataloader()) == 20


# -- splits and standardisation -----------------------------------------------------------------------------------
def test_splits_have_the_asked_sizes_are_disjoint_and_follow_the_seed(tmp_path):
    path = _write_csv(tmp_path / "t.csv", _table(1000))

    def rows(seed: int) -> dict[str, set[float]]:
        dm = TabularDataModule(path, val_fraction=0.1, test_fraction=0.25, split_seed=seed)
        dm.setup()
        assert dm.num_rows == {"train": 650, "val": 100, "test": 250}
        return {s: set(dm._raw[s][:, 0].tolist()) for s in ("train", "val", "test")}

    a, b, c = rows(0), rows(0), rows(1)
    assert a == b and a != c
    assert not (a["train"] & a["val"] or a["train"] & a["test"] or a["val"] & a["test"])
    assert len(a["train"] | a["val"] | a["test"]) == 1000
    # no val/test split: every row trains, and those loaders are empty
    dm = TabularDataModule(path, val_fraction=0.0, test_fraction=0.0)
    dm.setup()
    assert dm.num_rows == {"train": 1000, "val": 0, "test": 0} and dm.val_dataloader() == []


def test_statistics_come_from_the_training_split_only(tmp_path):
    """Train: mean 0 and (population) std 1 per column; val/test use the train statistics, so their means are not 0
    (on a table with a trend they are far from it), and the statistics differ from the whole table's."""
    values = _table(400)
    values[:, 2] = np.arange(400.0)  # a trend: the splits' means of this column differ by far more than noise
    dm = TabularDataModule(_write_csv(tmp_path / "t.csv", values), val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    train = dm._sets["train"].tensors[0].double()
    assert_close(train.mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)
    assert_close(train.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6)
    raw_train = dm._raw["train"]
    assert_close(dm.mean, raw_train.mean(0), rtol=1e-12, atol=0)
    for split in ("val", "test"):
        got = dm._sets[split].tensors[0].double()
        assert_close(got, (dm._raw[split] - raw_train.mean(0)) / raw_train.std(0, unbiased=False),
                     rtol=1e-6, atol=1e-6)
        assert got.mean(0).abs().max() > 0.01  # the whole table's statistics would not do this for both splits
    assert (dm.mean - torch.from_numpy(values.mean(0))).abs().max() > 0.1


def test_transform_and_inverse_transform_are_inverses(tmp_path):
    dm = TabularDataModule(_write_csv(tmp_path / "t.csv", _table()))
    x = torch.randn(50, 3, dtype=torch.float64) * 20 + 40
    assert_close(dm.inverse_transform(dm.transform(x)), x, rtol=1e-12, atol=1e-12)
    z = torch.randn(50, 3)
    assert_close(dm.transform(dm.inverse_transform(z)), z, rtol=1e-5, atol=1e-5)
    assert dm.inverse_transform(z).dtype == torch.float32
    assert_close(dm.inverse_transform(torch.zeros(1, 3, dtype=torch.float64))[0], dm.mean, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected rows of 3 columns \(\['a', 'b', 'c'\]\)"):
        dm.inverse_transform(torch.zeros(4, 2))
    plain = TabularDataModule(tmp_path / "t.csv", standardize=False)
    plain.setup()
    assert plain.mean is None and plain.inverse_transform(z) is z
    assert_close(plain._sets["train"].tensors[0], plain._raw["train"].float(), rtol=0, atol=0)


def test_state_dict_carries_the_statistics_to_a_fresh_module_and_overrides_a_changed_file(tmp_path):
    """A checkpoint's statistics win over a table that changed since (what the model was trained on)."""
    path = _write_csv(tmp_path / "t.csv", _table())
    dm = TabularDataModule(path, columns=["a", "c"])
    dm.setup()
    state = dm.state_dict()
    _write_csv(path, _table(seed=7) * 3.0)
    fresh = TabularDataModule(path, columns=["a", "c"])
    fresh.load_state_dict(state)
    z = torch.randn(10, 2)
    assert_close(fresh.inverse_transform(z), dm.inverse_transform(z), rtol=0, atol=0)
    fresh.setup()  # reads the new table, keeps the checkpoint's statistics
    assert_close(fresh.mean, dm.mean, rtol=0, atol=0)
    other = TabularDataModule(path, columns=["b"])
    other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"statistics restored from the checkpoint are for the columns \['a', 'c'\]"):
        other.setup()


# -- errors -------------------------------------------------------------------------------------------------------
def test_errors_say_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTNING_GEN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no table at 'data/events.csv'.*--data.path.*make_events.py"):
        TabularDataModule().setup()
    path = _write_csv(tmp_path / "t.csv", _table(30))
    with pytest.raises(ValueError, match=r"has no column 'bb'\. Did you mean 'b'\? Its header: \['a', 'b', 'c'\]"):
        TabularDataModule(path, columns=["a", "bb"]).setup()
    with pytest.raises(ValueError, match=r"column index 3 is out of range: .* has 3 columns"):
        TabularDataModule(path, columns=[3]).setup()
    headerless = _write_csv(tmp_path / "n.csv", _table(30), None)
    with pytest.raises(ValueError, match=r"has no header, so column 'a' cannot be found by name"):
        TabularDataModule(headerless, columns=["a"]).setup()
    lines = path.read_text().splitlines()
    lines[5] = "1.0,oops,3.0"
    (tmp_path / "bad.csv").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"line 6 \(data row 4\), column 1 \('b'\): 'oops' is not a number"):
        TabularDataModule(tmp_path / "bad.csv").setup()
    lines[5] = "1.0,2.0"
    (tmp_path / "ragged.csv").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"line 6: 2 fields, but the header has 3"):
        TabularDataModule(tmp_path / "ragged.csv").setup()
    lines[5] = "1.0,nan,3.0"
    (tmp_path / "nan.csv").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"data row 4, column 'b': nan is not a finite number"):
        TabularDataModule(tmp_path / "nan.csv").setup()
    with pytest.raises(ValueError, match=r"has 3 rows: too few .* train 1; training needs at least 2"):
        TabularDataModule(_write_csv(tmp_path / "small.csv", _table(3)), val_fraction=0.3, test_fraction=0.3).setup()
    constant = _table(30)
    constant[:, 1] = 2.5
    with pytest.raises(ValueError, match=r"column\(s\) \['b'\] are constant on the training split"):
        TabularDataModule(_write_csv(tmp_path / "const.csv", constant)).setup()
    np.savez(tmp_path / "two.npz", x=_table(30), y=_table(30))
    with pytest.raises(ValueError, match=r"holds the arrays \['x', 'y'\]; choose one with `array_key`"):
        TabularDataModule(tmp_path / "two.npz").setup()
    with pytest.raises(ValueError, match=r"val_fraction \+ test_fraction must be < 1"):
        TabularDataModule(path, val_fraction=0.5, test_fraction=0.5)


# -- the recipe ---------------------------------------------------------------------------------------------------
def test_make_events_writes_z_decays():
    """The demo table: the mass column is the pair's invariant mass and peaks at M (median within 0.5 GeV); the
    leading lepton's pT is the larger; phi in [-pi, pi]."""
    events = runpy.run_path(str(ROOT / "examples" / "make_events.py"))
    table = events["make_events"](4000, seed=3)
    assert table.shape == (4000, 7)
    assert_close(torch.from_numpy(events["invariant_mass"](*table[:, :6].T)), torch.from_numpy(table[:, 6]))
    assert abs(np.median(table[:, 6]) - 91.19) < 0.5
    assert (table[:, 0] >= table[:, 3]).all() and (np.abs(table[:, [2, 5]]) <= np.pi).all()
    assert 0.7 < np.corrcoef(table[:, 0], table[:, 3])[0, 1] < 0.95


@pytest.mark.slow
def test_tabular_recipe_fits_and_predicts_in_data_units_from_the_checkpoint_alone(tmp_path, capsys):
    """Fit the recipe (small flow, 250 steps) on 4,000 demo events; the checkpoint holds the train statistics;
    ``predict`` (with the table deleted) writes samples in data units: per-column means within 0.25 data stds of the
    data's (standardised units would be > 3 stds off for the pTs) and the pT1-pT2 correlation learned (data 0.85;
    an untrained flow's independent columns give 0). A resumed fit on a changed table keeps the checkpoint's
    statistics."""
    events = runpy.run_path(str(ROOT / "examples" / "make_events.py"))
    table_path = events["main"]([f"--out={tmp_path / 'events.csv'}", "--num=4000", "--seed=3"])
    args = [f"--config={ROOT / 'configs/realnvp/tabular.yaml'}", f"--data.path={table_path}",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--model.flow.init_args.num_couplings=4", "--model.flow.init_args.hidden_dims=[32, 32]",
            "--data.predict_size=3000", "--trainer.limit_val_batches=1", "--model.optimizer.init_args.lr=3e-3"]
    cli_main(["fit", *args, "--trainer.max_steps=250"])
    last = next(tmp_path.rglob("last.ckpt"))
    dm = TabularDataModule(table_path, columns=LEPTONS)
    dm.setup()
    state = torch.load(last, weights_only=True)["TabularDataModule"]
    assert state["column_names"] == LEPTONS
    assert_close(torch.tensor(state["mean"], dtype=torch.float64), dm.mean, rtol=0, atol=0)
    data = torch.cat([dm._raw[s] for s in ("train", "val", "test")])
    table_path.unlink()
    capsys.readouterr()
    cli_main(["predict", *args, f"--ckpt_path={last}"])
    assert "samples in data units (TabularDataModule.inverse_transform)" in capsys.readouterr().out
    samples = torch.load(tmp_path / "samples.pt", weights_only=True).double()
    assert samples.shape == (3000, 6) and torch.isfinite(samples).all()
    mean_error = (samples.mean(0) - data.mean(0)) / data.std(0)
    assert mean_error.abs().max() < 0.25, mean_error
    assert 0.5 < np.corrcoef(samples[:, 0].numpy(), samples[:, 3].numpy())[0, 1] < 0.95
    cli_main(["predict", *args, f"--ckpt_path={last}", "--num_samples=200"])
    again = torch.load(tmp_path / "samples.pt", weights_only=True).double()
    assert again.shape == (200, 6) and ((again.mean(0) - data.mean(0)) / data.std(0)).abs().max() < 0.5
    # a resumed fit keeps training in the checkpoint's units, even on a table whose statistics changed
    events["main"]([f"--out={table_path}", "--num=1000", "--seed=4", "--mass=200"])
    cli_main(["fit", *args, "--trainer.max_steps=260", f"--ckpt_path={last}"])
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 260 and resumed["TabularDataModule"]["mean"] == state["mean"]
