"""A table of numbers (CSV/TSV/text, ``.npy``/``.npz``) as vectors for density models, standardised per column.

Every train/val/test batch is a float32 tensor ``(B, D)`` of the chosen columns. Rows are split once into
train/val/test by a permutation drawn from ``split_seed`` (the same on every rank and for every world size). With
``standardize=True`` each column is mapped to ``(x - mean) / std`` with the mean and standard deviation of the
**training split only**; :meth:`TabularDataModule.inverse_transform` maps model samples back to data units. The
statistics are part of the data module's ``state_dict``, so they travel in every checkpoint: ``lightning-gen
predict`` restores them and :class:`~lightning_gen.callbacks.SampleWriter` writes samples in data units.
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_gen.data.resumable import ResumableDataLoader
from lightning_gen.data.root import DATA_ENV, describe_data_root, resolve_data_root
from lightning_gen.data.toy import _BatchedTensorDataset

__all__ = ["TabularDataModule", "read_table", "TABLE_EXTENSIONS"]

TABLE_EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".txt", ".npy", ".npz")
DEFAULT_TABLE = "events.csv"  # under $LIGHTNING_GEN_DATA (else data/) when `path` is left out

Column = Union[str, int]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _delimiter_for(path: Path, first_line: str, delimiter: Optional[str]) -> Optional[str]:
    """The field separator: as given; else tab for .tsv, ``,`` or tab when the first line has one, else whitespace
    (``None``)."""
    if delimiter is not None:
        return delimiter
    if path.suffix.lower() == ".tsv" or ("," not in first_line and "\t" in first_line):
        return "\t"
    return "," if "," in first_line else None


def _read_text_table(
    path: Path, delimiter: Optional[str], header: Optional[bool]
) -> tuple[np.ndarray, Optional[list[str]]]:
    """Rows of a delimited text file as float64 ``(N, D)`` and the header's names (``None`` without one)."""
    with open(path, newline="") as f:
        lines = [line for line in f.read().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path} holds no rows.")
    sep = _delimiter_for(path, lines[0], delimiter)
    rows = list(csv.reader(lines, delimiter=sep, skipinitialspace=True)) if sep else [ln.split() for ln in lines]
    rows = [[cell.strip() for cell in row] for row in rows]
    if header is None:  # a first row with a field that is not a number is a header
        header = not all(_is_number(cell) for cell in rows[0])
    names = rows.pop(0) if header else None
    if not rows:
        raise ValueError(f"{path} has a header but no data rows.")
    width = len(names) if names is not None else len(rows[0])
    line_offset = 2 if header else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(
                f"{path}, line {i + line_offset}: {len(row)} fields, but the {'header' if header else 'first row'} "
                f"has {width} (delimiter {sep!r}; set `delimiter` if that is wrong)."
            )
    try:
        values = np.asarray(rows, dtype=np.float64)
    except ValueError:
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    column = f"column {j} ({names[j]!r})" if names is not None else f"column {j}"
                    raise ValueError(
                        f"{path}, line {i + line_offset} (data row {i}), {column}: {cell!r} is not a number. "
                        f"Fix or remove that row, or leave the column out with `columns`."
                    ) from None
        raise
    return values, names


