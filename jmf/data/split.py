"""Categories -> the CF side / the DL side, and the user hold-outs.

* :func:`partition_categories`: the K CF-side categories, by explicit list or ``k`` largest.
* :func:`make_split`: one of the hold-outs of design.md#splits-and-protocols applied to the CF side:
  ``ratio`` (per user or global, by time or at random), ``loo`` (leave-one-out by time),
  ``cold_start`` (a fraction ``beta`` of users active on both sides lose all their CF-side
  rows) and ``predefined`` (the dataset's own folds).  DL-side rows are always training data,
  except that ``predefined`` drops DL-side rows of the dataset's own valid/test folds: the
  dataset's authors held them out (DisenCDR trains on ``train.txt`` of both domains only).
  With ``dl_folds=True`` (``predefined`` only) the DL side keeps its test fold and gets a validation
  fold by the CF side's rule, so a model that trains both sides is evaluated on both in one run
  (:meth:`SplitData.mirrored`: the DL side as the CF side).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from jmf.data.interactions import TEST, TRAIN, VALID, Interactions
from jmf.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partition:
    """CF-side (K categories) and DL-side category ids; ``chosen_by``: the setting that chose them
    (``partition.k=2``, ``partition.cf_categories``, or ``""``: neither, every category on the CF side)."""

    cf_categories: np.ndarray
    dl_categories: np.ndarray
    chosen_by: str = ""


def partition_categories(data: Interactions, k: int | None = None,
                         cf_categories: Sequence[int | str] | None = None) -> Partition:
    """Choose the CF-side categories.

    Args:
      k: the ``k`` largest categories (by interactions) are the CF side.
      cf_categories: explicit categories: a string is a category *name* (``"16"`` is the category named
        16, whatever its position), an integer a category id ``0..C-1``.
      With neither, every category is on the CF side (plain warm recommendation, an empty DL side).
    """
    C = data.n_categories
    if k is not None and cf_categories is not None:
        raise DataError("partition: give either partition.k or partition.cf_categories, not both")
    if cf_categories is not None:
        if len(cf_categories) == 0:
            raise DataError("partition.cf_categories: empty category set")
        ids = []
        names = [str(n) for n in data.category_names]
        for c in cf_categories:
            if isinstance(c, str):
                if c not in names:
                    hint = " (an integer, unquoted, selects a category by id)" if c.lstrip("-").isdigit() else ""
                    raise DataError(f"partition.cf_categories: no category named {c!r} in {data.name} "
                                    f"(names: {names[:12]}{' ...' if len(names) > 12 else ''}){hint}")
                ids.append(names.index(c))
            else:
                if isinstance(c, bool) or int(c) != c or not 0 <= int(c) < C:
                    raise DataError(f"partition.cf_categories: id {c!r} not in 0..{C - 1} ({data.name}); "
                                    "quote a category name")
                ids.append(int(c))
        cf, chosen = np.unique(np.asarray(ids, np.int32)), "partition.cf_categories"
        if len(cf) == C:
            log.info("partition: every category is on the CF side; the DL side is empty")
    elif k is not None:
        if C == 1:
            raise DataError(f"partition.k: {data.name} has a single category ({str(data.category_names[0])!r}): "
                            "there is no second one for the DL side; use data with two or more categories")
        if not 1 <= k < C:
            raise DataError(f"partition.k: {k} must be in 1..{C - 1} ({data.name} has {C} categories)")
        counts = np.bincount(data.item_category[data.item], minlength=C)
        cf, chosen = np.sort(np.argsort(-counts, kind="stable")[:k]).astype(np.int32), f"partition.k={k}"
    else:
        cf, chosen = np.arange(C, dtype=np.int32), ""
    dl = np.setdiff1d(np.arange(C, dtype=np.int32), cf)
    rows = np.bincount(data.item_category[data.item], minlength=C)
    _check_cf_rows(data, cf, rows, chosen)
    if chosen:
        names = [str(n) for n in data.category_names]
        log.info("%s: CF side (O1) %s; DL side (O2) %s", chosen,
                 _listed([f"{names[c]} ({rows[c]:,} rows)" for c in cf]), _listed([names[c] for c in dl]))
    return Partition(cf_categories=cf, dl_categories=dl, chosen_by=chosen)


def _listed(names: list[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "") or "none"


def _check_cf_rows(data: Interactions, cf: np.ndarray, rows: np.ndarray, chosen: str) -> None:
    """Raise if the CF-side categories hold no rows at all; warn about a chosen one that holds none."""
    empty = [int(c) for c in cf if rows[c] == 0]
    if empty and len(empty) == len(cf):
        raise DataError(f"{chosen or 'partition'}: the CF side has no rows: {_why_empty(data, empty[0])}")
    for c in empty if chosen else []:
        log.warning("%s: %s", chosen, _why_empty(data, c))


def _why_empty(data: Interactions, c: int) -> str:
    """Why category ``c`` holds no rows: each item keeps one category; a name differing only in case is another."""
    names = [str(n) for n in data.category_names]
    twins = [n for n in names if n != names[c] and n.casefold() == names[c].casefold()]
    why = (f"category {names[c]!r} of {data.name} holds no rows (each item keeps one category, data.multi_category, "
           "so an item listed under several keeps only one of them; data.preprocess may also drop rows)")
    if twins:
        why += (f"; {names[c]!r} and {twins[0]!r} differ only in case, so they are two categories: write them one "
                f"way in the data if they are one, or select {twins[0]!r}")
    return why


def dl_side_missing(data: Interactions, partition: Partition, who: str) -> str:
    """Why ``who`` (``model=jmf``, ``split=cold_start``) finds no DL side, and what to change: the message of the
    error a model or split that needs one raises."""
    C, names = data.n_categories, [str(n) for n in data.category_names]
    k = "partition.k=1" if C == 2 else f"partition.k (1..{C - 1}: the largest categories form the CF side)"
    need = f"{who} needs a DL side: at least one category on each side, the CF side (O1) and the DL side (O2)"
    if C == 1:
        fix = "set data.category_col to the column of item categories" if names == ["all"] else \
            "use data with two or more categories"
        return f"{need}, but {data.name} has a single category ({names[0]!r}); {fix}"
    if len(partition.dl_categories) == 0 and partition.chosen_by:
        return (f"{need}, but {partition.chosen_by} lists all {C} categories of {data.name}; leave at least one "
                f"out for the DL side, or set {k} instead")
    if len(partition.dl_categories) == 0:
        return (f"{need}, but neither partition.k nor partition.cf_categories is set, so all {C} categories of "
                f"{data.name} are on the CF side; set {k} or partition.cf_categories")
    dl = [int(c) for c in partition.dl_categories]
    empty = not np.isin(data.item_category[data.item], dl).any()
    return (f"{need}, but the DL-side categories ({_listed([names[c] for c in dl])}) hold no training rows"
            + (f": {_why_empty(data, dl[0])}" if empty else " (the split keeps none of their rows for training)"))


@dataclass(frozen=True, eq=False)
class SplitData:
    """A partitioned, held-out dataset: host-side CSR matrices over the two item sides.

    CF-side items are re-indexed ``0..I_CF-1`` (``cf_items[j]`` is the global item) and
    DL-side items ``0..I_DL-1`` (``dl_items``).  Matrices are ``[U, I_CF]`` / ``[U, I_DL]``.
    """

    data: Interactions
    partition: Partition
    cf_items: np.ndarray
    dl_items: np.ndarray
    train: sp.csr_matrix          # [U, I_CF] CF-side training values
    valid: sp.csr_matrix          # [U, I_CF]
    test: sp.csr_matrix           # [U, I_CF]
    dl: sp.csr_matrix             # [U, I_DL] DL-side values, all training data
    train_rows: np.ndarray        # row indices into ``data`` of CF-side training rows
    dl_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows of ``data`` in the DL side
    cold_valid_users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    cold_test_users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    dl_valid: sp.csr_matrix | None = None    # [U, I_DL] DL-side validation fold (``dl_folds``; else None)
    dl_test: sp.csr_matrix | None = None     # [U, I_DL] DL-side test fold
    holdout: object | None = None            # split=category_holdout: jmf.data.holdout.CategoryHoldout

    @property
    def has_dl_folds(self) -> bool:
        """Whether the DL side has its own valid/test folds (``split.dl_folds``)."""
        return self.dl_test is not None

    def mirrored(self) -> SplitData:
        """The same split seen from the DL side: its training, validation and test folds as ``train``,
        ``valid`` and ``test``, the CF side as its DL side (``mirrored().mirrored()`` is this split)."""
        if not self.has_dl_folds:
            raise ConfigError("the DL side has no valid/test folds to evaluate: set split.dl_folds=true "
                              "(split=predefined)")
        return dataclasses.replace(
            self, partition=Partition(self.partition.dl_categories, self.partition.cf_categories),
            cf_items=self.dl_items, dl_items=self.cf_items, train=self.dl, valid=self.dl_valid, test=self.dl_test,
            dl=self.train, train_rows=self.dl_rows, dl_rows=self.train_rows, dl_valid=self.valid, dl_test=self.test)

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def implicit(self) -> bool:
        return self.data.implicit

    def counts(self) -> dict[str, int]:
        out = {"rows/train": int(self.train.nnz), "rows/valid": int(self.valid.nnz),
               "rows/test": int(self.test.nnz), "rows/dl": int(self.dl.nnz)}
        if self.has_dl_folds:
            out.update({"rows/dl_valid": int(self.dl_valid.nnz), "rows/dl_test": int(self.dl_test.nnz)})
        return out


def make_split(data: Interactions, partition: Partition, method: str = "ratio", *, seed: int = 0,
               test_ratio: float = 0.2, valid_ratio: float = 0.1, by: str = "user", order: str = "time",
               beta: float = 0.2, cold_valid_fraction: float = 0.1, min_train: int = 1,
               valid_is_test: bool = False, dl_folds: bool = False) -> SplitData:
    """Hold out CF-side interactions (see module docstring).

    Args:
      method: ratio | loo | cold_start | predefined.
      test_ratio, valid_ratio: ``ratio`` fractions; with ``predefined`` folds that ship no
        validation rows, ``valid_ratio`` of the users lend one random training row to a validation
        slice carved from training (0: none).
      by: ``user`` (per-user fractions) or ``global`` (one random split of all rows, as Surprise).
      order: ``time`` (hold out the latest, when timestamps exist) or ``random``.
      beta: ``cold_start`` fraction of overlapping users that become test users.
      cold_valid_fraction: ``cold_start`` fraction of the remaining overlapping users that become
        validation users (model selection never looks at test users).
      min_train: ``ratio``/``loo`` never leave a user with fewer CF-side training rows than this.
      valid_is_test: the validation fold *is* the test fold (needs ``valid_ratio=0`` and, for
        ``cold_start``, ``cold_valid_fraction=0``): epochs are selected on test, as the DisenCDR and CDRIB
        authors' code reports its best evaluation.  Optimistic; only to set jmf beside those figures.
      dl_folds: ``predefined`` only: the DL side keeps the dataset's test fold, and a validation fold is
        carved from its training rows as from the CF side's (after the CF side's, so the CF side is
        the same as without), or is its test fold with ``valid_is_test``: ``dl_valid``, ``dl_test``.
    """
    _check_valid_is_test(valid_is_test, method, valid_ratio, cold_valid_fraction, dl_folds)
    rng = np.random.default_rng(seed)
    cat = data.item_category[data.item]
    cf_row = np.isin(cat, partition.cf_categories)
    cf_items = np.flatnonzero(np.isin(data.item_category, partition.cf_categories)).astype(np.int32)
    dl_items = np.flatnonzero(np.isin(data.item_category, partition.dl_categories)).astype(np.int32)
    fold, dl_row, cold_test, cold_valid = _folds(data, partition, cf_row, method, rng, test_ratio, valid_ratio, by,
                                                 order, beta, cold_valid_fraction, min_train, dl_folds)
    if valid_is_test:
        log.warning("split.valid_is_test: epochs are selected on the test fold (the authors' protocol; optimistic)")
        cold_valid = cold_test
    side = _side_matrix(data)
    valid_fold = TEST if valid_is_test else VALID
    dl_side = {}
    if dl_folds:
        dl_side = {"dl_valid": side(~cf_row & (fold == valid_fold), dl_items), "dl_test": side(~cf_row & (fold == TEST),
                                                                                              dl_items)}
    return SplitData(
        data=data, partition=partition, cf_items=cf_items, dl_items=dl_items,
        train=side(cf_row & (fold == TRAIN), cf_items), valid=side(cf_row & (fold == valid_fold), cf_items),
        test=side(cf_row & (fold == TEST), cf_items), dl=side(dl_row, dl_items),
        train_rows=np.flatnonzero(cf_row & (fold == TRAIN)), dl_rows=np.flatnonzero(dl_row),
        cold_valid_users=cold_valid, cold_test_users=cold_test, **dl_side)


def _folds(data: Interactions, partition: Partition, cf_row: np.ndarray, method: str, rng: np.random.Generator,
           test_ratio: float, valid_ratio: float, by: str, order: str, beta: float, cold_valid_fraction: float,
           min_train: int, dl_folds: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's fold by ``method``; returns ``(fold, DL-side training rows, cold test users, cold valid users)``."""
    fold = np.full(len(data), TRAIN, np.int8)
    cold_valid = cold_test = np.zeros(0, np.int32)
    rows = np.flatnonzero(cf_row)
    dl_row = ~cf_row
    if method == "predefined":
        fold, dl_row = _predefined_folds(data, cf_row, rng, valid_ratio, dl_folds)
    elif method == "ratio":
        _ratio_folds(data, rows, fold, rng, test_ratio, valid_ratio, by, order, min_train)
    elif method == "loo":
        _per_user(data, rows, fold, rng, order, lambda n: (1, 1 if valid_ratio > 0 else 0), min_train)
    elif method == "cold_start":
        cold_test, cold_valid = _cold_users(data, partition, cf_row, rng, beta, cold_valid_fraction)
        fold[cf_row & np.isin(data.user, cold_test)] = TEST
        fold[cf_row & np.isin(data.user, cold_valid)] = VALID
    else:
        raise DataError(f"split: unknown method {method!r} (ratio|loo|cold_start|predefined)")
    return fold, dl_row, cold_test, cold_valid


