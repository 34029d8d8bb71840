"""The canonical interaction table every loader produces and every later stage reads.

An interaction is ``(user, item, value, timestamp)``; every item has one category
``c(i) in 0..C-1`` (design.md#the-behaviour-matrix).  Ids are dense ``int32`` indices; the original ids
are kept in ``user_ids`` / ``item_ids`` so results can be mapped back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from jmf.errors import DataError

log = logging.getLogger(__name__)

# Fold codes of a predefined split (datasets that ship their own train/valid/test).
TRAIN, VALID, TEST = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Interactions:
    """A user x item interaction log with one category per item.

    Attributes:
      user: ``[N] int32`` dense user index.
      item: ``[N] int32`` dense item index.
      value: ``[N] float32`` rating (explicit) or 1.0 (implicit).
      timestamp: ``[N] int64`` or ``None`` when the data has no time.
      item_category: ``[I] int32`` category of each item, ``0..C-1``.
      user_ids, item_ids: original ids, ``[U]`` and ``[I]``.
      category_names: ``C`` names, index = category id.
      name: dataset name, for messages.
      implicit: whether ``value`` is a 0/1 signal rather than a rating.
      fold: ``[N] int8`` predefined fold (TRAIN/VALID/TEST) or ``None``.
      item_titles: ``[I]`` item texts (titles) where the dataset has them, else ``None``.
      planted: ``[C, C]`` planted shared-taste weight of each (target, source) category pair, NaN diagonal
        (:func:`jmf.data.planted.planted_map`), else ``None``.
    """

    user: np.ndarray
    item: np.ndarray
    value: np.ndarray
    timestamp: np.ndarray | None
    item_category: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    category_names: tuple[str, ...]
    name: str = "data"
    implicit: bool = False
    fold: np.ndarray | None = None
    item_titles: np.ndarray | None = None
    planted: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.user)
        for field in ("item", "value"):
            if len(getattr(self, field)) != n:
                raise DataError(f"{self.name}: field '{field}' has {len(getattr(self, field))} rows, 'user' has {n}")
        for field in ("timestamp", "fold"):
            arr = getattr(self, field)
            if arr is not None and len(arr) != n:
                raise DataError(f"{self.name}: field '{field}' has {len(arr)} rows, 'user' has {n}")
        if len(self.item_category) != len(self.item_ids):
            raise DataError(f"{self.name}: item_category has {len(self.item_category)} entries for {len(self.item_ids)} items")
        if len(self.category_names) == 0:
            raise DataError(f"{self.name}: empty category set")
        if n and (self.user.max() >= len(self.user_ids) or self.item.max() >= len(self.item_ids)):
            raise DataError(f"{self.name}: user/item index out of range of the id maps")
        if len(self.item_category) and (self.item_category.min() < 0 or self.item_category.max() >= len(self.category_names)):
            raise DataError(f"{self.name}: item_category outside 0..{len(self.category_names) - 1}")
        if self.planted is not None and np.shape(self.planted) != (len(self.category_names),) * 2:
            raise DataError(f"{self.name}: planted is {np.shape(self.planted)}, not [C, C] over its "
                            f"{len(self.category_names)} categories")
        if not np.all(np.isfinite(self.value)):
            bad = int(np.flatnonzero(~np.isfinite(self.value))[0])
            raise DataError(f"{self.name}: field 'value' has a non-finite entry at row {bad}")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    def __len__(self) -> int:
        return len(self.user)

    def stats(self) -> dict[str, int]:
        """Raw counts: rows, users and items that occur, categories."""
        return {
            "rows": len(self),
            "users": int(len(np.unique(self.user))),
            "items": int(len(np.unique(self.item))),
            "categories": self.n_categories,
        }

    def subset(self, rows: np.ndarray) -> Interactions:
        """Keep the given rows (bool mask or index array); id maps are kept."""
        def take(a):
            return None if a is None else a[rows]

        return dataclasses.replace(
            self, user=self.user[rows], item=self.item[rows], value=self.value[rows],
            timestamp=take(self.timestamp), fold=take(self.fold),
        )

    def compact(self) -> Interactions:
        """Drop users and items that no longer occur and re-index densely."""
        users, user = np.unique(self.user, return_inverse=True)
        items, item = np.unique(self.item, return_inverse=True)
        return dataclasses.replace(
            self, user=user.astype(np.int32), item=item.astype(np.int32),
            user_ids=self.user_ids[users], item_ids=self.item_ids[items],
            item_category=self.item_category[items],
            item_titles=None if self.item_titles is None else self.item_titles[items],
        )

    def to_csr(self, n_items: int | None = None, binary: bool = False) -> sp.csr_matrix:
        """``[U, I]`` CSR of values (duplicates summed; call preprocess first)."""
        data = np.ones(len(self), np.float32) if binary else self.value.astype(np.float32)
        shape = (self.n_users, n_items or self.n_items)
        return sp.csr_matrix((data, (self.user, self.item)), shape=shape)


def factorize(values: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary ids to dense ``int32`` codes, first-seen order preserved by sorting uniques."""
    arr = np.asarray(values)
    uniques, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int32), uniques


