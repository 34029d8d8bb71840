"""Pure loss functions of arrays (design.md#conventions): no model inside a loss, masks explicit.

Every loss takes per-example ``weight`` ``[B]`` (0 for padding) and returns the weighted
mean, so a padded last batch gives the same value as an unpadded one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    return (values * weight).sum() / jnp.maximum(weight.sum(), 1e-12)


def mse(pred: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """Weighted mean squared error; ``[B]`` each."""
    return weighted_mean((pred - target) ** 2, weight)


def bpr(pos_scores: jax.Array, neg_scores: jax.Array, weight: jax.Array) -> jax.Array:
    """Bayesian personalised ranking: ``-log σ(s_ui - s_uj)``; ``[B]`` each (or ``[B, N]`` negatives)."""
    if neg_scores.ndim == 2:
        diff = pos_scores[:, None] - neg_scores
        return weighted_mean(-jax.nn.log_sigmoid(diff).mean(1), weight)
    return weighted_mean(-jax.nn.log_sigmoid(pos_scores - neg_scores), weight)


def sampled_softmax(pos_scores: jax.Array, neg_scores: jax.Array, weight: jax.Array) -> jax.Array:
    """Cross-entropy of the positive against ``[B, N]`` uniformly sampled negatives."""
    logits = jnp.concatenate([pos_scores[:, None], neg_scores], axis=1)
    return weighted_mean(-jax.nn.log_softmax(logits, axis=1)[:, 0], weight)


def softmax_xent(logits: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
    """Cross-entropy of ``[B, V]`` logits against ``[B]`` int labels."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return weighted_mean(-jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0], weight)


def user_mean_weights(users: jax.Array, weight: jax.Array, user_counts: jax.Array) -> jax.Array:
    """Re-weight examples so the loss is averaged per user, then over users (design.md#the-cf-side).

    ``user_counts[u]`` is user u's number of training examples; the result, used as
    ``weight`` in a loss, gives every user the same total weight in expectation.
    """
    return weight / jnp.maximum(user_counts[users], 1.0)
