"""Truncated SVD of O1 (closed form), also the default initialiser of ``P`` and ``Q``.

``O1 ≈ U_d Σ_d V_dᵀ`` with ``P = U_d Σ^½`` and ``Q = V_d Σ^½`` (DESIGN 2.1), so that
``P Qᵀ`` is the best rank-d approximation.  The decomposition is a randomized SVD
(Halko, Martinsson & Tropp 2011, Alg. 4.4 with ``n_iter`` QR-stabilised power
iterations): two sparse products per iteration on the host CSR and small dense QRs,
which is faster than ARPACK (``scipy.sparse.linalg.svds``) at equal accuracy for the
leading factors (see ``benchmarks/speed_cf.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.sparse as sp

from jmf.data.split import SplitData


def randomized_svd(mat: sp.spmatrix | np.ndarray, rank: int, *, oversample: int = 10, n_iter: int = 4,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets of ``mat`` ``[m, n]`` -> ``U [m, r]``, ``s [r]`` (descending), ``Vt [r, n]``."""
    m, n = mat.shape
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"model.dim: rank {rank} must be in 1..{min(m, n)} for a {m}x{n} matrix")
    width = min(rank + oversample, min(m, n))
    rng = np.random.default_rng(seed)
    mat_t = mat.T.tocsr() if sp.issparse(mat) else mat.T
    omega = rng.standard_normal((n, width)).astype(np.float32)
    y = np.asarray(mat @ omega)
    q, _ = scipy.linalg.qr(y, mode="economic", check_finite=False)
    for _ in range(n_iter):
        z, _ = scipy.linalg.qr(np.asarray(mat_t @ q), mode="economic", check_finite=False)
        q, _ = scipy.linalg.qr(np.asarray(mat @ z), mode="economic", check_finite=False)
    b = np.asarray(mat_t @ q).T  # [width, n] = Qᵀ A
    ub, s, vt = scipy.linalg.svd(b, full_matrices=False, check_finite=False)
    u = q @ ub
    return u[:, :rank].astype(np.float32), s[:rank].astype(np.float32), vt[:rank].astype(np.float32)


def explained_variance(mat: sp.spmatrix | np.ndarray, s: np.ndarray) -> np.ndarray:
    """Cumulative share of ``‖mat‖_F²`` captured by the leading singular values ``s``."""
    total = float(mat.multiply(mat).sum()) if sp.issparse(mat) else float((np.asarray(mat) ** 2).sum())
    return np.cumsum(s.astype(np.float64) ** 2) / total


class TruncatedSVD:
    """Rank-``dim`` SVD of the training matrix.

    Args:
      dim: rank ``d``.
      center: subtract the global mean from observed ratings before the SVD (explicit data).
      n_iter, oversample: randomized-SVD accuracy knobs.
    """

    def __init__(self, dim: int = 64, center: bool = True, n_iter: int = 4, oversample: int = 10):
        self.dim, self.center, self.n_iter, self.oversample = dim, center, n_iter, oversample

    def fit(self, split: SplitData, seed: int = 0) -> dict[str, float]:
        mat = split.train.astype(np.float32).copy()
        self.mean = float(mat.data.mean()) if (self.center and not split.implicit and mat.nnz) else 0.0
        mat.data -= self.mean
        u, s, vt = randomized_svd(mat, min(self.dim, min(mat.shape)), oversample=self.oversample,
                                  n_iter=self.n_iter, seed=seed)
        root = np.sqrt(s)
        self.user_factors = u * root          # P = U_d Σ^½   [U, d]
        self.item_factors = vt.T * root       # Q = V_d Σ^½   [I_T, d]
        self.singular_values = s
        self._P, self._Q = jnp.asarray(self.user_factors), jnp.asarray(self.item_factors)
        return {"explained_variance": float(explained_variance(mat, s)[-1])}

    def score(self, users: jax.Array) -> jax.Array:
        return self._P[users] @ self._Q.T

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mean + np.einsum("nd,nd->n", self.user_factors[users], self.item_factors[items])
