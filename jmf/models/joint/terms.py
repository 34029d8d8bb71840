"""Score terms: what the joint model adds to its ranking after the fit, one small class each.

A term is prepared from the training split and adds a ``[B, I_CF]`` contribution to ``score``
(never to ``predict``)::

    class ScoreTerm(Protocol):
        weight: float                       # the weight in use (0: off)
        weights: list[float]                # the choices; more than one -> chosen on validation
        def prepare(self, split) -> None    # from the training split only
        def __call__(self, users, user) -> jax.Array   # [B] users, their UserVectors -> [B, I_CF]

The same term scores users the model was trained on and new users folded in from their history
(``jmf.load(...).recommend_new``): what it reads of a user is in :class:`UserVectors`, never a row of
a training table.

``score = base + Σ_t w_t · t(users, user)``.  Terms are chosen in config as a list
(``model/terms=[interest,neighbour]``, one YAML each in ``conf/model/terms/``, keyed by name) and
their weights set there (``model.terms.neighbour.weight=[0,0.5,1,2,4,8]``).  A list of weights is a
choice made on validation after the fit (:meth:`jmf.models.joint.JMF.choose_term_weight`).

Built in: :class:`ItemNeighbourhood` (cross-category item co-occurrence, the neighbourhood half of
"factorisation meets the neighbourhood", Koren 2008) and :class:`InterestReweighting` (the interest
vector as ``p(c|u)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jmf.data.batches import cf_category_distribution, cf_item_categories
from jmf.data.split import SplitData
from jmf.errors import ConfigError


class UserVectors(NamedTuple):
    """What the fitted model gives a term about each user."""

    vec: jax.Array        # [B, d] P̂_u (blended with P_u for warm users)
    bias: jax.Array       # [B]    user bias
    interest: jax.Array   # [B, K] interest logits I_u
    o2: sp.csr_matrix | None = None   # [B, I_DL] the users' binary DL-side rows, each scaled by 1/|O2(u)|
    items: jax.Array | None = None    # [B, L] DL-side sequence (item ids + 1), for model/item_transfer
    mask: jax.Array | None = None     # [B, L]


@runtime_checkable
class ScoreTerm(Protocol):
    """See the module docstring."""

    weight: float
    weights: list[float]

    def prepare(self, split: SplitData) -> None: ...

    def __call__(self, users: np.ndarray, user: UserVectors) -> jax.Array: ...


class WeightedTerm:
    """Shared by the built-in terms: ``weight`` is a number or a list of numbers (chosen on validation)."""

    name = "term"

    def __init__(self, weight: float | Sequence[float] = 1.0):
        many = isinstance(weight, Sequence) and not isinstance(weight, str)
        try:
            self.weights = [float(w) for w in (weight if many else [weight])]
        except (TypeError, ValueError):
            raise ConfigError(f"model.terms.{self.name}.weight: {weight!r} is not a number or a list of numbers") \
                from None
        if not self.weights or any(not np.isfinite(w) or w < 0 for w in self.weights):
            raise ConfigError(f"model.terms.{self.name}.weight: {weight!r} needs finite weights >= 0")
        self.weight = self.weights[0]


class ItemNeighbourhood(WeightedTerm):
    """``log(ε + n_ui / max_k n_uk)``: the cross-category item neighbourhood of the user's DL-side history.

    ``n_ui = Σ_{j ∈ O2(u)} K_ji / |O2(u)|`` with ``K`` the DL -> CF item kernel of the warm users'
    *training* rows (:func:`neighbour_inputs`), ``ε = 1e-3``.  It carries item-level co-occurrence that
    a ``dim``-rank map smooths away.

    With ``train_weight`` > 0 the term is also inside the fit: the ranking losses (``L_CF``, ``L_transfer``) score
    ``s_ui + train_weight · t_ui``, so the learned scores fit what the term gets wrong instead of what it already
    gets right (a residual over co-occurrence).  A training pair must not count itself: there ``n_ui`` is taken
    without the user's own co-occurrence (``n_ui − y_ui``, ``y`` the user's binary CF-side training row; for the
    ``count`` kernel that is exactly the user's share of ``K``), under the same per-user ``max_k n_uk`` the ranking
    divides by, so a validation or test item (never in ``y``) gets the value the ranking gives it.

    Args:
      weight: ``λ_nb`` (a list: chosen on validation).
      kernel: ``count`` (``K_ji`` = warm users holding DL-side item ``j`` and CF-side item ``i``) or
        ``conditional`` (that count over the warm holders of ``j``: ``p(i|j)``).
      train_weight: the term's weight inside the ranking losses (0: ranking only).  ``count`` kernel only.
    """

    name = "neighbour"

    def __init__(self, weight: float | Sequence[float] = 1.0, kernel: str = "count", train_weight: float = 0.0):
        super().__init__(weight)
        if kernel not in ("count", "conditional"):
            raise ConfigError(f"model.terms.neighbour.kernel: {kernel!r} is not count|conditional")
        if not (np.isfinite(train_weight) and train_weight >= 0):
            raise ConfigError(f"model.terms.neighbour.train_weight: {train_weight!r} must be a finite number >= 0")
        if train_weight and kernel != "count":
            raise ConfigError("model.terms.neighbour.train_weight needs kernel=count (a training pair's own share of "
                              f"the kernel is known exactly only for counts), not {kernel!r}")
        self.kernel, self.train_weight = kernel, float(train_weight)
        self.matrix = None

    def prepare(self, split: SplitData) -> None:
        if any(self.weights) or self.train_weight:
            rows, self.matrix = neighbour_inputs(split, self.kernel)
        if self.train_weight:
            self.rows, self.columns = rows, self.matrix.tocsc()
            self.own = (split.train > 0).astype(np.float32).tocsr()
            self.row_max = row_max(rows, self.matrix)

    def fit_scores(self, users: np.ndarray, items: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``train_weight ·`` the term of a batch's pairs without their own co-occurrence: ``users [B]``, their items
        ``[B, m]`` and the ``[N]`` negatives the batch shares -> ``([B, m], [B, N])`` float32."""
        B, m = items.shape
        cols, where = np.unique(np.concatenate([items.ravel(), negatives]), return_inverse=True)
        n = (self.rows[users] @ self.columns[:, cols]).toarray() - self.own[users][:, cols].toarray()
        t = self.train_weight * log_normalised(np.maximum(n, 0.0), divisor=self.row_max[users])
        return (t[np.arange(B)[:, None], where[:B * m].reshape(B, m)].astype(np.float32),
                t[:, where[B * m:]].astype(np.float32))

    def __call__(self, users: np.ndarray, user: UserVectors) -> jax.Array:
        return jnp.asarray(log_normalised(user.o2 @ self.matrix))


