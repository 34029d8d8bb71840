"""Popularity: rank items by training interactions; predict ratings by damped item means."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jmf.data.split import SplitData
from jmf.models.base import ClosedFormModel, RunContext


class Popularity(ClosedFormModel):
    """Non-personalised baseline: ``s_ui = #train interactions of i``.

    Ratings are predicted as the item mean shrunk towards the global mean by ``damping``
    pseudo-ratings, which is what a popularity baseline means for RMSE.
    """

    fitted = ("global_mean", "item_mean", "item_counts")

    def __init__(self, damping: float = 5.0):
        self.damping = damping

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        train = split.train
        counts = np.asarray((train != 0).sum(0)).ravel().astype(np.float32)
        sums = np.asarray(train.sum(0)).ravel()
        self.global_mean = float(train.data.mean()) if train.nnz else 0.0
        self.item_mean = (sums + self.damping * self.global_mean) / (counts + self.damping)
        self.item_counts = jnp.asarray(counts)
        return {"items_seen": float((counts > 0).sum())}

    def score(self, users: jax.Array) -> jax.Array:
        return jnp.broadcast_to(self.item_counts, (users.shape[0], self.item_counts.shape[0]))

    def score_new(self, hist) -> tuple[jax.Array, np.ndarray]:
        """New users get the same ranking (every one of them is scored)."""
        n = len(hist.users)
        return jnp.broadcast_to(self.item_counts, (n, self.item_counts.shape[0])), np.ones(n, bool)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.item_mean[items]
