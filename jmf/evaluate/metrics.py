"""Pure ranking and rating metrics, per user, on the device, and the evaluators' sums over the registry.

Each built-in metric is one function below plus one entry at the end of this module
(:mod:`jmf.evaluate.registry`); :func:`ranking_from_hits`, :func:`sampled_ranking_metrics` and
:func:`rating_errors` compute every registered metric.  Conventions (tested against hand-computed values):

* ``recall@K``   = hits in the top K / number of relevant items.
* ``precision@K``= hits in the top K / K.
* ``ndcg@K``     = DCG@K / IDCG@K with binary gains, ``1/log2(rank+1)``; IDCG over min(|rel|, K).
* ``hr@K``       = 1 if any relevant item is in the top K.
* ``mrr@K``      = 1 / rank of the first relevant item in the top K, 0 if none.

Users without relevant items are excluded by the caller (``valid`` mask); ties in scores are
broken by ``jax.lax.top_k`` (lower index first).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jmf.errors import ConfigError
from jmf.evaluate import registry
from jmf.evaluate.registry import TopK


def top_k_indices(scores: jax.Array, k: int, group: int | None = None) -> jax.Array:
    """``[B, n]`` -> ``[B, k]`` indices of the ``k`` largest scores per row, exactly as ``jax.lax.top_k``.

    Two stages, so that the full row only goes through cheap, multi-threaded max-reductions:
    the row is cut into groups of ``group`` items; the top ``k`` of the row lie in the ``k``
    groups with the largest maxima (each group with a larger maximum holds a distinct larger
    element, and there are fewer than ``k`` of those), so ``top_k`` runs over the ``n/group``
    maxima and then over the ``k·group`` candidates.  The selected groups are sorted by
    index, so candidates stay in item order and ties go to the lower index, as in
    ``lax.top_k`` (tests compare the two on tied and ``-inf`` scores).  XLA's CPU ``top_k``
    is one thread per call (the full-ranking speed-up of `benchmarks/speed_cf.py` rose from 2.6-3.2x
    to 5.1x on its synthetic matrix with this).

    Args:
      scores: ``[B, n]``; k: how many; group: items per group (default ``≈ sqrt(n/k)``, a power of 2).
    """
    B, n = scores.shape
    if group is None:
        group = max(8, 1 << int(round(np.log2(max(np.sqrt(n / k), 1.0)))))
    n_groups = -(-n // group)
    if n_groups <= 2 * k:
        return jax.lax.top_k(scores, k)[1]
    group_max = jax.lax.reduce_window(scores, -jnp.inf, jax.lax.max, (1, group), (1, group),
                                      ((0, 0), (0, n_groups * group - n)))          # [B, G]
    _, groups = jax.lax.top_k(group_max, k)
    groups = jnp.sort(groups, axis=1)                                               # item order
    ids = (groups[:, :, None] * group + jnp.arange(group)).reshape(B, k * group)    # [B, k·group]
    candidates = jnp.where(ids < n, jnp.take_along_axis(scores, jnp.minimum(ids, n - 1), 1), -jnp.inf)
    _, pos = jax.lax.top_k(candidates, k)
    return jnp.take_along_axis(ids, pos, 1)


def topk_hits(scores: jax.Array, relevant: jax.Array, k: int) -> jax.Array:
    """``[B, I]`` scores and bool relevance -> ``[B, k]`` bool hit at each rank."""
    idx = top_k_indices(scores, k)
    return jnp.take_along_axis(relevant, idx, axis=1)


def ranking_from_hits(hits: jax.Array, n_relevant: jax.Array, ks: tuple[int, ...]) -> dict[str, jax.Array]:
    """Per-user values ``[B]`` of every registered ranking metric at each ``k`` in ``ks``, from ``[B, max(ks)]`` hits."""
    hits = hits.astype(jnp.float32)
    n_rel = n_relevant.astype(jnp.float32)
    ranks = jnp.arange(1, hits.shape[1] + 1, dtype=jnp.float32)
    discounts = 1.0 / jnp.log2(ranks + 1.0)
    out = {}
    for k in ks:
        top = TopK(hits[:, :k], n_rel, discounts[:k], k)
        for metric in registry.ranking():
            out[f"{metric.name}@{k}"] = metric.fn(top)
    return out


# ------------------------------------------------------------------ the built-in metrics, per user
def recall(top: TopK) -> jax.Array:
    """Hits in the top ``k`` / number of relevant items."""
    return top.hits.sum(1) / jnp.maximum(top.n_relevant, 1.0)


def precision(top: TopK) -> jax.Array:
    """Hits in the top ``k`` / ``k``."""
    return top.hits.sum(1) / top.k


def ndcg(top: TopK) -> jax.Array:
    """DCG / ideal DCG with binary gains; the ideal over ``min(#relevant, k)`` items."""
    dcg = (top.hits * top.discounts).sum(1)
    ideal_n = jnp.minimum(top.n_relevant, top.k)
    idcg = jnp.where(jnp.arange(top.k)[None, :] < ideal_n[:, None], top.discounts[None, :], 0.0).sum(1)
    return dcg / jnp.maximum(idcg, 1e-12)


def hr(top: TopK) -> jax.Array:
    """1 if any relevant item is in the top ``k``."""
    return (top.hits.sum(1) > 0).astype(jnp.float32)


def mrr(top: TopK) -> jax.Array:
    """1 / rank of the first relevant item in the top ``k``, 0 if none."""
    first = jnp.argmax(top.hits, axis=1)
    return jnp.where(top.hits.sum(1) > 0, 1.0 / (first + 1.0), 0.0)


def _hit(rank: jax.Array, k: int) -> jax.Array:
    return (rank <= k).astype(jnp.float32)


def _ndcg_of_rank(rank: jax.Array, k: int) -> jax.Array:
    return jnp.where(rank <= k, 1.0 / jnp.log2(rank + 1.0), 0.0)


def _mrr_of_rank(rank: jax.Array, k: int | None) -> jax.Array:
    return 1.0 / rank if k is None else jnp.where(rank <= k, 1.0 / rank, 0.0)


def rmse(err: np.ndarray) -> float:
    """Root mean squared error of the ratings."""
    return float(np.sqrt(np.mean(err ** 2)))


def mae(err: np.ndarray) -> float:
    """Mean absolute error of the ratings."""
    return float(np.mean(np.abs(err)))


def ranking_metrics(scores: jax.Array, relevant: jax.Array, ks: tuple[int, ...],
                    exclude: jax.Array | None = None) -> dict[str, jax.Array]:
    """Per-user ranking metrics over the full item set.

    Args:
      scores: ``[B, I]`` float scores.
      relevant: ``[B, I]`` bool held-out items.
      ks: cut-offs.
      exclude: ``[B, I]`` bool items never ranked (the user's training items).
    """
    if exclude is not None:
        scores = jnp.where(exclude, -jnp.inf, scores)
    hits = topk_hits(scores, relevant, max(ks))
    return ranking_from_hits(hits, relevant.sum(1), ks)


def ranking_metrics_indexed(scores: jax.Array, relevant_idx: jax.Array, ks: tuple[int, ...],
                            exclude_idx: jax.Array | None = None) -> dict[str, jax.Array]:
    """:func:`ranking_metrics` with relevant/excluded items as padded index lists (the evaluator's form).

    Same values as the mask form; it never builds ``[B, I]`` masks: excluded items are
    scattered to ``-inf`` in place and hits are found by comparing the top-``k`` indices with
    the ``L`` relevant ones (``[B, k, L]``), which halves the memory traffic per batch on a
    large catalogue.

    Args:
      scores: ``[B, I]``; relevant_idx: ``[B, L]`` int item ids, ``-1`` pads (ids unique per row);
      exclude_idx: ``[B, E]`` int item ids never ranked, ``-1`` pads.
    """
    return ranking_metrics_and_lists(scores, relevant_idx, ks, exclude_idx)[0]


def ranking_metrics_and_lists(scores: jax.Array, relevant_idx: jax.Array, ks: tuple[int, ...],
                              exclude_idx: jax.Array | None = None) -> tuple[dict[str, jax.Array], jax.Array]:
    """:func:`ranking_metrics_indexed` and the top-``max(ks)`` lists ``[B, max(ks)]`` it ranked (the beyond-accuracy
    metrics read them, :mod:`jmf.evaluate.beyond`)."""
    B, n_items = scores.shape
    if exclude_idx is not None:
        rows = jnp.broadcast_to(jnp.arange(B)[:, None], exclude_idx.shape)
        safe = jnp.where(exclude_idx < 0, n_items, exclude_idx)    # out of range -> dropped
        scores = scores.at[rows, safe].set(-jnp.inf, mode="drop")
    idx = top_k_indices(scores, max(ks))
    hits = ((idx[:, :, None] == relevant_idx[:, None, :]) & (relevant_idx[:, None, :] >= 0)).any(-1)
    return ranking_from_hits(hits, (relevant_idx >= 0).sum(1), ks), idx


def sampled_ranking_metrics(pos_scores: jax.Array, neg_scores: jax.Array, ks: tuple[int, ...],
                            neg_mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Metrics of one positive ranked among sampled negatives (DisenCDR protocol).

    The positive's rank is ``1 + #valid negatives scoring at least as high``: ties count
    against the positive (pessimistic), so a model with many tied scores (popularity's
    integer counts) is not flattered.  A "negative" that is the positive item itself (some
    fixed candidate files list it) is excluded through ``neg_mask``.

    Args:
      pos_scores: ``[B]``; neg_scores: ``[B, N]``; neg_mask: ``[B, N]`` bool valid negatives.
    """
    higher = neg_scores >= pos_scores[:, None]
    if neg_mask is not None:
        higher = higher & neg_mask
    rank = 1 + higher.sum(1)  # 1-based
    out = {}
    for k in ks:
        for metric in registry.ranking():
            out[f"{metric.name}@{k}"] = (metric.sampled or _from_one_hot(metric))(rank, k)
    for metric in registry.ranking():
        if metric.whole_list:
            out[metric.name] = (metric.sampled or _from_one_hot(metric))(rank, None)
    return out


def _from_one_hot(metric: registry.RankingMetric):
    """A ranking metric's value at the held-out item's ``rank``: its top-``k`` row is one-hot at ``rank``."""
    def of_rank(rank: jax.Array, k: int | None) -> jax.Array:
        if k is None:
            raise ConfigError(f"metric {metric.name!r}: whole_list needs a sampled form (rank -> value)")
        ranks = jnp.arange(1, k + 1, dtype=jnp.float32)
        hits = (ranks[None, :] == rank[:, None]).astype(jnp.float32)
        return metric.fn(TopK(hits, jnp.ones(rank.shape, jnp.float32), 1.0 / jnp.log2(ranks + 1.0), k))
    return of_rank


def rating_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """RMSE and MAE over paired predictions and ratings."""
    pred = np.asarray(pred, np.float64)
    truth = np.asarray(truth, np.float64)
    if pred.shape != truth.shape or pred.size == 0:
        raise ConfigError(f"rating_errors: shapes {pred.shape} vs {truth.shape}")
    err = pred - truth
    return {metric.name: metric.fn(err) for metric in registry.rating()}


# ------------------------------------------------------------------ the registry's built-in entries
registry.register(registry.RankingMetric("recall", recall, _hit, doc="hits in the top k / relevant items"))
registry.register(registry.RankingMetric("precision", precision, lambda rank, k: _hit(rank, k) / k,
                                         doc="hits in the top k / k"))
registry.register(registry.RankingMetric("ndcg", ndcg, _ndcg_of_rank,
                                         doc="DCG@k / ideal DCG@k, binary gains, 1/log2(rank+1)"))
registry.register(registry.RankingMetric("hr", hr, _hit, doc="1 if a relevant item is in the top k"))
registry.register(registry.RankingMetric("mrr", mrr, _mrr_of_rank, whole_list=True,
                                         doc="1 / rank of the first relevant item in the top k, 0 if none"))
registry.register(registry.RatingMetric("rmse", rmse, doc="root mean squared rating error"))
registry.register(registry.RatingMetric("mae", mae, doc="mean absolute rating error"))
