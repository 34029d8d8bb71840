"""Any interaction table with named columns (CSV/TSV or Parquet), and headerless id files.

* :func:`load_table`: the ``data=csv`` loader.  The format follows the suffix
  (``.parquet``/``.pq`` -> Parquet, anything else -> delimited text, ``.gz``/``.zip``... allowed).
* :func:`read_columns`: a headerless, delimited file of integer columns (the ``user item 1``
  files of DisenCDR, CDRIB and Douban); every error names the file, the field and the line.
"""

from __future__ import annotations

import bz2
import codecs
import dataclasses
import gzip
import logging
import lzma
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from jmf.data.interactions import Interactions, from_columns
from jmf.data.sources import require_file
from jmf.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")
SEPARATORS = (",", ";", "\t", "|")      # what a first line is checked for when the chosen separator is not in it


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
               columns: Sequence[str] | None = None, time_format: str | None = None, strip_ids: bool = True,
               encoding: str = "utf-8") -> Interactions:
    """Load interactions from a table with a header.

    Args:
      path: ``.csv``/``.tsv``/other delimited text (optionally compressed) or ``.parquet``.
      user_col, item_col: id columns; ids are text ("007" stays "007"; see ``strip_ids``).
      value_col: rating column; ``None`` -> every row is a positive (value 1.0).
      time_col: numeric timestamp column (e.g. unix seconds), or ``None``.
      category_col: per-row item category, or ``None`` (one category "all").
      sep: field separator (``'\\t'``, as typed on a command line, is a tab); ``None`` -> tab for ``.tsv``/``.tab``,
        comma for ``.csv`` (a first line without one but with ``;``/tab/``|``: that, with a warning), else sniffed.
      implicit: whether values are a 0/1 signal; ``None`` -> implicit exactly when ``value_col`` is None.
      name: dataset name, used in later messages.
      multi_category: items with several categories -> ``first`` | ``most_common`` | ``error``.
      header: whether the first line names the columns; ``false`` needs ``columns``.
      columns: the fields' names in file order (a headerless file, or to rename a header's fields).
      time_format: ``strftime`` format of a textual time column (e.g. ``%Y-%m-%d %H:%M``); unset, the
        time column is numbers (unix seconds) or ISO 8601 dates.
      strip_ids: strip surrounding whitespace from user/item/category ids (``"17 "`` is ``"17"``), with a
        warning that counts them; ``False`` keeps ids verbatim.
      encoding: text encoding of a delimited file (e.g. ``latin-1``, ``cp1252``).

    Every error names the file, the field and the *line* of the file (the header is line 1).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: a named column is not in the file or named twice, an id is empty, a value/time is not
        numeric or NaN, a byte is not of ``encoding`` (naming the file, the field and the row).
    """
    path = require_file(path)
    sep = "\t" if sep == "\\t" else sep     # data.sep='\t' reaches us from a command line as a backslash and a t
    if not header and not columns:
        raise DataError(f"{path}: data.header=false needs data.columns, one name per field in file order "
                        "(e.g. [user, item, rating, time])")
    frame = _read_frame(path, sep, header, columns, encoding)
    # where a row is in the file: "line N" of a text file (the header is line 1), "row N" of a parquet table
    first_line = 0 if _is_parquet(path) else 2 if header else 1
    if frame.empty:
        raise DataError(f"{path}: no data rows{' after the header line' if header else ''}")
    _require_columns(frame, path, {"user_col": user_col, "item_col": item_col, "value_col": value_col,
                                   "time_col": time_col, "category_col": category_col}, sep, encoding)
    ids = {field: _ids(frame[column], field, path, first_line, strip_ids)
           for field, column in (("user", user_col), ("item", item_col), ("category", category_col))
           if column is not None}

    value = (_numbers(frame[value_col], "value", path, first_line) if value_col is not None
             else np.ones(len(frame), np.float32))
    time = None if time_col is None else _times(frame[time_col], path, first_line, time_format)
    data = from_columns(
        ids["user"].to_numpy(), ids["item"].to_numpy(), value, timestamp=time,
        category=None if category_col is None else ids["category"].astype(str).to_numpy(),
        multi_category=multi_category, implicit=value_col is None if implicit is None else implicit,
        source=str(path),
    )
    log.info("%s: %d rows from %s", name, len(data), path)
    return dataclasses.replace(data, name=name)


