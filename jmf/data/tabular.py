"""Any interaction table with named columns (CSV/TSV or Parquet), and headerless id files.

* :func:`load_table`: the ``data=csv`` loader.  The format follows the suffix
  (``.parquet``/``.pq`` -> Parquet, anything else -> delimited text, ``.gz``/``.zip``... allowed).
* :func:`read_columns`: a headerless, delimited file of integer columns (the ``user item 1``
  files of DisenCDR, CDRIB and Douban); every error names the file, the field and the line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from jmf.data.interactions import Interactions, from_columns
from jmf.data.sources import require_file

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")


def read_columns(path: str | Path, names: Sequence[str], sep: str = "\t") -> dict[str, np.ndarray]:
    """Read a headerless delimited file whose fields are all integers.

    Args:
      path: the file; a missing file raises ``FileNotFoundError`` naming it.
      names: one name per field, used in error messages and as the keys of the result.
      sep: field separator.

    Returns:
      ``{name: [N] int64}``.  A last line without a trailing newline is read like any other.

    Raises:
      ValueError: wrong number of fields, or a field that is empty, NaN or not an integer
        (the message names the file, the field and the 1-based line).
    """
    path = require_file(path)
    try:
        # fast path: the C parser reads valid files straight into int64
        frame = pd.read_csv(path, sep=sep, header=None, dtype=np.int64, quoting=3)
        if frame.shape[1] == len(names):
            return {name: frame[j].to_numpy() for j, name in enumerate(names)}
    except (ValueError, OverflowError, pd.errors.ParserError):
        pass  # diagnose below, on the text
    try:
        # as text: pandas would silently turn "3.5" or "nan" into floats
        frame = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False, quoting=3)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, expected {sep!r}-separated fields {list(names)}") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path}: expected {len(names)} {sep!r}-separated fields {list(names)}: {err}") from None
    if frame.shape[1] != len(names):
        raise ValueError(f"{path}: expected {len(names)} {sep!r}-separated fields {list(names)}, "
                         f"found {frame.shape[1]}")
    out = {}
    for j, name in enumerate(names):
        text = frame[j]
        number = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(number) | (number != np.round(number))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            token = text.iloc[row].strip().lower()
            what = "NaN" if token == "nan" else "missing" if token == "" else "not an integer"
            raise ValueError(f"{path}: field '{name}' is {what} at line {row + 1}: {text.iloc[row]!r}")
        out[name] = number.astype(np.int64)
    return out


def load_table(path: str | Path, user_col: str = "user", item_col: str = "item", value_col: str | None = None,
               time_col: str | None = None, category_col: str | None = None, sep: str | None = None,
               implicit: bool | None = None, name: str = "csv", multi_category: str = "first") -> Interactions:
    """Load interactions from a table with a header.

    Args:
      path: ``.csv``/``.tsv``/other delimited text (optionally compressed) or ``.parquet``.
      user_col, item_col: id columns; ids are kept verbatim (text ids stay text, "007" stays "007").
      value_col: rating column; ``None`` -> every row is a positive (value 1.0).
      time_col: numeric timestamp column (e.g. unix seconds), or ``None``.
      category_col: per-row item category, or ``None`` (one category "all").
      sep: field separator of text files; ``None`` -> tab for ``.tsv``/``.tab``, comma for
        ``.csv``, otherwise sniffed.
      implicit: whether values are a 0/1 signal; ``None`` -> implicit exactly when ``value_col`` is None.
      name: dataset name, used in later messages.
      multi_category: items with several categories -> ``first`` | ``most_common`` | ``error``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: a named column is not in the file, an id is empty, or a value/time is not
        numeric or NaN (naming the file, the field and the row).
    """
    path = require_file(path)
    frame = _read_frame(path, sep)
    wanted = {"user_col": user_col, "item_col": item_col, "value_col": value_col, "time_col": time_col,
              "category_col": category_col}
    for key, column in wanted.items():
        if column is not None and column not in frame.columns:
            raise ValueError(f"{path}: column {column!r} (data.{key}) not found; columns are {list(frame.columns)}")
    for field, column in (("user", user_col), ("item", item_col), ("category", category_col)):
        if column is not None:
            _require_ids(frame[column], field, path)

    def column(key: str | None):
        return None if key is None else frame[key].to_numpy()

    value = column(value_col) if value_col is not None else np.ones(len(frame), np.float32)
    data = from_columns(
        column(user_col), column(item_col), value, timestamp=column(time_col),
        category=None if category_col is None else frame[category_col].astype(str).to_numpy(),
        multi_category=multi_category, implicit=value_col is None if implicit is None else implicit,
        source=str(path),
    )
    log.info("%s: %d rows from %s", name, len(data), path)
    return dataclasses.replace(data, name=name)


def _read_frame(path: Path, sep: str | None) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in PARQUET_SUFFIXES:
        return pd.read_parquet(path)
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if sep is None:
        sep = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(suffix)
    try:
        # ids as text, and no NA guessing: "NA" may be a valid id; numeric fields are checked later
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                           engine="python" if sep is None else "c")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read as a delimited table (data.sep={sep!r}): {err}") from None


def _require_ids(column: pd.Series, field: str, path: Path) -> None:
    empty = column.isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(column):
        empty = empty | (column.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise ValueError(f"{path}: field '{field}' is empty at row {int(np.flatnonzero(empty)[0])}")
