"""Bag/MLP encoder: masked mean of behaviour embeddings -> MLP."""

from __future__ import annotations

import jax
from flax import nnx

from jmf.models.encoders.base import BehaviorEmbedding, value_keys, masked_mean


class BagEncoder(nnx.Module):
    """``h_u = MLP(mean_{j ∈ x_u} (E_item[j] + E_cat[c(j)]))``.

    Args:
      n_items, n_categories: DL-side sizes (supplied at run time).
      max_len: sequence length (unused; accepted for a uniform interface).
      embed_dim: embedding size; hidden: MLP width; out_dim: size of ``h_u``;
      ratings: read each behaviour's centred value (see ``BehaviorEmbedding``).

    ``mask`` may be float weights: the pooling is then their weighted mean (``model.source_weights``).
    """

    weighted_mask = True

    def __init__(self, n_items: int, n_categories: int, max_len: int, embed_dim: int = 64, hidden: int = 128,
                 out_dim: int = 64, dropout: float = 0.0,
                 ratings: bool = True, *, rngs: nnx.Rngs):
        self.embed = BehaviorEmbedding(n_items, n_categories, embed_dim, ratings, rngs=rngs)
        self.input_keys = value_keys(ratings)
        self.hidden = nnx.Linear(embed_dim, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, out_dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out_dim = out_dim

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array,
                 values: jax.Array | None = None) -> jax.Array:
        pooled = masked_mean(self.embed(items, categories, mask, values), mask)   # [B, e]
        return self.out(self.dropout(nnx.gelu(self.hidden(pooled))))       # [B, out_dim]