def _read_frame(path: Path, sep: str | None, header: bool = True, columns: Sequence[str] | None = None,
                encoding: str = "utf-8") -> pd.DataFrame:
    if _is_parquet(path):
        frame = pd.read_parquet(path)
        _refuse_repeated_names(list(frame.columns), path, "the table's columns")
        return frame
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"data.encoding: unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if sep is None:
        sep = _csv_sep(path, encoding) if suffix == ".csv" else {".tsv": "\t", ".tab": "\t"}.get(suffix)
    # the C parser takes one character; None (sniffed) and a longer separator (a regex) need the python one
    engine = "c" if sep is not None and len(sep) == 1 else "python"
    try:
        # ids as text, and no NA guessing: "NA" may be a valid id; numeric fields are checked later
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine=engine,
                            header=0 if header else None, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except UnicodeDecodeError as err:
        raise _decode_error(path, encoding, err) from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot read as a delimited table (data.sep={sep!r}): {err}"
                        f"{_sep_hint(path, sep, encoding)}") from None
    if columns:
        if len(columns) != frame.shape[1]:
            raise DataError(f"{path}: data.columns names {len(columns)} fields {list(columns)}, the file has "
                            f"{frame.shape[1]}")
        _refuse_repeated_names(list(columns), path, "data.columns")
        frame.columns = list(columns)
    elif header and any(re.search(r"\.\d+$", str(c)) for c in frame.columns):
        # pandas renames a repeated header name: the second 'rating' becomes 'rating.1'
        names = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine=engine, header=None, nrows=1,
                            encoding=encoding).iloc[0].tolist()
        _refuse_repeated_names(names, path, "the header line")
    return frame


def _refuse_repeated_names(names: list, path: Path, where: str) -> None:
    """A column named twice is an error: which of the two holds the data is anyone's guess."""
    seen: set = set()
    for name in names:
        if name in seen:
            fields = [j + 1 for j, n in enumerate(names) if n == name]
            remedy = ("name each field once" if where == "data.columns" else
                      "rename one in the file, or name every field in file order with data.columns=[...]")
            raise DataError(f"{path}: {where} names column {name!r} more than once (fields {fields}); {remedy}")
        seen.add(name)


def _require_columns(frame: pd.DataFrame, path: Path, wanted: dict, sep: str | None, encoding: str) -> None:
    """Each configured column (``data.<key>``) is in ``frame``; one column only suggests ``data.sep``."""
    for key, column in wanted.items():
        if column is not None and column not in frame.columns:
            hint = _sep_hint(path, sep, encoding) if frame.shape[1] == 1 else ""
            raise DataError(f"{path}: column {column!r} (data.{key}) not found; columns are {list(frame.columns)}"
                            f"{hint}")


def _ids(column: pd.Series, field: str, path: Path, first_line: int, strip: bool) -> pd.Series:
    """The id column, surrounding whitespace stripped (``strip``) with a warning that counts it."""
    if pd.api.types.is_string_dtype(column):
        stripped = column.str.strip()
        changed = ((stripped != column) & column.notna()).to_numpy()
        if changed.any():
            row = int(np.flatnonzero(changed)[0])
            before, after = column.nunique(), stripped.nunique()
            if strip:
                log.warning("%s: stripped surrounding whitespace from %d %s ids (first %r at %s): %d distinct %ss, "
                            "not %d (data.strip_ids=false keeps ids verbatim)", path, int(changed.sum()), field,
                            column.iloc[row], _at(row, first_line), after, field, before)
                column = stripped
            elif after < before:
                log.warning("%s: %d %s ids differ from another only by surrounding whitespace (first %r at %s) and "
                            "stay distinct (data.strip_ids=false)", path, before - after, field, column.iloc[row],
                            _at(row, first_line))
    _require_ids(column, field, path, first_line)
    return column


def _csv_sep(path: Path, encoding: str) -> str:
    """``,`` for a ``.csv`` file, unless its first line has no comma but another separator: that, with a warning."""
    other = _other_sep(_first_line(path, encoding), ",")
    if other is None:
        return ","
    log.warning("%s: the first line has no comma but %r: reading this .csv file as %r-separated (%s sets the "
                "separator)", path, other, other, _typed_sep(other))
    return other


