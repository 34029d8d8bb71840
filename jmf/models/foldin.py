"""Folding a user who was not in training into a fitted factor model: least squares on the item factors.

A factor model scores ``s_ui = x_u·q_i (+ b_i)``; a new user's ``x_u`` is the regularised least-squares
fit of their interactions given the fixed item factors ``Q`` -- the user half-step of ALS:

* implicit feedback (``implicit_fold_in``): the iALS objective ``Σ_i c_ui (p_ui − x·q_i)² + λ‖x‖²`` over
  *every* item (``p = 1, c = 1 + α`` on the user's items, ``p = 0, c = 1`` elsewhere), solved exactly:
  ``(QᵀQ + λI + α Σ_{i∈u} q_i q_iᵀ) x = (1 + α) Σ_{i∈u} q_i`` (Hu, Koren & Volinsky 2008);
* ratings (``explicit_fold_in``): ``Σ_{i∈u} (r_ui − μ − b_i − b_u − x·q_i)² + λ(‖x‖² + b_u²)`` over the
  user's rated items, for ``x`` and ``b_u`` together.

Both are one ``d x d`` solve per user (``d + 1`` with the bias), batched with numpy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def rows_present(rows: sp.csr_matrix) -> np.ndarray:
    """``[B]`` whether each user has any interaction in ``rows``."""
    return np.diff(sp.csr_matrix(rows).indptr) > 0


def implicit_fold_in(Q: np.ndarray, rows: sp.csr_matrix, reg: float | None = None, alpha: float = 1.0,
                     scale_values: bool = False, chunk: int = 256) -> np.ndarray:
    """``[B, d]`` user factors of the users ``rows [B, I]`` given ``Q [I, d]``.

    Confidence on the user's items is ``1 + α`` (``scale_values``: ``α·r_ui``, jmf's iALS); ``reg``
    ``None`` is scale-free: a tenth of the mean eigenvalue of ``QᵀQ``.  Users are solved ``chunk`` at a
    time as one batched ``d x d`` solve over their padded item lists.
    """
    Q = np.asarray(Q, np.float64)
    rows = sp.csr_matrix(rows)
    gram = Q.T @ Q
    reg = 0.1 * np.trace(gram) / Q.shape[1] if reg is None else reg
    gram = gram + reg * np.eye(Q.shape[1])
    out = np.zeros((rows.shape[0], Q.shape[1]))
    for start in range(0, rows.shape[0], chunk):
        items, data, mask = _padded(rows[start:start + chunk])
        q = Q[items] * mask[..., None]                                     # [C, n, d], 0 on pads
        conf = np.where(mask, alpha * data if scale_values else 1.0 + alpha, 0.0)
        A = gram[None] + np.einsum("cn,cnd,cne->cde", np.where(mask, conf - 1.0, 0.0), q, q)
        rhs = np.einsum("cn,cnd->cd", conf, q)
        out[start:start + chunk] = np.linalg.solve(A, rhs[..., None])[..., 0]
    return out.astype(np.float32)


def _padded(rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR rows -> ``([C, n] column ids, [C, n] values, [C, n] mask)``, padded to the longest row."""
    lengths = np.diff(rows.indptr)
    width = max(int(lengths.max(initial=0)), 1)
    mask = np.arange(width)[None, :] < lengths[:, None]
    items, data = np.zeros(mask.shape, np.int64), np.zeros(mask.shape)
    items[mask], data[mask] = rows.indices, rows.data
    return items, data, mask


def explicit_fold_in(Q: np.ndarray, item_bias: np.ndarray, mean, rows: sp.csr_matrix,
                     reg: float, per_rating: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``([B, d] x_u, [B] b_u)`` of the users' ratings ``rows [B, I]`` given ``Q``, ``b_i`` and ``μ`` (a number,
    or ``[I]`` per item); ``per_rating``: the penalty is ``reg`` per rating (SGD-trained MF's), else once."""
    Q, item_bias = np.asarray(Q, np.float64), np.asarray(item_bias, np.float64)
    mean = np.broadcast_to(np.asarray(mean, np.float64), (Q.shape[0],))
    rows = sp.csr_matrix(rows)
    d = Q.shape[1]
    x, bias = np.zeros((rows.shape[0], d)), np.zeros(rows.shape[0])
    for b in range(rows.shape[0]):
        lo, hi = rows.indptr[b], rows.indptr[b + 1]
        if lo == hi:
            continue
        items, r = rows.indices[lo:hi], rows.data[lo:hi].astype(np.float64)
        A = np.concatenate([Q[items], np.ones((len(items), 1))], 1)         # [n, d+1]: factors and the bias
        lam = reg * (len(items) if per_rating else 1.0)
        sol = np.linalg.solve(A.T @ A + lam * np.eye(d + 1), A.T @ (r - mean[items] - item_bias[items]))
        x[b], bias[b] = sol[:d], sol[d]
    return x.astype(np.float32), bias.astype(np.float32)
