"""The data audit every run writes (``audit.json``) and the leaks that stop a run.

A cross-category benchmark can leak in known ways; each is counted on the split the model trains on:

* ``cold_target_rows_in_train``: CF-side training rows of the cold users (the users whose CF side is held out
  entirely): must be 0.
* ``test_pairs_in_train`` / ``valid_pairs_in_train`` / ``test_pairs_in_valid``: a (user, item) pair held out that
  is also in an earlier fold (repeated rows left in the data, ``data.preprocess.duplicates=keep``): must be 0.
* ``test_before_train``: the share of test rows older than the same user's latest CF-side training row.  A split
  that holds out each user's latest rows (``split.order=time``, per user) must have 0; a random or a predefined
  split has some by design (reported, not a leak).

and, as context for every table: the users and items of each side and their overlap, ``duplicate_pairs`` (repeated
(user, item) rows in the data after preprocessing), and ``near_twin_share``: the share of test pairs whose item has
a *near twin* in the user's DL-side history, a DL item whose other holders look like the test item's holders in
training (co-occurrence ``c`` with ``c >= 1``, ``c >= (n_j - 1) / 2`` and ``c >= n_i / 2``, ``n`` the holders):
what a co-occurrence count picks up at once (:func:`near_twins`).

:func:`check` stops a run on a leak with one paragraph naming it, unless ``trainer.allow_leaks=true``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jmf.data.split import SplitData
from jmf.errors import JmfError

MAX_COOCCURRENCE = 5e7     # products Σ_u |DL_u|·|CF_u| above this: near twins are not counted (time and memory)


class DataLeakError(JmfError):
    """The split leaks held-out rows into training (:mod:`jmf.audit`)."""


def near_twins(split: SplitData, fold: sp.csr_matrix) -> sp.csr_matrix | None:
    """``[U, I_CF]`` bool, the pairs of ``fold`` whose item has a near twin in the user's DL-side training history
    (module docstring); ``None`` without a DL side or when counting would exceed :data:`MAX_COOCCURRENCE`."""
    dl = (split.dl > 0).astype(np.float32).tocsr()
    train = (split.train > 0).astype(np.float32).tocsr()
    if dl.nnz == 0 or train.nnz == 0:
        return None
    if float(np.diff(dl.indptr).astype(float) @ np.diff(train.indptr).astype(float)) > MAX_COOCCURRENCE:
        return None
    c = (dl.T @ train).tocoo()                                     # [I_DL, I_CF] co-occurrence over training users
    n_j = np.asarray(dl.sum(0)).ravel()
    n_i = np.asarray(train.sum(0)).ravel()
    keep = (c.data >= 1) & (c.data >= (n_j[c.row] - 1) / 2) & (c.data >= n_i[c.col] / 2)
    twin = sp.csr_matrix((np.ones(keep.sum(), np.float32), (c.row[keep], c.col[keep])), shape=c.shape)
    has = (dl @ twin).tocsr()                                      # [U, I_CF] > 0: some DL item is a twin of it
    pairs = (fold > 0).astype(np.float32)
    return (pairs.multiply(has) > 0).tocsr()


def _pairs_in(a: sp.csr_matrix, b: sp.csr_matrix) -> int:
    return int(((a != 0).multiply(b != 0)).nnz)


def _test_before_train(split: SplitData) -> float | None:
    """Share of test rows older than their user's latest CF-side training row (``None`` without timestamps)."""
    data = split.data
    if data.timestamp is None or split.test.nnz == 0 or len(split.train_rows) == 0:
        return None
    n_items = int(data.item.max()) + 1
    keys = data.user.astype(np.int64) * n_items + data.item
    order = np.argsort(keys, kind="stable")
    test = split.test.tocoo()
    wanted = test.row.astype(np.int64) * n_items + split.cf_items[test.col]
    at = order[np.minimum(np.searchsorted(keys[order], wanted), len(order) - 1)]
    latest = np.full(split.train.shape[0], -np.inf)
    np.maximum.at(latest, data.user[split.train_rows], data.timestamp[split.train_rows].astype(float))
    return float((data.timestamp[at].astype(float) < latest[test.row]).mean())


