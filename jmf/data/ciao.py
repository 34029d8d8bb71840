"""Ciao product ratings (Tang, Gao, Liu; WSDM 2012): ``rating_with_timestamp.mat``.

The MATLAB file holds one ``int`` matrix under the key ``rating`` with the columns
``user, product, category, rating, helpfulness, time`` (:data:`COLUMNS`).  Categories are
ids ``1..28``; their names are the ids as text ("1".."28"), in numeric order, so category
index ``c`` is Ciao's id ``c + 1``.

Known quirks, reported (``log.info``) and left to the configured policies rather than fixed here:

* 1,436 surplus rows: 1,252 (user, product) pairs occur more than once (2,688 rows), 458 of
  them with differing ratings.  ``data.preprocess.duplicates`` resolves them.
* 101 products carry more than one category id; ``multi_category`` picks one
  (``first``: the smallest id, as ``from_columns`` defines it).
* 34 ratings are 0, outside the documented 1..5 scale; they are kept (filter with
  ``data.preprocess.implicit_threshold`` or downstream if wanted).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from jmf.data.interactions import Interactions, from_columns
from jmf.data.sources import require_file
from jmf.errors import DataError

log = logging.getLogger(__name__)

FILE = "rating_with_timestamp.mat"
KEY = "rating"
COLUMNS = ("user", "product", "category", "rating", "helpfulness", "time")
CATEGORIES = tuple(str(c) for c in range(1, 29))


def read_ciao(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``rating`` matrix of ``path`` into named ``[N]`` columns, checking shape and values."""
    from scipy.io import loadmat  # scipy.io is slow to import; only Ciao needs it

    path = require_file(path)
    mat = loadmat(path)
    if KEY not in mat:
        found = [k for k in mat if not k.startswith("__")]
        raise DataError(f"{path}: no key '{KEY}' in the MATLAB file (found {found})")
    table = np.asarray(mat[KEY])
    if table.ndim != 2 or table.shape[1] != len(COLUMNS):
        raise DataError(f"{path}: '{KEY}' has shape {table.shape}, expected [N, {len(COLUMNS)}] columns {COLUMNS}")
    if not np.issubdtype(table.dtype, np.number):
        raise DataError(f"{path}: '{KEY}' is of type {table.dtype}, expected numbers")
    columns = {}
    for j, name in enumerate(COLUMNS):
        col = table[:, j]
        bad = ~np.isfinite(col) | (col != np.round(col))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            what = "NaN" if np.isnan(col[row]) else "not an integer"
            raise DataError(f"{path}: field '{name}' is {what} at row {row}: {col[row]!r}")
        columns[name] = col.astype(np.int64)
    outside = (columns["category"] < 1) | (columns["category"] > len(CATEGORIES))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise DataError(f"{path}: field 'category' is {columns['category'][row]} at row {row}, "
                         f"outside 1..{len(CATEGORIES)}")
    return columns


def quirks(columns: dict[str, np.ndarray]) -> dict[str, int]:
    """Count Ciao's known quirks: repeated (user, product) rows, multi-category products, 0 ratings."""
    pair = columns["user"] * (int(columns["product"].max()) + 1) + columns["product"]
    _, pair_counts = np.unique(pair, return_counts=True)
    product_category = np.unique(np.stack([columns["product"], columns["category"]], 1), axis=0)
    _, categories_per_product = np.unique(product_category[:, 0], return_counts=True)
    return {
        "repeated_rows": int((pair_counts - 1).sum()),
        "repeated_pairs": int((pair_counts > 1).sum()),
        "multi_category_products": int((categories_per_product > 1).sum()),
        "zero_ratings": int((columns["rating"] == 0).sum()),
    }


def load_ciao(root: str | Path, multi_category: str = "first") -> Interactions:
    """Load Ciao from ``root/rating_with_timestamp.mat`` (raw: 284,086 rows, 7,375 users, 105,114 items).

    Args:
      root: folder holding the ``.mat`` file.
      multi_category: products with several category ids -> ``first`` | ``most_common`` | ``error``.
    """
    path = Path(root) / FILE
    columns = read_ciao(path)
    q = quirks(columns)
    log.info("%s: %d repeated (user, product) rows over %d pairs (left to data.preprocess.duplicates); "
             "%d products with more than one category id (multi_category=%s); %d ratings of 0 kept",
             path, q["repeated_rows"], q["repeated_pairs"], q["multi_category_products"], multi_category,
             q["zero_ratings"])
    return from_columns(
        columns["user"], columns["product"], columns["rating"], timestamp=columns["time"],
        category=columns["category"], category_names=CATEGORIES, multi_category=multi_category,
        source=str(path),
    )