def read_table(
    path: Union[str, Path],
    delimiter: Optional[str] = None,
    header: Optional[bool] = None,
    array_key: Optional[str] = None,
) -> tuple[np.ndarray, Optional[list[str]]]:
    """Read a table as float64 ``(N, D)`` and its column names (``None`` when the file has none).

    ``.csv``/``.tsv``/``.txt``: ``delimiter`` ``None`` guesses (tab for .tsv, comma or tab when the first line has
    one, else whitespace); ``header`` ``None`` takes the first row as column names when a field of it is not a
    number; blank lines and lines starting with ``#`` are skipped. ``.npy``: a 1-D or 2-D array. ``.npz``: the array
    ``array_key`` (may be left out when the file holds one array).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if array_key is None and len(keys) != 1:
                raise ValueError(f"{path} holds the arrays {keys}; choose one with `array_key`.")
            key = keys[0] if array_key is None else array_key
            if key not in keys:
                raise ValueError(f"{path} has no array {key!r}; it holds {keys}.")
            values = archive[key]
    elif suffix in (".csv", ".tsv", ".txt"):
        return _read_text_table(path, delimiter, header)
    else:
        raise ValueError(f"Cannot read {path}: the table must end in one of {', '.join(TABLE_EXTENSIONS)}.")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric 1-D or 2-D array, got dtype {values.dtype}, "
                         f"shape {values.shape}.")
    return values.astype(np.float64), None


class _TableDataset(_BatchedTensorDataset):
    """Rows ``(N, D)``; a fetch of several indices returns the ``(B, D)`` tensor itself (no labels)."""

    def __getitems__(self, indices: list[int]) -> Tensor:  # type: ignore[override]
        return self.tensors[0][torch.as_tensor(indices, dtype=torch.long)]

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        return self.tensors[0][index]


def _whole_batch(batch: Tensor) -> Tensor:
    """Collate function for :class:`_TableDataset`, whose fetch returns a whole batch."""
    return batch


class TabularDataModule(L.LightningDataModule):
    """Columns of a CSV/TSV/text or ``.npy``/``.npz`` table as standardised float32 vectors ``(B, D)``.

    The rows are split into train/val/test (``val_fraction``, ``test_fraction``; a permutation from ``split_seed``,
    independent of the world size). ``standardize``: each column becomes ``(x - mean) / std`` with the training
    split's mean and (population) standard deviation; :meth:`inverse_transform` maps samples back to data units,
    :meth:`transform` maps data to the model's units. The statistics are saved in checkpoints (``state_dict``) and
    restored from them, so a resumed run and ``lightning-gen predict`` use the statistics the model was trained on;
    ``predict`` then writes samples in data units.
    """

    def __init__(
        self,
        path: Optional[Union[str, Path]] = None,
        columns: Optional[Sequence[Column]] = None,
        delimiter: Optional[str] = None,
        header: Optional[bool] = None,
        array_key: Optional[str] = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        standardize: bool = True,
        batch_size: int = 256,
        predict_size: int = 2_500,
        num_workers: int = 0,
    ) -> None:
        """Read ``path`` lazily (at :meth:`setup`).

        Args:
            path: the table (``.csv``, ``.tsv``, ``.txt``, ``.npy``, ``.npz``); ``None``: ``events.csv`` in
                ``$LIGHTNING_GEN_DATA``, else in ``data/`` (what ``examples/make_events.py`` writes).
            columns: the columns to model, by header name or 0-based index (negative counts from the end);
                ``None``: all of them.
            delimiter: the field separator of a text table; ``None`` guesses it (see :func:`read_table`).
            header: whether a text table's first row holds column names; ``None`` detects it.
            array_key: the array of an ``.npz`` file that holds several.
            val_fraction: share of the rows for validation (at least one row when positive).
            test_fraction: share of the rows for the test split (at least one row when positive).
            split_seed: seed of the row permutation that makes the splits.
            standardize: map each column to zero mean and unit standard deviation on the training split.
            batch_size: rows per batch.
            predict_size: samples ``lightning-gen predict`` draws when ``--num_samples`` is not given.
            num_workers: DataLoader worker processes (0 is fine: batches are slices of one tensor).
        """
        super().__init__()
        for name, value in (("batch_size", batch_size), ("predict_size", predict_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1 to leave training rows, got "
                             f"{val_fraction} + {test_fraction}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self._path_given = path
        self.path = resolve_data_root(path, DEFAULT_TABLE)
        self.columns = list(columns) if columns is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.standardize = standardize
        self.column_names: Optional[list[str]] = None
        self.mean: Optional[Tensor] = None  # float64 (D,), training split
        self.std: Optional[Tensor] = None
        self._raw: dict[str, Tensor] = {}  # float64 rows per split, in data units
        self._sets: dict[str, _TableDataset] = {}

    # -- reading and splitting ----------------------------------------------------------------------------------
    def _not_found(self) -> FileNotFoundError:
        return FileNotFoundError(
            f"TabularDataModule found no table at {str(self.path)!r} ({self.path.resolve()}). "
            f"{describe_data_root(self._path_given, 'path')}. Pass `--data.path <file.csv|.npy|.npz>` (or `path:` "
            f"under data.init_args in the YAML), or put {DEFAULT_TABLE} in the folder `{DATA_ENV}` names. For the "
            f"demo table run `python examples/make_events.py` first (it writes {DEFAULT_TABLE} there)."
        )

    def _select(self, values: np.ndarray, names: Optional[list[str]]) -> tuple[np.ndarray, list[str]]:
        """The chosen columns and their names (``"col<i>"`` for a table without a header)."""
        width = values.shape[1]
        all_names = names if names is not None else [f"col{i}" for i in range(width)]
        if self.columns is None:
            return values, list(all_names)
        picked: list[int] = []
        for column in self.columns:
            if isinstance(column, str) and names is not None and column in names:
                picked.append(names.index(column))
            elif isinstance(column, str) and not column.lstrip("-").isdigit():
                if names is None:
                    raise ValueError(
                        f"{self.path} has no header, so column {column!r} cannot be found by name; give 0-based "
                        f"indices in `columns` (it has {width} columns), or set `header: true` if its first row "
                        f"holds names."
                    )
                close = difflib.get_close_matches(column, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{self.path} has no column {column!r}.{hint} Its header: {names}. Set `columns` "
                                 f"(e.g. --data.columns '[{names[0]}, ...]', or null for every column).")
            else:
                index = int(column)
                if not -width <= index < width:
                    raise ValueError(f"column index {index} is out of range: {self.path} has {width} columns "
                                     f"({all_names}).")
                picked.append(index % width)
        if len(set(picked)) != len(picked):
            raise ValueError(f"`columns` names a column twice: {self.columns}")
        return values[:, picked], [all_names[i] for i in picked]

    def _split(self, n: int) -> dict[str, Tensor]:
        """Disjoint sorted row indices per split, from a permutation drawn with ``split_seed``."""
        fractions = {"val": self.hparams.val_fraction, "test": self.hparams.test_fraction}
        sizes = {k: (max(round(n * f), 1) if f > 0 else 0) for k, f in fractions.items()}
        n_train = n - sizes["val"] - sizes["test"]
        if n_train < 2:
            raise ValueError(
                f"{self.path} has {n} rows: too few for val_fraction={fractions['val']} and "
                f"test_fraction={fractions['test']} (val {sizes['val']}, test {sizes['test']}, train {n_train}; "
                f"training needs at least 2). Use a larger table or smaller fractions."
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val, test = perm[: sizes["val"]], perm[sizes["val"] : sizes["val"] + sizes["test"]]
        train = perm[sizes["val"] + sizes["test"] :]
        return {"train": train.sort().values, "val": val.sort().values, "test": test.sort().values}

    def _compute_statistics(self, train: Tensor) -> tuple[Tensor, Tensor]:
        mean = train.mean(0)
        std = train.std(0, unbiased=False)
        constant = [name for name, s in zip(self.column_names or [], std.tolist()) if not s > 0]
        if constant:
            raise ValueError(
                f"{self.path}: the column(s) {constant} are constant on the training split (standard deviation 0): "
                f"they cannot be standardised and a density model cannot fit them. Leave them out with `columns`."
            )
        return mean, std

    def setup(self, stage: Optional[str] = None) -> None:
        """Read the table, split it and standardise it (the same on every rank). ``predict`` reads nothing: it
        only needs the statistics, which the checkpoint restores (or :meth:`inverse_transform` reads lazily)."""
        if self._sets or stage == "predict":
            return
        if not self.path.is_file():
            raise self._not_found()
        values, names = read_table(self.path, self.hparams.delimiter, self.hparams.header, self.hparams.array_key)
        values, chosen = self._select(values, names)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{self.path}, data row {row}, column {chosen[col]!r}: {values[row, col]} is not a "
                             f"finite number ({int(bad.sum())} such values). Remove or fill those rows.")
        if self.column_names is not None and self.column_names != chosen:
            raise ValueError(f"The statistics restored from the checkpoint are for the columns {self.column_names}, "
                             f"but {self.path} gives {chosen}; choose the same `columns` as the trained run.")
        self.column_names = chosen
        table = torch.from_numpy(values)
        self._raw = {split: table[index] for split, index in self._split(len(table)).items()}
        if self.standardize and self.mean is None:
            self.mean, self.std = self._compute_statistics(self._raw["train"])
        self._build_sets()

    def _build_sets(self) -> None:
        self._sets = {
            split: _TableDataset(self.transform(raw).to(torch.float32)) for split, raw in self._raw.items() if len(raw)
        }

    # -- units --------------------------------------------------------------------------------------------------
    def _statistics(self, like: Tensor) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.std is None:
            self.setup("fit")  # not restored from a checkpoint: compute them from the table
        assert self.mean is not None and self.std is not None
        if like.shape[-1:] != self.mean.shape:
            raise ValueError(f"expected rows of {self.mean.numel()} columns ({self.column_names}), got shape "
                             f"{tuple(like.shape)}")
        return self.mean.to(like), self.std.to(like)

    def transform(self, x: Tensor) -> Tensor:
        """Data units -> the model's units: ``(x - mean) / std`` per column (identity without ``standardize``)."""
        if not self.standardize:
            return x
        mean, std = self._statistics(x)
        return (x - mean) / std

    def inverse_transform(self, z: Tensor) -> Tensor:
        """The model's units -> data units: ``z * std + mean`` per column (identity without ``standardize``)."""
        if not self.standardize:
            return z
        mean, std = self._statistics(z)
        return z * std + mean

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``(D,)`` (reads the table if needed)."""
        if self.column_names is None:
            self.setup("fit")
        assert self.column_names is not None
        return (len(self.column_names),)

    @property
    def num_rows(self) -> dict[str, int]:
        """Rows per split after :meth:`setup`."""
        return {split: len(raw) for split, raw in self._raw.items()}

    # -- checkpoint state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The column names and standardisation statistics (saved in every checkpoint)."""
        return {
            "path": str(self.path),
            "column_names": self.column_names,
            "standardize": self.standardize,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use the statistics a checkpoint was trained with (also for data already loaded)."""
        if state_dict.get("column_names") is None:
            return
        self.column_names = list(state_dict["column_names"])
        self.standardize = bool(state_dict["standardize"])
        if state_dict.get("mean") is not None:
            self.mean = torch.tensor(state_dict["mean"], dtype=torch.float64)
            self.std = torch.tensor(state_dict["std"], dtype=torch.float64)
        if self._raw:
            self._build_sets()

    # -- loaders ------------------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = self._sets.get(split)
        if data is None:
            return []  # type: ignore[return-value]  # Lightning skips an empty list of loaders
        return ResumableDataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(data) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=_whole_batch,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled standardised training rows ``(B, D)``."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation rows ``(B, D)`` (none when ``val_fraction`` is 0)."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test rows ``(B, D)`` (none when ``test_fraction`` is 0)."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of sample indices; a generative module's ``predict_step`` draws one sample per index."""
        return DataLoader(torch.arange(self.hparams.predict_size), batch_size=self.batch_size)