def _cold_rows_in_train(split: SplitData, cold: np.ndarray) -> int:
    """CF-side training rows of cold users; with ``split=category_holdout``, of each target's cold users in that
    target (a user cold in one target keeps their rows in the others)."""
    if split.holdout is None:
        return int(split.train[cold].nnz) if len(cold) else 0
    from jmf.data.holdout import view_at

    return sum(int(view_at(split, k).train[np.union1d(t, v)].nnz)
               for k, (t, v) in enumerate(zip(split.holdout.test_users, split.holdout.valid_users)))


def audit(split: SplitData, time_ordered: bool = False) -> dict:
    """The audit of ``split`` (module docstring); ``time_ordered``: the split holds out each user's latest rows,
    so a test row older than the user's training rows is a leak.  ``leaks`` lists what :func:`check` stops on."""
    data = split.data
    cf_users = np.diff((split.train + split.valid + split.test).tocsr().indptr) > 0
    dl_users = np.diff(split.dl.indptr) > 0
    cold = np.union1d(split.cold_test_users, split.cold_valid_users).astype(np.int64)
    cf_ids = set(np.asarray(data.item_ids)[split.cf_items].tolist())
    pair_keys = data.user.astype(np.int64) * (int(data.item.max()) + 1) + data.item if len(data.user) else data.user
    out = {"users": int(split.train.shape[0]), "users_cf": int(cf_users.sum()), "users_dl": int(dl_users.sum()),
           "users_both_sides": int((cf_users & dl_users).sum()),
           "items_cf": int(len(split.cf_items)), "items_dl": int(len(split.dl_items)),
           "items_both_sides": int(len(cf_ids & set(np.asarray(data.item_ids)[split.dl_items].tolist()))),
           "duplicate_pairs": int(len(pair_keys) - len(np.unique(pair_keys))),
           "cold_users": int(len(cold)),
           "cold_target_rows_in_train": _cold_rows_in_train(split, cold),
           "test_pairs_in_train": _pairs_in(split.test, split.train),
           "valid_pairs_in_train": _pairs_in(split.valid, split.train),
           "test_pairs_in_valid": _pairs_in(split.test, split.valid),
           "test_before_train": _test_before_train(split)}
    out["user_overlap"] = out["users_both_sides"] / max(out["users"], 1)
    twins = near_twins(split, split.test) if split.test.nnz else None
    out["near_twin_share"] = None if twins is None else twins.nnz / split.test.nnz
    leaks = [f"{out[k]} {what}" for k, what in (
        ("cold_target_rows_in_train", "CF-side training rows of cold users (their CF side is held out)"),
        ("test_pairs_in_train", "test (user, item) pairs also in training"),
        ("valid_pairs_in_train", "validation (user, item) pairs also in training"),
        ("test_pairs_in_valid", "test (user, item) pairs also in validation")) if out[k]]
    if time_ordered and out["test_before_train"]:
        leaks.append(f"{out['test_before_train']:.1%} of the test rows older than their user's latest training row "
                     "in a split that holds out each user's latest rows")
    out["leaks"] = leaks
    return out


def summary(report: dict) -> str:
    """One line: overlap, near twins, leaks."""
    twins = "n/a" if report["near_twin_share"] is None else f"{report['near_twin_share']:.1%}"
    older = "n/a" if report["test_before_train"] is None else f"{report['test_before_train']:.1%}"
    return (f"audit: users {report['users']} ({report['user_overlap']:.1%} on both sides), items CF {report['items_cf']} "
            f"/ DL {report['items_dl']} ({report['items_both_sides']} on both), near twins {twins} of test pairs, test "
            f"older than training {older}, duplicates {report['duplicate_pairs']}, "
            + (f"LEAKS: {'; '.join(report['leaks'])}" if report["leaks"] else "no leak"))


def check(report: dict, allow: bool, path: str = "audit.json") -> None:
    """Stop on a leak (:class:`DataLeakError`), unless ``allow`` (``trainer.allow_leaks``)."""
    if report["leaks"] and not allow:
        raise DataLeakError(
            f"the split leaks held-out rows into what the model reads: {'; '.join(report['leaks'])}.  Its test "
            f"figures would not measure what they claim.  Fix the data or the split (repeated rows: "
            f"data.preprocess.duplicates=mean|first|last), or set trainer.allow_leaks=true to run anyway; the "
            f"counts are in {path}.")
