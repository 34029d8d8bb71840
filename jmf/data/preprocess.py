"""Preprocessing as config: duplicates, k-core, explicit -> implicit, ordering.

Every step logs what it removed, with counts: nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from jmf.data.interactions import Interactions
from jmf.errors import DataError

log = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("keep", "first", "last", "mean", "max", "error")


@dataclass
class PreprocessConfig:
    """Knobs of ``data.preprocess``.

    Attributes:
      duplicates: repeated (user, item) pairs: keep | first | last | mean | max | error.
        ``first``/``last`` follow time order when timestamps exist, else file order.
      kcore: iteratively drop users and items with fewer than this many interactions (0 = off).
      implicit_threshold: if set, keep rows with value >= threshold and set value to 1 (implicit).
      order: ``time`` (sort by timestamp, stable) or ``random`` (shuffled by ``seed``) or ``file``.
    """

    duplicates: str = "mean"
    kcore: int = 0
    implicit_threshold: float | None = None
    order: str = "time"


def preprocess(data: Interactions, cfg: PreprocessConfig, seed: int = 0) -> Interactions:
    """Apply ``cfg`` to ``data`` and return the cleaned, compacted table."""
    if cfg.order not in ("time", "random", "file"):
        raise DataError(f"data.preprocess.order: {cfg.order!r} is not time|random|file")
    _require_rows(data, "loading", "check data.path / the dataset folder and the loader's columns")
    data = _order(data, cfg.order, seed)
    data = deduplicate(data, cfg.duplicates)
    if cfg.implicit_threshold is not None:
        keep = data.value >= cfg.implicit_threshold
        log.info("%s: implicit_threshold=%s removed %d of %d rows", data.name, cfg.implicit_threshold,
                 int((~keep).sum()), len(data))
        largest = float(data.value.max())       # of the rows before the cut (loading left at least one)
        remedy = (f"every value is below it (the largest is {largest:g}"
                  f"{'; the data is implicit, every value is 1' if data.implicit else ''}): lower it")
        data = data.subset(keep)
        data = dataclasses.replace(data, value=np.ones(len(data), np.float32), implicit=True)
        _require_rows(data, f"data.preprocess.implicit_threshold={cfg.implicit_threshold}", remedy)
    if cfg.kcore > 0:
        data = kcore(data, cfg.kcore)
        _require_rows(data, f"data.preprocess.kcore={cfg.kcore}", "lower it")
    return data.compact()


def _require_rows(data: Interactions, step: str, remedy: str) -> None:
    """A stage that leaves no rows is an error naming the stage, never an empty run counted as done."""
    if len(data) == 0:
        raise DataError(f"{data.name}: no interactions left after {step}; {remedy}")


def _order(data: Interactions, order: str, seed: int) -> Interactions:
    if order == "time" and data.timestamp is not None:
        return data.subset(np.argsort(data.timestamp, kind="stable"))
    if order == "random":
        return data.subset(np.random.default_rng(seed).permutation(len(data)))
    return data


def deduplicate(data: Interactions, policy: str) -> Interactions:
    """Resolve repeated (user, item) rows by ``policy``; logs how many rows it merged."""
    if policy not in DUPLICATE_POLICIES:
        raise DataError(f"data.preprocess.duplicates: unknown policy {policy!r} ({'|'.join(DUPLICATE_POLICIES)})")
    if policy == "keep" or len(data) == 0:
        return data
    key = data.user.astype(np.int64) * data.n_items + data.item
    uniq, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    n_dup_pairs = int((counts > 1).sum())
    if n_dup_pairs == 0:
        return data
    removed = len(data) - len(uniq)
    if policy == "error":
        raise DataError(f"{data.name}: {n_dup_pairs} (user, item) pairs occur more than once "
                         "(data.preprocess.duplicates=error)")
    log.info("%s: duplicates=%s merged %d repeated rows of %d (user, item) pairs", data.name, policy, removed, n_dup_pairs)
    if policy == "first":
        rows = np.sort(first)
        return data.subset(rows)
    # last occurrence of each key, in the current (time or file) order
    last = len(key) - 1 - np.unique(key[::-1], return_index=True)[1]
    rows = np.sort(last)
    out = data.subset(rows)
    if policy in ("mean", "max"):
        # aggregate over all occurrences, store at the kept (last) row
        order_keys = key[rows]
        pos = np.searchsorted(uniq, order_keys)
        if policy == "mean":
            agg = np.bincount(inverse, weights=data.value, minlength=len(uniq)) / counts
        else:
            agg = np.full(len(uniq), -np.inf)
            np.maximum.at(agg, inverse, data.value)
        out = dataclasses.replace(out, value=agg[pos].astype(np.float32))
    return out


def kcore(data: Interactions, k: int) -> Interactions:
    """Iteratively keep users and items with at least ``k`` interactions."""
    before = len(data)
    keep = np.ones(len(data), bool)
    while True:
        u_deg = np.bincount(data.user[keep], minlength=data.n_users)
        i_deg = np.bincount(data.item[keep], minlength=data.n_items)
        new = keep & (u_deg[data.user] >= k) & (i_deg[data.item] >= k)
        if new.sum() == keep.sum():
            break
        keep = new
    out = data.subset(keep)
    log.info("%s: %d-core removed %d of %d rows (%d users, %d items left)", data.name, k, before - len(out), before,
             len(np.unique(out.user)), len(np.unique(out.item)))
    return out
