"""The behaviour matrix ``O ∈ R^{U×C}``: interactions aggregated per user and category (design.md#the-behaviour-matrix).

``agg``: ``count`` (interactions per category), ``mean`` (mean value per category),
``normalised`` (each user's counts as a distribution over categories).  Optional ``log1p``.
Missing cells (no interaction in that category) are ``NaN`` before filling; ``fill``:
``zero``, ``mean`` (the category's mean over users who have it) or ``knn`` (mean of the
``knn_k`` most similar users, cosine over observed cells, who have the cell).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jmf.data.interactions import Interactions
from jmf.errors import DataError

AGGREGATIONS = ("count", "mean", "normalised")
FILLS = ("none", "zero", "mean", "knn")


def behavior_matrix(data: Interactions, agg: str = "count", fill: str = "zero", log1p: bool = False,
                    knn_k: int = 10, users: np.ndarray | None = None) -> np.ndarray:
    """``[U, C]`` float32 behaviour matrix of ``data`` (rows of ``users`` only, if given).

    Raises:
      ValueError: unknown ``agg``/``fill`` (named as ``behavior.agg`` / ``behavior.fill``).
    """
    if agg not in AGGREGATIONS:
        raise DataError(f"behavior.agg: {agg!r} is not one of {AGGREGATIONS}")
    if fill not in FILLS:
        raise DataError(f"behavior.fill: {fill!r} is not one of {FILLS}")
    cat = data.item_category[data.item]
    shape = (data.n_users, data.n_categories)
    counts = sp.csr_matrix((np.ones(len(data)), (data.user, cat)), shape=shape).toarray()
    observed = counts > 0
    if agg == "count":
        out = counts
    elif agg == "mean":
        sums = sp.csr_matrix((data.value.astype(np.float64), (data.user, cat)), shape=shape).toarray()
        out = np.divide(sums, counts, out=np.zeros_like(sums), where=observed)
    else:
        total = counts.sum(1, keepdims=True)
        out = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    if log1p:
        out = np.log1p(out)
    out = np.where(observed, out, np.nan)
    if users is not None:
        out, observed = out[users], observed[users]
    return _fill(out, observed, fill, knn_k).astype(np.float32)


def _fill(mat: np.ndarray, observed: np.ndarray, fill: str, knn_k: int) -> np.ndarray:
    if fill == "none":
        return mat
    if fill == "zero":
        return np.where(observed, mat, 0.0)
    col_mean = np.nanmean(np.where(observed, mat, np.nan), axis=0)
    col_mean = np.where(np.isnan(col_mean), 0.0, col_mean)
    if fill == "mean":
        return np.where(observed, mat, col_mean[None, :])
    # knn: cosine similarity over zero-filled rows; each missing cell = mean of its k nearest
    # users that observed the cell (falls back to the category mean when none did)
    dense = np.where(observed, mat, 0.0)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    unit = dense / np.maximum(norms, 1e-12)
    out = dense.copy()
    for start in range(0, len(mat), 1024):
        sim = unit[start:start + 1024] @ unit.T                      # [b, U]
        idx = np.arange(start, min(start + 1024, len(mat)))
        sim[np.arange(len(idx)), idx] = -np.inf                       # not oneself
        for c in range(mat.shape[1]):
            missing = ~observed[idx, c]
            if not missing.any():
                continue
            s = np.where(observed[None, :, c], sim[missing], -np.inf)  # only users who have c
            k = min(knn_k, int(observed[:, c].sum()))
            if k == 0:
                out[idx[missing], c] = col_mean[c]
                continue
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            out[idx[missing], c] = dense[top, c].mean(1)
    return out