def _check_valid_is_test(valid_is_test: bool, method: str, valid_ratio: float, cold_valid_fraction: float,
                         dl_folds: bool = False) -> None:
    if valid_is_test and (cold_valid_fraction if method == "cold_start" else valid_ratio) > 0:
        raise ConfigError("split.valid_is_test=true selects on the test fold: set split.valid_ratio=0 "
                          "(and split.cold_valid_fraction=0 with split=cold_start) so no training row is held out")
    if dl_folds and method != "predefined":
        raise ConfigError(f"split.dl_folds=true needs split=predefined (the dataset's own folds on both sides), "
                          f"not split.method={method!r}")


def _side_matrix(data: Interactions):
    """``side(row mask, items)`` -> ``[U, len(items)]`` CSR of the masked rows, columns local to ``items``."""
    def side(mask: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        local = np.full(data.n_items, -1, np.int64)
        local[items] = np.arange(len(items))
        sel = np.flatnonzero(mask)
        return sp.csr_matrix((data.value[sel], (data.user[sel], local[data.item[sel]])),
                             shape=(data.n_users, len(items)), dtype=np.float32)
    return side


def _ratio_folds(data: Interactions, rows: np.ndarray, fold: np.ndarray, rng: np.random.Generator,
                 test_ratio: float, valid_ratio: float, by: str, order: str, min_train: int) -> None:
    """``ratio``: test/valid fractions of the CF-side ``rows``, per user or over all rows (in place)."""
    if not (0 < test_ratio < 1 and 0 <= valid_ratio < 1 and test_ratio + valid_ratio < 1):
        raise DataError(f"split.test_ratio/valid_ratio: {test_ratio}/{valid_ratio} must be in (0, 1) with sum < 1")
    if by == "global":
        perm = rng.permutation(rows)
        n_test, n_valid = int(round(test_ratio * len(rows))), int(round(valid_ratio * len(rows)))
        fold[perm[:n_test]] = TEST
        fold[perm[n_test:n_test + n_valid]] = VALID
    elif by == "user":
        _per_user(data, rows, fold, rng, order, lambda n: (int(round(test_ratio * n)), int(round(valid_ratio * n))),
                  min_train)
    else:
        raise DataError(f"split.by: {by!r} is not user|global")


def _predefined_folds(data: Interactions, cf_row: np.ndarray, rng: np.random.Generator,
                      valid_ratio: float, dl_folds: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's own folds (a validation slice carved from training when none ships); returns
    ``(fold, dl_row)``: the DL side keeps only its training rows (``dl_folds``: its folds too, with a
    validation slice carved the same way, after the CF side's)."""
    if data.fold is None:
        raise DataError(f"split=predefined: dataset {data.name} ships no folds")
    fold = data.fold.copy()
    dl_row = ~cf_row & (fold == TRAIN)
    if (~cf_row & ~dl_row).any() and not dl_folds:
        log.info("predefined: %d DL-side valid/test rows of %s are held out, not used as DL-side history",
                 int((~cf_row & ~dl_row).sum()), data.name)
    if not dl_folds:
        fold[~cf_row] = TRAIN
    if not 0 <= valid_ratio <= 1:
        raise DataError(f"split.valid_ratio: {valid_ratio} must be in [0, 1] with split=predefined "
                         "(the fraction of users that lend one training row to validation)")
    if valid_ratio > 0 and not (cf_row & (fold == VALID)).any():
        _carve_valid(data, np.flatnonzero(cf_row & (fold == TRAIN)), fold, rng, valid_ratio)
    if dl_folds:
        if valid_ratio > 0 and not (~cf_row & (fold == VALID)).any():
            _carve_valid(data, np.flatnonzero(~cf_row & (fold == TRAIN)), fold, rng, valid_ratio)
        dl_row = ~cf_row & (fold == TRAIN)
    return fold, dl_row


def _cold_users(data: Interactions, partition: Partition, cf_row: np.ndarray, rng: np.random.Generator,
                beta: float, cold_valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``cold_start``: a fraction ``beta`` of the users active on both sides become test users, and
    ``cold_valid_fraction`` of the rest validation users.  Returns ``(test users, valid users)``."""
    if not 0 < beta < 1:
        raise DataError(f"split.beta: {beta} must be in (0, 1)")
    if len(partition.dl_categories) == 0 or cf_row.all():
        raise DataError(dl_side_missing(data, partition, "split=cold_start"))
    has_cf = np.bincount(data.user[cf_row], minlength=data.n_users) > 0
    has_dl = np.bincount(data.user[~cf_row], minlength=data.n_users) > 0
    overlap = np.flatnonzero(has_cf & has_dl)
    if len(overlap) < 4:
        raise DataError(f"split=cold_start: only {len(overlap)} users are active on both sides ({int(has_cf.sum())} "
                        f"have CF-side rows, {int(has_dl.sum())} DL-side rows), and it needs at least 4 to hold "
                        "out; choose partition.k / partition.cf_categories so that more users have rows on both "
                        "sides")
    perm = rng.permutation(overlap)
    n_test = max(1, int(round(beta * len(overlap))))
    n_valid = max(1, int(round(cold_valid_fraction * (len(overlap) - n_test))))
    log.info("cold_start: %d overlapping users -> %d test, %d valid users (beta=%s)",
             len(overlap), n_test, n_valid, beta)
    return (np.sort(perm[:n_test]).astype(np.int32), np.sort(perm[n_test:n_test + n_valid]).astype(np.int32))


def _carve_valid(data: Interactions, rows: np.ndarray, fold: np.ndarray, rng: np.random.Generator,
                 fraction: float) -> None:
    """A validation slice carved from training (folds that ship none, e.g. DisenCDR's): one random
    training row of a ``fraction`` of the users with at least two of ``rows`` (one side's training rows) becomes
    ``VALID``, so model selection never looks at the dataset's test fold."""
    counts = np.bincount(data.user[rows], minlength=data.n_users)
    eligible = np.flatnonzero(counts >= 2)
    chosen = rng.choice(eligible, size=int(round(fraction * len(eligible))), replace=False)
    if len(chosen) == 0:
        return
    order = rows[np.lexsort((rng.random(len(rows)), data.user[rows]))]
    first = order[np.r_[0, np.flatnonzero(np.diff(data.user[order])) + 1]]   # one random row per user
    picked = first[np.isin(data.user[first], chosen)]
    fold[picked] = VALID
    log.info("predefined: no validation fold ships; %d training rows (one per user, %d users) carved as "
             "validation (split.valid_ratio=%s)", len(picked), len(chosen), fraction)


def _per_user(data: Interactions, rows: np.ndarray, fold: np.ndarray, rng: np.random.Generator, order: str,
              sizes, min_train: int) -> None:
    """Per user, mark the last (by time, or random) rows as TEST then VALID, in place."""
    if order not in ("time", "random"):
        raise DataError(f"split.order: {order!r} is not time|random")
    if order == "time" and data.timestamp is not None:
        # stable sort by (user, time); ties keep file order
        key = np.lexsort((data.timestamp[rows], data.user[rows]))
    else:
        key = np.lexsort((rng.random(len(rows)), data.user[rows]))
    rows = rows[key]
    users = data.user[rows]
    bounds = np.flatnonzero(np.diff(users)) + 1
    for block in np.split(rows, bounds):
        n = len(block)
        n_test, n_valid = sizes(n)
        if n - n_test - n_valid < min_train:
            continue  # too few rows: the user stays wholly in training
        if n_test:
            fold[block[n - n_test:]] = TEST
        if n_valid:
            fold[block[n - n_test - n_valid:n - n_test]] = VALID
