"""Truncated SVD of the CF-side matrix (closed form), also the default initialiser of ``P`` and ``Q``.

``O1 ≈ U_d Σ_d V_dᵀ`` with ``P = U_d Σ^½`` and ``Q = V_d Σ^½`` (design.md#the-cf-side), so that
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
from jmf.models.base import ClosedFormModel, RunContext
from jmf.errors import ConfigError


def randomized_svd(mat: sp.spmatrix | np.ndarray, rank: int, *, oversample: int = 10, n_iter: int = 4,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets of ``mat`` ``[m, n]`` -> ``U [m, r]``, ``s [r]`` (descending), ``Vt [r, n]``.

    Works on the short side (``mat`` is transposed when ``m > n``), so every QR is of a
    ``[min(m, n), rank + oversample]`` block: power iterations ``Q <- qr(A Aᵀ Q)``, then
    ``Aᵀ Q = C`` and the eigendecomposition of the small Gram ``Cᵀ C = W Σ² Wᵀ`` (float64)
    give ``U = Q W`` and ``V = C W Σ⁻¹``.  The Gram squares the condition number, which costs
    nothing for the leading ``rank`` values kept here (their ratio to σ₁ is far above
    float64's 1e-8); the long-side QRs it replaces were 2/3 of the run time on Ciao's
    7375 x 105114 matrix.
    """
    m, n = mat.shape
    if not 1 <= rank <= min(m, n):
        raise ConfigError(f"model.dim: rank {rank} must be in 1..{min(m, n)} for a {m}x{n} matrix")
    if m > n:
        u, s, vt = randomized_svd(mat.T, rank, oversample=oversample, n_iter=n_iter, seed=seed)
        return np.ascontiguousarray(vt.T), s, np.ascontiguousarray(u.T)
    width = min(rank + oversample, m)
    rng = np.random.default_rng(seed)
    mat = mat.tocsr().astype(np.float32) if sp.issparse(mat) else np.asarray(mat, np.float32)
    mat_t = mat.T.tocsr() if sp.issparse(mat) else np.ascontiguousarray(mat.T)
    omega = rng.standard_normal((n, width)).astype(np.float32)
    q, _ = scipy.linalg.qr(np.asarray(mat @ omega), mode="economic", check_finite=False)
    for _ in range(n_iter):
        q, _ = scipy.linalg.qr(np.asarray(mat @ np.asarray(mat_t @ q)), mode="economic", check_finite=False)
    c = np.asarray(mat_t @ q)                                    # [n, w] = (Qᵀ A)ᵀ
    gram = c.T.astype(np.float64) @ c.astype(np.float64)         # [w, w]
    lam, w = scipy.linalg.eigh(gram, check_finite=False)
    order = np.argsort(lam)[::-1][:rank]
    s = np.sqrt(np.maximum(lam[order], 0.0))
    w = w[:, order].astype(np.float32)
    u = q @ w
    vt = ((c @ w) / np.maximum(s, np.finfo(np.float32).tiny).astype(np.float32)).T
    return u.astype(np.float32), s.astype(np.float32), np.ascontiguousarray(vt, np.float32)


def explained_variance(mat: sp.spmatrix | np.ndarray, s: np.ndarray) -> np.ndarray:
    """Cumulative share of ``‖mat‖_F²`` captured by the leading singular values ``s``."""
    total = float(mat.multiply(mat).sum()) if sp.issparse(mat) else float((np.asarray(mat) ** 2).sum())
    return np.cumsum(s.astype(np.float64) ** 2) / total


class TruncatedSVD(ClosedFormModel):
    """Rank-``dim`` SVD of the training matrix.

    Args:
      dim: rank ``d``.
      center: subtract the global mean from observed ratings before the SVD (explicit data).
      n_iter, oversample: randomized-SVD accuracy knobs.
    """

    fitted = ("user_factors", "item_factors", "singular_values", "mean")

    def __init__(self, dim: int = 64, center: bool = True, n_iter: int = 4, oversample: int = 10):
        self.dim, self.center, self.n_iter, self.oversample = dim, center, n_iter, oversample

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        return self.decompose(split, ctx.seed if ctx is not None else 0)

    def decompose(self, split: SplitData, seed: int = 0) -> dict[str, float]:
        """The randomized SVD of ``split.train`` with ``seed``'s test matrix (also JMF's and MF's start)."""
        mat = split.train.astype(np.float32).copy()
        self.mean = float(mat.data.mean()) if (self.center and not split.implicit and mat.nnz) else 0.0
        mat.data -= self.mean
        u, s, vt = randomized_svd(mat, min(self.dim, min(mat.shape)), oversample=self.oversample,
                                  n_iter=self.n_iter, seed=seed)
        root = np.sqrt(s)
        self.user_factors = u * root          # P = U_d Σ^½   [U, d]
        self.item_factors = vt.T * root       # Q = V_d Σ^½   [I_CF, d]
        self.singular_values = s
        self._P, self._Q = jnp.asarray(self.user_factors), jnp.asarray(self.item_factors)
        return {"explained_variance": float(explained_variance(mat, s)[-1])}

    def restored(self, split: SplitData, saved: dict) -> None:
        self.user_factors, self.item_factors = np.asarray(self.user_factors), np.asarray(self.item_factors)
        self._P, self._Q = jnp.asarray(self.user_factors), jnp.asarray(self.item_factors)

    def score_tables(self) -> tuple[jax.Array, jax.Array, None]:
        return self._P, self._Q, None

    def score(self, users: jax.Array) -> jax.Array:
        return self._P[users] @ self._Q.T

    def score_new(self, hist) -> tuple[np.ndarray, np.ndarray]:
        """Fold-in: a new user's (centred) CF row projected on the item factors, ``x = r Q (QᵀQ)⁻¹``, the
        least-squares ``x`` with ``x Qᵀ ≈ r`` (zeros off the user's items, as the SVD reads them)."""
        from jmf.models.foldin import rows_present

        rows = sp.csr_matrix(hist.cf, dtype=np.float64, copy=True)
        rows.data -= self.mean
        Q = np.asarray(self.item_factors, np.float64)
        x = (rows @ Q) @ np.linalg.inv(Q.T @ Q)
        return (x @ Q.T).astype(np.float32), rows_present(hist.cf)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mean + np.einsum("nd,nd->n", self.user_factors[users], self.item_factors[items])