def _other_sep(line: str | None, sep: str | None) -> str | None:
    """The separator of ``SEPARATORS`` most frequent in ``line`` where ``sep`` is not in it, else None."""
    if not line or (sep is not None and sep in line):
        return None
    counts = {c: line.count(c) for c in SEPARATORS if c != sep}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def _sep_hint(path: Path, sep: str | None, encoding: str) -> str:
    other = None if _is_parquet(path) else _other_sep(_first_line(path, encoding), sep)
    return f"; the first line looks {other!r}-separated: set {_typed_sep(other)}" if other else ""


def _typed_sep(sep: str) -> str:
    """How to set ``data.sep`` to ``sep`` on a shell's command line (Hydra needs the inner quotes)."""
    shown = "\\t" if sep == "\t" else sep
    return f"\"data.sep='{shown}'\""


def _open_bytes(path: Path):
    """The file's bytes, decompressed, as a binary stream; None for a format only pandas reads here (zip, zst)."""
    suffix = path.suffixes[-1].lower() if path.suffixes else ""
    if suffix in (".zip", ".zst"):
        return None
    return {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)(path, "rb")


def _first_line(path: Path, encoding: str) -> str | None:
    try:
        stream = _open_bytes(path)
        if stream is None:
            return None
        with stream:
            return stream.readline(1 << 16).decode(encoding, errors="replace")
    except (OSError, EOFError, LookupError):
        return None


def _decode_error(path: Path, encoding: str, err: UnicodeDecodeError) -> DataError:
    """The file's first byte that ``encoding`` cannot decode, by position and line, and ``data.encoding``."""
    bad = err.object[err.start:err.end] if isinstance(err.object, bytes) else b""
    where = _undecodable_at(path, encoding)
    at = f" at byte {where[0]} (line {where[1]})" if where else ""
    other = "utf-8" if codecs.lookup(encoding).name == "latin-1" else "latin-1"
    return DataError(f"{path}: not valid {encoding} text: byte(s) {bad.hex(' ') or '?'}{at} cannot be decoded; "
                     f"set data.encoding to the file's encoding, e.g. data.encoding={other} "
                     "(cp1252 for a file from Windows)")


def _undecodable_at(path: Path, encoding: str) -> tuple[int, int] | None:
    """(byte offset, 1-based line) of the first byte sequence ``encoding`` cannot decode, streamed."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, newlines = 0, 0
    try:
        stream = _open_bytes(path)
        if stream is None:
            return None
        with stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                pending = len(decoder.getstate()[0])     # the end of the last chunk, an incomplete character
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    return offset - pending + err.start, newlines + chunk[:max(err.start - pending, 0)].count(b"\n") + 1
                offset, newlines = offset + len(chunk), newlines + chunk.count(b"\n")
            pending = len(decoder.getstate()[0])
            decoder.decode(b"", final=True)             # a character cut off by the end of the file
    except UnicodeDecodeError:
        return offset - pending, newlines + 1
    except (OSError, EOFError):
        return None
    return None


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
    number = None
    if time_format is None and not pd.api.types.is_datetime64_any_dtype(column):
        blank = (column.astype(str).str.strip() == "").to_numpy()
        number = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
        numeric = np.isfinite(number)
        # numbers, or mostly numbers: then the first entry that is not one ('NaN', 'n/a', blank) is the culprit
        if numeric[~blank].all() or 2 * numeric.sum() >= (~blank).sum():
            return _numbers(column, "time", path, first_line).astype(np.int64)
    parsed = pd.to_datetime(column, format=time_format or "ISO8601", errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        how = f"does not match data.time_format={time_format!r}" if time_format else (
            "is a number, but most rows are dates; use one or the other"
            if number is not None and np.isfinite(number[row]) else
            "is neither a number nor an ISO 8601 date; set data.time_format (e.g. '%d/%m/%Y %H:%M')")
        if not str(column.iloc[row]).strip():
            raise DataError(f"{path}: field 'time' (column {column.name!r}) is missing at {_at(row, first_line)}")
        raise DataError(f"{path}: field 'time' (column {column.name!r}) at {_at(row, first_line)}: "
                        f"{column.iloc[row]!r} {how}")
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return (parsed.astype("datetime64[s]").astype(np.int64)).to_numpy()
