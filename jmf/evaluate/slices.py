"""Metrics per slice of the test users (or, sampled, of the test pairs): where a model's score comes from.

Every evaluation's per-user values (:func:`jmf.evaluate.protocols.evaluate_split`'s ``detail``) are averaged within
each slice, reported as ``test/slice/<slice>/<metric>`` with the slice's size as ``test/slice/<slice>/n``:

* ``cold`` / ``warm``: users whose CF side is held out entirely, and the others (only where the fold has both);
* ``o2_q1`` .. ``o2_q4``: users by the length of their DL-side history, in quartiles (cuts at the evaluated users'
  25th, 50th and 75th percentiles; only with a DL side);
* ``head`` / ``tail``: pairs whose held-out item is in the short head (the most popular CF-side items holding 20 %
  of the training interactions) or not; under full ranking, users whose held-out items are all head items, or none
  of them (a user with both is in neither);
* ``twin`` / ``no_twin``: pairs whose held-out item has a near twin in the user's DL-side history
  (:func:`jmf.audit.near_twins`), or not; under full ranking, users with any such item, or none.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jmf.evaluate.beyond import short_head


def slice_masks(split, fold: sp.csr_matrix, users: np.ndarray, items: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """``{slice: [n] bool}`` over the evaluated ``users`` (with ``items``: the pairs ``(users[i], items[i])``)."""
    from jmf.audit import near_twins

    out: dict[str, np.ndarray] = {}
    cold = np.isin(users, split.cold_test_users)
    if cold.any() and not cold.all():
        out["cold"], out["warm"] = cold, ~cold
    length = np.diff(split.dl.indptr)[users]
    if split.dl.nnz:
        cuts = np.percentile(length, [25, 50, 75])
        quart = np.searchsorted(cuts, length, side="right")
        for q in range(4):
            out[f"o2_q{q + 1}"] = quart == q
    head = short_head(np.bincount(split.train.indices, minlength=split.train.shape[1]).astype(float))
    twins = near_twins(split, fold)
    if items is not None:
        out["head"] = head[items]
        out["tail"] = ~out["head"]
        if twins is not None:
            out["twin"] = np.asarray(twins[users, items]).ravel() > 0
            out["no_twin"] = ~out["twin"]
        return out
    held = (fold[users] > 0).astype(np.float32).tocsr()         # full ranking: each user's held-out items
    n_held = np.diff(held.indptr)
    n_head = np.asarray(held @ head.astype(np.float32)).ravel()
    out["head"], out["tail"] = (n_head == n_held) & (n_held > 0), n_head == 0
    if twins is not None:
        any_twin = np.diff(twins[users].tocsr().indptr) > 0
        out["twin"], out["no_twin"] = any_twin, ~any_twin
    return out


def slice_metrics(split, fold: sp.csr_matrix, detail: dict) -> dict[str, float]:
    """``slice/<name>/<metric>`` and ``slice/<name>/n`` from an evaluation's ``detail`` (empty without one)."""
    if not detail.get("per_user"):
        return {}
    masks = slice_masks(split, fold, np.asarray(detail["users"]), detail.get("items"))
    out: dict[str, float] = {}
    for name, mask in masks.items():
        out[f"slice/{name}/n"] = float(mask.sum())
        if mask.any():
            out.update({f"slice/{name}/{m}": float(np.asarray(v)[mask].mean()) for m, v in detail["per_user"].items()})
    return out
