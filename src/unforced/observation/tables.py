"""Reading and writing the small column files of this part (click logs, policies, specimens, effort): CSV or
Parquet, every bad value refused with the file and the row named.

Parquet goes through pyarrow (the `observation` extra); CSV goes through pyarrow too where it is installed (fast),
else through the standard library. Rows are counted from 1 after the header, so row N of a CSV is its line N + 1.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from unforced.errors import UnforcedError
from unforced.observation import require

SUFFIXES = (".csv", ".parquet")


def _where(path: Path, index: int) -> str:
    where = f"{path}: row {index + 1}"
    return where + f" (line {index + 2})" if path.suffix.lower() == ".csv" else where


def _pyarrow_or_none():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return None
    import pyarrow.compute
    import pyarrow.csv
    import pyarrow.parquet

    return pyarrow


class Columns:
    """The columns of one file: each as an Arrow array (pyarrow present) or a numpy array of strings."""

    def __init__(self, path: Path, columns: dict, rows: int):
        self.path, self.columns, self.rows = path, columns, rows

    def has(self, name: str) -> bool:
        return name in self.columns

    def require(self, names: tuple[str, ...]) -> None:
        missing = [name for name in names if name not in self.columns]
        if missing:
            raise UnforcedError(f"{self.path}: missing column(s) {', '.join(missing)} (has: "
                                f"{', '.join(self.columns) or 'none'}; needs {', '.join(names)})")
        if self.rows == 0:
            raise UnforcedError(f"{self.path}: no rows after the header")

    def _first_bad_text(self, name: str, convert) -> None:
        values = self.columns[name]
        values = values.to_pylist() if hasattr(values, "to_pylist") else list(values)
        for index, value in enumerate(values):
            try:
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise ValueError
                convert(value)
            except (TypeError, ValueError):
                raise UnforcedError(f"{_where(self.path, index)}: {name} must be a number, got "
                                    f"{'an empty cell' if value in (None, '') else repr(value)}") from None

    def numbers(self, name: str) -> np.ndarray:
        """The column as float64, every cell a number (no empty cell, no text)."""
        values = self.columns[name]
        if hasattr(values, "null_count"):
            pa = _pyarrow_or_none()
            if values.null_count:
                self._first_bad_text(name, float)
            try:
                values = pa.compute.cast(values, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                self._first_bad_text(name, float)
                raise
            return values.to_numpy(zero_copy_only=False)
        try:
            return np.asarray(values, dtype=np.float64)
        except ValueError:
            self._first_bad_text(name, float)
            raise

    def integers(self, name: str, minimum: int | None = None, what: str = "an integer") -> np.ndarray:
        """The column as int64: every cell a whole number, at least `minimum`."""
        values = self.numbers(name)
        bad = ~np.isfinite(values) | (values != np.floor(values))
        if minimum is not None:
            bad |= values < minimum
        self.refuse(name, bad, what)
        return values.astype(np.int64)

    def refuse(self, name: str, bad: np.ndarray, what: str) -> None:
        """Raise naming the first row where `bad` holds: `name must be <what>, got <value>`."""
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            value = self.columns[name][index]
            value = value.as_py() if hasattr(value, "as_py") else value
            raise UnforcedError(f"{_where(self.path, index)}: {name} must be {what}, got {value!r}")

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(codes, labels): each cell as an index into `labels`, the distinct values as strings; empty cells
        refused. Integer ids come back as integer labels. Hash-based through pyarrow (fast on millions of rows), else np.unique."""
        values = self.columns[name]
        if hasattr(values, "null_count"):
            pa = _pyarrow_or_none()
            if values.null_count:
                index = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
                raise UnforcedError(f"{_where(self.path, index)}: {name} is empty")
            encoded = pa.compute.dictionary_encode(values)
            dictionary = encoded.dictionary
            if pa.types.is_integer(dictionary.type):  # integer ids stay integers: fast to sort and to join
                return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                        dictionary.to_numpy(zero_copy_only=False))
            labels = np.asarray([str(label) for label in dictionary.to_pylist()], dtype=object)
            if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
                empty = [i for i, label in enumerate(labels) if not label.strip()]
                if empty:
                    codes = encoded.indices.to_numpy(zero_copy_only=False)
                    raise UnforcedError(f"{_where(self.path, int(np.flatnonzero(codes == empty[0])[0]))}: "
                                        f"{name} is empty")
            return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), labels
        text = np.asarray(values, dtype=object)
        empty = np.asarray([not str(value).strip() for value in text], dtype=bool)
        if empty.any():
            raise UnforcedError(f"{_where(self.path, int(np.flatnonzero(empty)[0]))}: {name} is empty")
        labels, codes = np.unique(text.astype(str), return_inverse=True)
        return codes.astype(np.int64), labels.astype(object)


def read_columns(path: str | Path) -> Columns:
    """Every column of a `.csv` or `.parquet` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnforcedError(f"{path}: expected a .csv or .parquet file")
    if not path.is_file():
        raise UnforcedError(f"{path}: no such file")
    pa = _pyarrow_or_none()
    if suffix == ".parquet":
        pa = pa or require("pyarrow")
        try:
            table = pa.parquet.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise UnforcedError(f"{path}: not a readable Parquet file ({error})") from None
        return Columns(path, {name: table.column(name).combine_chunks() for name in table.column_names},
                       table.num_rows)
    if pa is not None:
        try:
            table = pa.csv.read_csv(path)
        except pa.ArrowInvalid as error:
            raise UnforcedError(f"{path}: not a readable CSV file ({str(error).splitlines()[0]})") from None
        return Columns(path, {name.strip(): table.column(name).combine_chunks() for name in table.column_names},
                       table.num_rows)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        rows = list(reader)
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise UnforcedError(f"{_where(path, index)}: {len(row)} cells, the header has {len(header)}")
    columns = {name: np.asarray([row[i] for row in rows], dtype=object) for i, name in enumerate(header)}
    return Columns(path, columns, len(rows))


def write_columns(path: str | Path, columns: dict[str, np.ndarray]) -> Path:
    """Write equal-length columns as `.csv` (standard library) or `.parquet` (pyarrow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnforcedError(f"{path}: expected a .csv or .parquet file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        pa = require("pyarrow")
        import pyarrow.parquet

        pyarrow.parquet.write_table(pa.table({name: np.asarray(values) for name, values in columns.items()}), path)
        return path
    names = list(columns)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        formatted = [np.char.mod("%.10g", values) if np.asarray(values).dtype.kind == "f" else np.asarray(values)
                     for values in columns.values()]
        writer.writerows(zip(*formatted, strict=True))
    return path
