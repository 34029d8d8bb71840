"""Cross-side item co-occurrence: the item-neighbourhood score term as a model of its own.

``s_ui = log(ε + n_ui / max_k n_uk) + λ_pop · log(1 + c_i) / log(1 + max_k c_k)`` where ``n_u = x_u K``
is the user's DL-side row (binary, scaled by ``1/|O2(u)|``) through the DL -> CF kernel ``K`` of the warm users'
training rows (:func:`jmf.models.joint.terms.neighbour_inputs`) and ``c_i`` the item's training count.
It is JMF's ``model/terms=[neighbour]`` with no factor model under it: popularity orders the items the
kernel does not reach (``λ_pop`` is below the term's smallest step, so it only breaks ties and orders the
users without DL-side history).  Nothing is learned: it is the reference that says how much of a JMF row
with that term the term alone gives.  A ranking model (``rates = False``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jmf.data.split import SplitData
from jmf.errors import ConfigError
from jmf.models.joint.terms import binary_rows, log_normalised, neighbour_inputs
from jmf.models.base import ClosedFormModel, RunContext


class CoOccurrence(ClosedFormModel):
    """See the module docstring.

    Args:
      kernel: ``count`` or ``conditional`` (:class:`jmf.models.joint.terms.ItemNeighbourhood`).
      eps: the floor ``ε`` inside the log.  pop_weight: ``λ_pop``, the popularity tie-break (0 <= it < 1).
    """

    rates = False
    fitted = ("item_counts",)

    def __init__(self, kernel: str = "count", eps: float = 1e-3, pop_weight: float = 1e-3):
        if kernel not in ("count", "conditional"):
            raise ConfigError(f"model.kernel: {kernel!r} is not count|conditional")
        if not 0 < eps < 1:
            raise ConfigError(f"model.eps: {eps!r} must be in (0, 1)")
        if not 0 <= pop_weight < 1:
            raise ConfigError(f"model.pop_weight: {pop_weight!r} must be in [0, 1)")
        self.kernel, self.eps, self.pop_weight = kernel, float(eps), float(pop_weight)

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        self.item_counts = jnp.asarray(np.diff(split.train.tocsc().indptr).astype(np.float32))
        self.restored(split, {})
        return {"kernel_nnz": float(self.matrix.nnz), "users_with_o2": float((np.diff(self.rows.indptr) > 0).sum())}

    def restored(self, split: SplitData, saved: dict) -> None:
        """The kernel is a function of the training split: rebuilt, not saved."""
        self.rows, self.matrix = neighbour_inputs(split, self.kernel)
        counts = np.asarray(self.item_counts)
        self.prior = jnp.asarray(self.pop_weight * np.log1p(counts) / max(np.log1p(counts.max(initial=0.0)), 1e-9))

    def _scores(self, rows: sp.csr_matrix) -> jax.Array:
        return jnp.asarray(log_normalised(rows @ self.matrix, self.eps)) + self.prior[None, :]

    def score(self, users: jax.Array) -> jax.Array:
        return self._scores(self.rows[np.asarray(users)])

    def score_new(self, hist) -> tuple[jax.Array, np.ndarray]:
        """New users from their DL-side rows (:class:`jmf.recommend.History`); those without DL-side history get the
        popularity order (``usable`` false)."""
        rows = binary_rows(hist.dl, per_user=True)
        return self._scores(rows), np.diff(rows.indptr) > 0

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise ConfigError("model=cooc ranks items; it has no rating scale (its tables report no RMSE)")
