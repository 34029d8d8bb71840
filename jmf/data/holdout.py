"""``split=category_holdout``: every category is in turn a target (docs/pages/guide/transfer-map.md).

For a target category ``t``, a fraction ``beta`` of the users active in ``t`` and in some other category lose
all their rows in ``t`` (``t``'s cold test users), and ``cold_valid_fraction`` of the rest become ``t``'s cold
validation users; what a model may read of such a user is their behaviour outside ``t``.  Targets are drawn one
after another, so a user can be cold for several targets, but never for every category they are active in: each
cold user keeps the training rows of at least one category.

The split is a :class:`~jmf.data.split.SplitData` whose CF side is the target categories' items (ordered by
category, so each target's items are one contiguous range) and whose DL side is every item, with
:class:`CategoryHoldout` saying which users are cold for which target.  :func:`target_view` is one target's
part of it as a plain cold-start split (CF side: ``t``; DL side: every other category): the split a single-target
model trains on (``split.target=<name>``) and the one a multi-target model is evaluated on, per target, with
the same cold users.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from jmf.data.interactions import TEST, TRAIN, VALID, Interactions
from jmf.data.split import Partition, SplitData, _side_matrix, partition_categories
from jmf.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CategoryHoldout:
    """Which users are cold for which target category (``split=category_holdout``).

    Attributes:
      targets: ``[T]`` the target category ids, ascending.
      valid_users, test_users: per target (same order), the sorted users whose rows in it are held out.
      item_start: ``[T + 1]`` each target's range of CF-side item indices (``cf_items[item_start[k]:item_start[k+1]]``).
    """

    targets: np.ndarray
    valid_users: tuple[np.ndarray, ...]
    test_users: tuple[np.ndarray, ...]
    item_start: np.ndarray
    views: dict = field(default_factory=dict, repr=False)   # view_at's splits, built once per target

    def index(self, target: int | str, names: Sequence[str]) -> int:
        """The position in ``targets`` of the category *named* ``target`` (``split.target=6`` is the category named
        6, as the run's ``targets/<name>/...`` metrics name it; ConfigError naming ``split.target`` if none is)."""
        names = [str(n) for n in names]
        hits = np.flatnonzero(self.targets == names.index(str(target))) if str(target) in names else []
        if len(hits) == 0:
            raise ConfigError(f"split.target: {target!r} is not a target category (targets: "
                              f"{', '.join(names[c] for c in self.targets[:12])}{' ...' if len(self.targets) > 12 else ''})")
        return int(hits[0])


def resolve_targets(data: Interactions, targets: int | Sequence[int | str] | None) -> np.ndarray:
    """``split.targets``: ``None`` every category that holds rows; an integer ``k`` the ``k`` largest (by rows);
    a list of names (strings) or ids (integers), as ``partition.cf_categories`` reads them."""
    rows = np.bincount(data.item_category[data.item], minlength=data.n_categories)
    if targets is None:
        out = np.flatnonzero(rows > 0)
    elif isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        if not 1 <= targets <= data.n_categories:
            raise ConfigError(f"split.targets: {targets} must be in 1..{data.n_categories} ({data.name} has "
                              f"{data.n_categories} categories) or a list of category names")
        out = np.sort(np.argsort(-rows, kind="stable")[:targets])
    else:
        try:
            out = partition_categories(data, cf_categories=list(targets)).cf_categories
        except DataError as err:
            raise ConfigError(str(err).replace("partition.cf_categories", "split.targets")) from None
    out = out[rows[out] > 0].astype(np.int32)
    if data.n_categories < 2 or len(out) == 0:
        raise DataError(f"split=category_holdout: {data.name} needs two or more categories with rows (it has "
                        f"{int((rows > 0).sum())}); each target is predicted from the others")
    return out


def make_holdout_split(data: Interactions, *, seed: int = 0, beta: float = 0.2, cold_valid_fraction: float = 0.1,
                       targets: int | Sequence[int | str] | None = None,
                       target: int | str | None = None) -> SplitData:
    """The multi-target split (module docstring); with ``target``, that target's :func:`target_view`."""
    if not 0 < beta < 1:
        raise ConfigError(f"split.beta: {beta} must be in (0, 1)")
    if not 0 <= cold_valid_fraction < 1:
        raise ConfigError(f"split.cold_valid_fraction: {cold_valid_fraction} must be in [0, 1)")
    chosen = resolve_targets(data, targets)
    rng = np.random.default_rng(seed)
    cat = data.item_category[data.item]
    C = data.n_categories
    active = np.zeros((data.n_users, C), bool)
    active[data.user, cat] = True
    kept = active.copy()                  # categories whose rows a user still trains on
    fold = np.full(len(data), TRAIN, np.int8)
    valid_users, test_users = [], []
    for t in chosen:
        others = kept.sum(1) - kept[:, t]
        eligible = np.flatnonzero(active[:, t] & kept[:, t] & (others >= 1))
        perm = rng.permutation(eligible)
        n_test = int(round(beta * len(perm)))
        n_valid = int(round(cold_valid_fraction * (len(perm) - n_test)))
        test, valid = np.sort(perm[:n_test]).astype(np.int32), np.sort(perm[n_test:n_test + n_valid]).astype(np.int32)
        in_t = cat == t
        fold[in_t & np.isin(data.user, test)] = TEST
        fold[in_t & np.isin(data.user, valid)] = VALID
        kept[test, t] = kept[valid, t] = False
        test_users.append(test)
        valid_users.append(valid)
    names = [str(n) for n in data.category_names]
    empty = [names[t] for t, users in zip(chosen, test_users) if len(users) == 0]
    if empty:
        raise DataError(f"split=category_holdout: no cold test users for target(s) {', '.join(empty[:8])} of "
                        f"{data.name}: too few users are active in them and elsewhere (raise split.beta, or leave "
                        "them out of split.targets)")
    log.info("category_holdout: %d targets; cold test users per target %s (beta=%s)", len(chosen),
             ", ".join(f"{names[t]} {len(u)}" for t, u in list(zip(chosen, test_users))[:10])
             + (" ..." if len(chosen) > 10 else ""), beta)
    split = _split(data, chosen, fold, valid_users, test_users)
    return split if target is None else target_view(split, target)


def _split(data: Interactions, targets: np.ndarray, fold: np.ndarray, valid_users: list, test_users: list) -> SplitData:
    cat = data.item_category[data.item]
    in_target = np.isin(cat, targets)
    items = np.flatnonzero(np.isin(data.item_category, targets))
    cf_items = items[np.lexsort((items, data.item_category[items]))].astype(np.int32)   # by category, then id
    item_start = np.searchsorted(data.item_category[cf_items], targets)
    all_items = np.arange(data.n_items, dtype=np.int32)
    side = _side_matrix(data)
    holdout = CategoryHoldout(targets, tuple(valid_users), tuple(test_users),
                              np.append(item_start, len(cf_items)).astype(np.int64))
    train = fold == TRAIN
    return SplitData(
        data=data, partition=Partition(targets, np.arange(data.n_categories, dtype=np.int32), "split.targets"),
        cf_items=cf_items, dl_items=all_items, train=side(in_target & train, cf_items),
        valid=side(in_target & (fold == VALID), cf_items), test=side(in_target & (fold == TEST), cf_items),
        dl=side(train, all_items), train_rows=np.flatnonzero(in_target & train), dl_rows=np.flatnonzero(train),
        cold_valid_users=np.unique(np.concatenate(valid_users)).astype(np.int32),
        cold_test_users=np.unique(np.concatenate(test_users)).astype(np.int32), holdout=holdout)


def target_view(split: SplitData, target: int | str) -> SplitData:
    """Target ``target``'s part of a ``category_holdout`` split as a plain cold-start split: CF side the target's
    items (training rows: its warm users'; valid/test: its cold users' held-out rows), DL side every other
    category's training rows.  ``target``: a category name (an integer is read as the name it spells)."""
    if split.holdout is None:
        raise ConfigError("split.target needs split=category_holdout")
    return view_at(split, split.holdout.index(target, split.data.category_names))


def view_at(split: SplitData, k: int) -> SplitData:
    """:func:`target_view` of the ``k``-th target (a position in ``split.holdout.targets``), built once and kept."""
    h = split.holdout
    if k not in h.views:
        h.views[k] = _view(split, k)
    return h.views[k]


def _view(split: SplitData, k: int) -> SplitData:
    h, data = split.holdout, split.data
    t = int(h.targets[k])
    cat = data.item_category[data.item]
    rows_t = np.flatnonzero(cat == t)
    user_t = data.user[rows_t]
    fold_t = np.where(np.isin(user_t, h.test_users[k]), TEST, np.where(np.isin(user_t, h.valid_users[k]), VALID, TRAIN))
    train_all = np.zeros(len(data), bool)
    train_all[split.dl_rows] = True
    mask = lambda f: _mask(len(data), rows_t[fold_t == f])   # noqa: E731
    outside = train_all & (cat != t)
    cf_items = split.cf_items[h.item_start[k]:h.item_start[k + 1]]
    dl_cats = np.setdiff1d(np.arange(data.n_categories, dtype=np.int32), [t])
    dl_items = np.flatnonzero(data.item_category != t).astype(np.int32)
    side = _side_matrix(data)
    train_t = mask(TRAIN) & train_all
    return SplitData(
        data=data, partition=Partition(np.asarray([t], np.int32), dl_cats, "split.target"), cf_items=cf_items,
        dl_items=dl_items, train=side(train_t, cf_items), valid=side(mask(VALID), cf_items),
        test=side(mask(TEST), cf_items), dl=side(outside, dl_items), train_rows=np.flatnonzero(train_t),
        dl_rows=np.flatnonzero(outside), cold_valid_users=h.valid_users[k], cold_test_users=h.test_users[k])


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    out = np.zeros(n, bool)
    out[rows] = True
    return out