class InterestReweighting(WeightedTerm):
    """``log softmax(I_u)[c_i] − log p̄(c_i)``: the interest vector as ``p(c|u)``, so that
    ``p(i|u) ∝ p(i|u)·p(c_i|u)/p(c_i)``, ``c_i`` the item's CF-side category and ``p̄`` the warm users'
    mean training category mix (a constant when the CF side has one category)."""

    name = "interest"

    def prepare(self, split: SplitData) -> None:
        self.item_category, self.category_log_prior = category_prior(split, cf_category_distribution(split))

    def __call__(self, users: np.ndarray, user: UserVectors) -> jax.Array:
        log_mix = jax.nn.log_softmax(user.interest, axis=-1) - self.category_log_prior[None, :]   # [B, K]
        return log_mix[:, self.item_category]


def category_prior(split: SplitData, interest: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """``([I_CF] int32 CF-side category index of each item, [K] log mean training mix of the warm users)``."""
    item_category = cf_item_categories(split)
    warm = interest.sum(1) > 0
    mix = interest[warm].mean(0) if warm.any() else np.full(interest.shape[1], 1.0 / max(interest.shape[1], 1))
    return jnp.asarray(item_category), jnp.asarray(np.log(np.maximum(mix, 1e-6)), jnp.float32)


def o2_rows(split: SplitData, per_user: bool = False) -> sp.csr_matrix:
    """``[U, I_DL]`` float32 binary DL-side rows; ``per_user``: each scaled by ``1/|O2(u)|``."""
    return binary_rows(split.dl, per_user)


def binary_rows(values: sp.spmatrix, per_user: bool = False) -> sp.csr_matrix:
    """``[B, I]`` float32 rows of ``values`` with 1 where a value is positive; ``per_user``: each row scaled
    by one over its count (an empty row stays empty).  The training split's DL-side rows and new users' alike."""
    X = (values > 0).astype(np.float32).tocsr()
    if per_user:
        X = (sp.diags(1.0 / np.maximum(np.asarray(X.sum(1)).ravel(), 1.0)).astype(np.float32) @ X).tocsr()
    return X


def cross_cooccurrence(split: SplitData, per_user: bool = False) -> sp.csr_matrix:
    """``[I_DL, I_CF]`` float32 DL -> CF item co-occurrence ``C = XᵀY`` of the users' DL-side rows ``X``
    (:func:`o2_rows`) and binary CF-side *training* rows ``Y`` (cold users' CF-side rows are held out, so they
    add nothing).  ``per_user``: each user's DL-side row is scaled by ``1/|O2(u)|``."""
    Y = (split.train > 0).astype(np.float32).tocsr()
    return (o2_rows(split, per_user).T @ Y).tocsr().astype(np.float32)


def neighbour_inputs(split: SplitData, kernel: str = "count") -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """:class:`ItemNeighbourhood`'s inputs: ``([U, I_DL]`` users' DL-side rows scaled by ``1/|O2(u)|``,
    ``[I_DL, I_CF]`` kernel ``K``).  ``count``: ``K = XᵀY`` (:func:`cross_cooccurrence`); ``conditional``:
    each row ``j`` of it divided by the number of warm users (CF-side training history) holding ``j``."""
    rows = o2_rows(split, per_user=True)
    K = cross_cooccurrence(split)
    if kernel == "conditional":
        X = o2_rows(split)
        warm = np.diff(split.train.tocsr().indptr) > 0
        holders = np.asarray(X[warm].sum(0)).ravel()
        K = (sp.diags(1.0 / np.maximum(holders, 1.0)).astype(np.float32) @ K).tocsr()
    elif kernel != "count":
        raise ConfigError(f"model.terms.neighbour.kernel: {kernel!r} is not count|conditional")
    return rows, K


def neighbour_term(rows: sp.csr_matrix, kernel: sp.csr_matrix, users: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """``[B, I_CF]`` float32 ``log(ε + n_u / max_i n_ui)``, ``n_u = rows[u] @ kernel`` (a user without
    DL-side history, or whose DL-side items no warm user holds, gets the constant ``log ε``)."""
    return log_normalised(rows[users] @ kernel, eps)


def row_max(rows: sp.csr_matrix, kernel: sp.csr_matrix, block: int = 1024) -> np.ndarray:
    """``[U]`` float32 ``max_i (rows @ kernel)_ui``, the per-user divisor of :func:`log_normalised`, ``block`` users
    at a time."""
    return np.concatenate([np.asarray((rows[lo:lo + block] @ kernel).max(1).todense()).ravel()
                           for lo in range(0, rows.shape[0], block)] or [np.zeros(0)]).astype(np.float32)


def log_normalised(n, eps: float = 1e-3, divisor: np.ndarray | None = None) -> np.ndarray:
    """``log(ε + n_u / max_i n_ui)`` per row of the ``[B, I_CF]`` neighbourhood scores ``n`` (sparse or dense);
    ``divisor [B]``: each row's ``max_i n_ui`` when ``n`` holds only some of the row's columns."""
    n = np.asarray(n.todense() if sp.issparse(n) else n, np.float32)
    top = n.max(1, keepdims=True) if divisor is None else np.asarray(divisor, np.float32)[:, None]
    return np.log(eps + n / (top + 1e-9)).astype(np.float32)


def fit_terms(terms: dict, kind: str) -> list:
    """The score terms inside the fit (``train_weight`` > 0), prepared; only ranking losses take them."""
    inside = [t for t in terms.values() if getattr(t, "train_weight", 0.0)]
    if inside and kind == "mse":
        raise ConfigError("model.terms.<term>.train_weight adds a ranking term to the ranking losses; model.loss "
                          "is mse (ratings), where it would shift the predicted ratings: set model.loss=softmax|bpr "
                          "or train_weight=0")
    return inside


def named_terms(terms: dict | list | None) -> dict:
    """``model.terms`` (Hydra: a dict keyed by the term's YAML; Python: a dict or a list) -> name -> term."""
    if not terms:
        return {}
    items = terms.items() if isinstance(terms, dict) else ((getattr(t, "name", type(t).__name__), t) for t in terms)
    out = {}
    for name, term in items:
        if not (callable(term) and hasattr(term, "prepare") and hasattr(term, "weights")):
            raise ConfigError(f"model.terms.{name}: {term!r} is not a score term (prepare, weights, __call__; "
                             "see jmf.models.joint.terms)")
        out[str(name)] = term
    return out