def _numeric(column: np.ndarray, field: str, source: str, dtype) -> np.ndarray:
    try:
        out = np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.asarray(column, dtype=object)
        for row, v in enumerate(arr):
            try:
                float(v)
            except (TypeError, ValueError):
                raise DataError(f"{source}: field '{field}' is not numeric at row {row}: {v!r}") from None
        raise
    if np.isnan(out).any():
        row = int(np.flatnonzero(np.isnan(out))[0])
        raise DataError(f"{source}: field '{field}' is NaN at row {row}")
    return out.astype(dtype)


def from_columns(
    user, item, value, *, category=None, timestamp=None, fold=None,
    category_names: Sequence[str] | None = None, item_category: dict | None = None,
    multi_category: str = "first", implicit: bool = False, source: str = "data",
) -> Interactions:
    """Build :class:`Interactions` from raw columns, validating every field.

    Args:
      user, item: raw ids of length N (any hashable type).
      value: ratings; must be numeric and not NaN.
      category: per-row raw category (as in Ciao, where each rating carries one).
      item_category: alternatively a mapping raw item id -> raw category or list of categories.
      category_names: names in category-id order; if None the sorted raw categories are used.
      multi_category: what to do with items that carry several categories:
        ``first`` (smallest category id), ``most_common`` (the category most of its rows carry),
        or ``error``.
      source: file or dataset name used in error messages.
    """
    n = len(user)
    if len(item) != n or len(value) != n:
        raise DataError(f"{source}: columns have different lengths (user {n}, item {len(item)}, value {len(value)})")
    values = _numeric(value, "value", source, np.float32)
    ts = None if timestamp is None else _numeric(timestamp, "timestamp", source, np.int64)
    u, user_ids = factorize(user)
    i, item_ids = factorize(item)

    if category is not None:
        cat_codes, cat_raw = factorize(category)
        names = _names(cat_raw, category_names, source)
        if category_names is not None:
            cat_codes = np.array([names.index(str(c)) for c in cat_raw], np.int32)[cat_codes]
        item_category = _resolve_item_category(i, cat_codes, len(item_ids), multi_category, source)
    elif item_category is not None:
        rows_i, rows_c = [], []
        for code, raw in enumerate(item_ids):
            raw = raw.item() if hasattr(raw, "item") else raw
            cats = item_category.get(raw)
            if cats is None:
                raise DataError(f"{source}: item {raw!r} has no category")
            for c in ([cats] if isinstance(cats, (str, int, np.integer)) else cats):
                rows_i.append(code)
                rows_c.append(c)
        if not rows_c:
            raise DataError(f"{source}: empty category set")
        cat_codes, cat_raw = factorize(np.asarray(rows_c))
        names = _names(cat_raw, category_names, source)
        if category_names is not None:
            cat_codes = np.array([names.index(str(c)) for c in cat_raw], np.int32)[cat_codes]
        item_category = _resolve_item_category(np.asarray(rows_i), cat_codes, len(item_ids), multi_category, source)
    else:
        names = tuple(category_names or ("all",))
        item_category = np.zeros(len(item_ids), np.int32)
    return Interactions(
        user=u, item=i, value=values, timestamp=ts, item_category=item_category,
        user_ids=user_ids, item_ids=item_ids, category_names=tuple(names), name=source,
        implicit=implicit, fold=None if fold is None else np.asarray(fold, np.int8),
    )


def _names(cat_raw: np.ndarray, category_names, source: str) -> tuple[str, ...]:
    if category_names is None:
        if len(cat_raw) == 0:
            raise DataError(f"{source}: empty category set")
        return tuple(str(c) for c in cat_raw)
    names = tuple(str(c) for c in category_names)
    missing = [c for c in cat_raw if str(c) not in names]
    if missing:
        raise DataError(f"{source}: categories {missing[:5]} are not in category_names")
    return names


def _resolve_item_category(item: np.ndarray, cat: np.ndarray, n_items: int, policy: str, source: str) -> np.ndarray:
    """One category per item from (item, category) pairs, by ``policy``; logs multi-category items."""
    pairs = np.unique(np.stack([item, cat], 1), axis=0)
    n_cats = np.bincount(pairs[:, 0], minlength=n_items)
    multi = int((n_cats > 1).sum())
    if multi:
        if policy == "error":
            raise DataError(f"{source}: {multi} items carry more than one category (data.preprocess.multi_category=error)")
        log.info("%s: %d items carry more than one category; keeping the %s", source, multi, policy)
    out = np.full(n_items, -1, np.int32)
    if policy == "first":
        # pairs are sorted by (item, category): the first pair per item has the smallest id
        first = np.unique(pairs[:, 0], return_index=True)[1]
        out[pairs[first, 0]] = pairs[first, 1]
    elif policy in ("most_common", "error"):
        counts = sp.coo_matrix((np.ones(len(item)), (item, cat)), shape=(n_items, int(cat.max()) + 1)).tocsr()
        out[:] = np.asarray(counts.argmax(axis=1)).ravel()
    else:
        raise DataError(f"data.preprocess.multi_category: unknown policy {policy!r} (first|most_common|error)")
    return out
