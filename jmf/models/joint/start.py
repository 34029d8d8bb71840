"""Where the joint model starts: the CF factors, the item biases, and ``b̂_u``'s DL-side rating offset.

Start-up variants are small classes chosen in config, like heads and encoders:

* factors ``P, Q`` (``model/init``): :class:`SVDFactors` (``P = U_d Σ^½``, ``Q = V_d Σ^½``, design.md#the-cf-side)
  or :class:`NormalFactors`;
* item biases (``model/bias_init``): :class:`PriorBias` (the popularity baseline), :class:`ZeroBias`,
  or :class:`AutoBias` (the prior on ratings, zero on implicit data);
* the user offset ``o_u`` (``model.user_offset``, ratings): each user's damped mean DL-side residual,
  which ``b̂_u`` adds with a learned scale ``a`` started at its least-squares fit
  (:func:`o2_user_offsets`, :func:`fit_offset_scale`).  It is an input of the rating model that
  training adjusts (``a``), so it lives here, not among the post-fit score terms.
"""

from __future__ import annotations

import jax
import numpy as np

from jmf.data.split import SplitData
from jmf.errors import ConfigError


class SVDFactors:
    """``P = U_d Σ^½``, ``Q = V_d Σ^½`` of the (centred, on ratings) CF-side training matrix."""

    def __call__(self, split: SplitData, dim: int, center: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from jmf.models.cf.svd import TruncatedSVD

        svd = TruncatedSVD(dim, center=center)
        svd.decompose(split, seed)
        return svd.user_factors, svd.item_factors


class NormalFactors:
    """``P, Q ~ N(0, scale²)``."""

    def __init__(self, scale: float = 0.1):
        self.scale = scale

    def __call__(self, split: SplitData, dim: int, center: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
        n_users, n_items = split.train.shape
        key_u, key_i = jax.random.split(jax.random.key(seed))
        return (self.scale * np.asarray(jax.random.normal(key_u, (n_users, dim))),
                self.scale * np.asarray(jax.random.normal(key_i, (n_items, dim))))


class PriorBias:
    """The popularity baseline: on ratings each item's mean deviation shrunk by ``damping`` pseudo-ratings
    (``μ + b_i`` is ``model=pop``'s predictor), on implicit data the centred ``log(1 + count)``."""

    def __call__(self, split: SplitData, rating: bool, damping: float) -> np.ndarray:
        if split.train.nnz == 0:
            return np.zeros(split.train.shape[1], np.float32)
        if rating:
            from jmf.models.cf.popularity import Popularity

            pop = Popularity(damping=damping)
            pop.fit(split)
            return (pop.item_mean - pop.global_mean).astype(np.float32)
        return log_popularity(split.train)


class ZeroBias:
    """Item biases start at 0."""

    def __call__(self, split: SplitData, rating: bool, damping: float) -> np.ndarray:
        return np.zeros(split.train.shape[1], np.float32)


class AutoBias:
    """:class:`PriorBias` on ratings, :class:`ZeroBias` on implicit data."""

    def __call__(self, split: SplitData, rating: bool, damping: float) -> np.ndarray:
        return (PriorBias() if rating else ZeroBias())(split, rating, damping)


def check_start(value, key: str, default):
    """A start-up variant from config (a Hydra ``_target_`` instance), ``default`` when ``None``."""
    if value is None:
        return default
    if not callable(value):
        raise ConfigError(f"model.{key}: {value!r} is not a start-up variant (choose one with model/{key}=..., "
                         f"e.g. conf/model/{key}/*.yaml)")
    return value


def log_popularity(train) -> np.ndarray:
    """``[I]`` float32 centred ``log(1 + #training interactions)`` of each item."""
    log_pop = np.log1p(np.diff(train.tocsc().indptr).astype(np.float64))
    return (log_pop - log_pop.mean()).astype(np.float32) if len(log_pop) else log_pop.astype(np.float32)


def o2_user_offsets(split: SplitData, damping: float) -> np.ndarray:
    """``[U]`` float32: each user's DL-side rating offset ``o_u = Σ_j (r_uj - m_j) / (n_u + damping)`` over
    the user's DL-side ratings, ``m_j`` the DL-side item mean shrunk towards the DL-side mean by ``damping``
    pseudo-ratings (``model=pop``'s predictor on the DL side); 0 for users without DL-side ratings and on
    implicit data."""
    dl = split.dl.tocoo()
    if split.implicit or dl.nnz == 0:
        return np.zeros(split.n_users, np.float32)
    item_mean = o2_item_means(split, damping)
    residual = np.bincount(dl.row, dl.data - item_mean[dl.col], minlength=split.n_users)
    return (residual / (np.bincount(dl.row, minlength=split.n_users) + damping)).astype(np.float32)


def o2_item_means(split: SplitData, damping: float) -> np.ndarray:
    """``[I_DL]`` float64: each DL-side item's mean rating shrunk towards the DL-side mean by ``damping``
    pseudo-ratings."""
    dl = split.dl.tocoo()
    if dl.nnz == 0:
        return np.zeros(split.dl.shape[1])
    n_items = split.dl.shape[1]
    counts = np.bincount(dl.col, minlength=n_items)
    return (np.bincount(dl.col, dl.data, minlength=n_items) + damping * dl.data.mean()) / (counts + damping)


def fit_offset_scale(train, offsets: np.ndarray, prior: np.ndarray) -> float:
    """The least-squares ``a`` in ``r_ui - prior_i ≈ a·o_u`` over the CF-side training ratings ``train``
    (``prior [I_CF]``: the rating each item starts at; ``offsets [U]``); 0 without signal."""
    coo = train.tocoo()
    x = offsets[coo.row].astype(np.float64)
    xx = float((x * x).sum())
    return float((x * (coo.data - prior[coo.col])).sum() / xx) if xx > 0 else 0.0


def pad_rows(table: np.ndarray, n_rows: int) -> np.ndarray:
    """``table`` with zero rows appended up to ``n_rows`` (row-sharded tables divide evenly)."""
    return np.pad(table, ((0, n_rows - len(table)), (0, 0))) if n_rows > len(table) else table
