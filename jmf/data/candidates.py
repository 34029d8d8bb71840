"""Fixed test candidates: the Bi-TGCF ``test_neg.txt`` files (Liu et al., CIKM 2020).

Format: one line per test user, ``(user, test_item)`` then the negatives, all
tab-separated, e.g. ``(0, 13728)\\t5567\\t7387...`` (99 negatives per line).  Ids are the raw
ids of the DisenCDR files of the same domain: Bi-TGCF's ``Data/cell_electronic`` and
``Data/electronic_cell`` are byte-identical to DisenCDR's ``phone_electronic`` and
``electronic_phone`` (``test_original.txt`` is their test file), so

* ``amazon-cdr-negatives/cell_electronic/test_neg.txt`` -> domain ``phone``,
* ``amazon-cdr-negatives/electronic_cell/test_neg.txt`` -> domain ``electronic``;

every ``(user, test_item)`` is that user's row of the domain's ``test_original.txt``
(checked in ``tests/data/test_candidates.py``).  About 4 % of the negatives, and a quarter
of the positives, are items that occur only in ``test_original.txt``: load the data with
``data.test_file=test_original.txt``.  A few lines list the positive among their negatives
(22 of 3,325 for phone, 7 for electronic); they are kept as published, and since ties favour
the positive they rank as if that duplicate were absent.

Use: ``data=amazon_cdr data.pair=phone_electronic data.test_file=test_original.txt
split=predefined partition.cf_categories=[phone] eval=sampled
eval.candidates=$JMF_DATA_DIR/amazon-cdr-negatives/cell_electronic/test_neg.txt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from jmf.data.sources import require_file
from jmf.data.split import SplitData
from jmf.errors import DataError

log = logging.getLogger(__name__)

_HEAD = r"^\(\s*([^,\s]+)\s*,\s*([^)\s]+)\s*\)$"


def load_candidates(path: str | Path, split: SplitData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a candidate file into CF-side local indices of ``split``.

    Args:
      path: a ``test_neg.txt`` file.
      split: the split to evaluate; its CF side must be the candidates' domain.

    Returns:
      ``users [P] int32`` (user indices), ``positives [P] int32`` and ``negatives [P, N] int32``
      (CF-side local item indices, i.e. columns of ``split.test``).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: a malformed line, a user or item id not in the data's CF side, or a
        ``(user, test_item)`` that is not a test interaction of ``split`` (wrong domain or
        wrong test file); messages name the file, the line and the id.
    """
    path = require_file(path)
    try:
        frame = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=3)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: expected '(user, item)' then tab-separated negatives on every line: {err}") from None
    if frame.shape[1] < 2:
        raise DataError(f"{path}: no negatives: expected '(user, item)' then tab-separated negative ids")
    head = frame[0].str.extract(_HEAD)
    bad = head[0].isna().to_numpy()
    if bad.any():
        line = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {line + 1} does not start with '(user, item)': {frame[0].iloc[line]!r}")

    user_index = pd.Index(np.asarray(split.data.user_ids).astype(str))
    users = _lookup(user_index, head[0].to_numpy(), path, "user")
    item_index = _cf_item_index(split)
    positives = _lookup(item_index, head[1].to_numpy(), path, "test item")
    negative_ids = frame.iloc[:, 1:].to_numpy()
    negatives = _lookup(item_index, negative_ids.ravel(), path, "negative item",
                        lines=np.repeat(np.arange(len(frame)), negative_ids.shape[1])).reshape(negative_ids.shape)

    is_test = np.asarray(split.test[users, positives]).ravel() != 0
    if not is_test.all():
        lines = np.flatnonzero(~is_test)[:5] + 1
        raise DataError(f"{path}: {int((~is_test).sum())} of {len(users)} (user, test_item) pairs are not test "
                         f"interactions of the split (lines {lines.tolist()}...): is this the candidate file of the "
                         f"CF-side domain {_cf_names(split)}, and were the data loaded with its test file?")
    with_positive = int((negatives == positives[:, None]).any(1).sum())
    log.info("%s: %d test users x %d negatives; %d lines list their positive among the negatives (kept)",
             path, len(users), negatives.shape[1], with_positive)
    return users.astype(np.int32), positives.astype(np.int32), negatives.astype(np.int32)


def _cf_names(split: SplitData) -> list[str]:
    return [split.data.category_names[c] for c in split.partition.cf_categories]


def _cf_item_index(split: SplitData) -> pd.Index:
    """Raw ids of the CF-side items, position = local index.

    Loaders that keep several domains prefix item ids with the domain (``"phone:12"``);
    candidate files use the bare id, so the prefix is dropped when the CF side is one domain.
    """
    raw = np.asarray(split.data.item_ids[split.cf_items]).astype(str)
    names = _cf_names(split)
    if len(names) == 1 and len(raw) and np.char.startswith(raw, f"{names[0]}:").all():
        raw = np.char.partition(raw, ":")[:, 2]
    return pd.Index(raw)


def _lookup(index: pd.Index, tokens: np.ndarray, path: Path, what: str, lines: np.ndarray | None = None) -> np.ndarray:
    tokens = np.asarray(tokens).astype(str)
    found = index.get_indexer(tokens)
    if (found < 0).any():
        k = int(np.flatnonzero(found < 0)[0])
        line = (k if lines is None else int(lines[k])) + 1
        raise DataError(f"{path}: {what} {str(tokens[k])!r} at line {line} is not in the data's CF side "
                         f"({int((found < 0).sum())} such ids); for the Bi-TGCF files load the data with "
                         "data.test_file=test_original.txt and set partition.cf_categories to the file's domain")
    return found
