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
from jmf.errors import DataError

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
        raise DataError(f"{path}: empty file, expected {sep!r}-separated fields {list(names)}") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: expected {len(names)} {sep!r}-separated fields {list(names)}: {err}") from None
    if frame.shape[1] != len(names):
        raise DataError(f"{path}: expected {len(names)} {sep!r}-separated fields {list(names)}, "
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
            raise DataError(f"{path}: field '{name}' is {what} at line {row + 1}: {text.iloc[row]!r}")
        out[name] = number.astype(np.int64)
    return out


def load_table(path: str | Path, user_col: str = "user", item_col: str = "item", value_col: str | None = None,
               time_col: str | None = None, category_col: str | None = None, sep: str | None = None,
               implicit: bool | None = None, name: str = "csv", multi_category: str = "first", header: bool = True,
               columns: Sequence[str] | None = None, time_format: str | None = None) -> Interactions:
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
      header: whether the first line names the columns; ``false`` needs ``columns``.
      columns: the fields' names in file order (a headerless file, or to rename a header's fields).
      time_format: ``strftime`` format of a textual time column (e.g. ``%Y-%m-%d %H:%M``); unset, the
        time column is numbers (unix seconds) or ISO 8601 dates.

    Every error names the file, the field and the *line* of the file (the header is line 1).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: a named column is not in the file, an id is empty, or a value/time is not
        numeric or NaN (naming the file, the field and the row).
    """
    path = require_file(path)
    if not header and not columns:
        raise DataError(f"{path}: data.header=false needs data.columns, one name per field in file order "
                        "(e.g. [user, item, rating, time])")
    frame = _read_frame(path, sep, header, columns)
    # where a row is in the file: "line N" of a text file (the header is line 1), "row N" of a parquet table
    first_line = 0 if _is_parquet(path) else 2 if header else 1
    if frame.empty:
        raise DataError(f"{path}: no data rows{' after the header line' if header else ''}")
    wanted = {"user_col": user_col, "item_col": item_col, "value_col": value_col, "time_col": time_col,
              "category_col": category_col}
    for key, column in wanted.items():
        if column is not None and column not in frame.columns:
            raise DataError(f"{path}: column {column!r} (data.{key}) not found; columns are {list(frame.columns)}")
    for field, column in (("user", user_col), ("item", item_col), ("category", category_col)):
        if column is not None:
            _require_ids(frame[column], field, path, first_line)

    value = (_numbers(frame[value_col], "value", path, first_line) if value_col is not None
             else np.ones(len(frame), np.float32))
    time = None if time_col is None else _times(frame[time_col], path, first_line, time_format)
    data = from_columns(
        frame[user_col].to_numpy(), frame[item_col].to_numpy(), value, timestamp=time,
        category=None if category_col is None else frame[category_col].astype(str).to_numpy(),
        multi_category=multi_category, implicit=value_col is None if implicit is None else implicit,
        source=str(path),
    )
    log.info("%s: %d rows from %s", name, len(data), path)
    return dataclasses.replace(data, name=name)


def _read_frame(path: Path, sep: str | None, header: bool = True, columns: Sequence[str] | None = None
                ) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes]
    if _is_parquet(path):
        return pd.read_parquet(path)
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if sep is None:
        sep = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(suffix)
    try:
        # ids as text, and no NA guessing: "NA" may be a valid id; numeric fields are checked later
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine="python" if sep is None else "c",
                            header=0 if header else None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read as a delimited table (data.sep={sep!r}): {err}") from None
    if columns:
        if len(columns) != frame.shape[1]:
            raise DataError(f"{path}: data.columns names {len(columns)} fields {list(columns)}, the file has "
                            f"{frame.shape[1]}")
        frame.columns = list(columns)
    return frame


def _is_parquet(path: Path) -> bool:
    return bool(path.suffixes) and path.suffixes[-1].lower() in PARQUET_SUFFIXES


def _at(row: int, first_line: int) -> str:
    """``line N`` of a text file (``first_line``: the line of row 0), ``row N`` of a table without lines."""
    return f"line {row + first_line}" if first_line > 0 else f"row {row}"


def _require_ids(column: pd.Series, field: str, path: Path, first_line: int = 2) -> None:
    empty = column.isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(column):
        empty = empty | (column.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise DataError(f"{path}: field '{field}' is empty at {_at(int(np.flatnonzero(empty)[0]), first_line)}")


def _numbers(column: pd.Series, field: str, path: Path, first_line: int) -> np.ndarray:
    """``[N] float64`` of a numeric text column; the first bad entry is an error naming its line."""
    number = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(number)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        what = "not a finite number" if str(column.iloc[row]).strip() else "missing"
        raise DataError(f"{path}: field '{field}' (column {column.name!r}) is {what} at {_at(row, first_line)}: "
                        f"{column.iloc[row]!r}")
    return number


def _times(column: pd.Series, path: Path, first_line: int, time_format: str | None) -> np.ndarray:
    """``[N] int64`` seconds: numbers as they are, dates parsed (``time_format``, else ISO 8601)."""
    if time_format is None:
        blank = (column.astype(str).str.strip() == "").to_numpy()
        number = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
        if np.isfinite(number[~blank]).all():          # numbers (a blank one is reported as missing)
            return _numbers(column, "time", path, first_line).astype(np.int64)
    parsed = pd.to_datetime(column, format=time_format or "ISO8601", errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        how = f"does not match data.time_format={time_format!r}" if time_format else (
            "is neither a number nor an ISO 8601 date; set data.time_format (e.g. '%d/%m/%Y %H:%M')")
        if not str(column.iloc[row]).strip():
            raise DataError(f"{path}: field 'time' (column {column.name!r}) is missing at {_at(row, first_line)}")
        raise DataError(f"{path}: field 'time' (column {column.name!r}) at {_at(row, first_line)}: "
                        f"{column.iloc[row]!r} {how}")
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return (parsed.astype("datetime64[s]").astype(np.int64)).to_numpy()
