"""CNN encoder: item + category embeddings -> Conv1D -> masked max-pool -> dense (design.md#the-dl-side)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jmf.models.encoders.base import BehaviorEmbedding, value_keys, masked_max


class CNNEncoder(nnx.Module):
    """Convolutions of several widths over the time axis (Kim 2014 style), max-pooled.

    Args:
      n_items, n_categories, max_len: supplied at run time.
      embed_dim: embedding size; filters: channels per kernel width; kernel_sizes: widths;
      out_dim: size of ``h_u``;
      ratings: read each behaviour's centred value (see ``BehaviorEmbedding``).
    """

    def __init__(self, n_items: int, n_categories: int, max_len: int, embed_dim: int = 64, filters: int = 64,
                 kernel_sizes: tuple[int, ...] = (2, 3, 4), out_dim: int = 64, dropout: float = 0.0,
                 ratings: bool = True, *, rngs: nnx.Rngs):
        self.embed = BehaviorEmbedding(n_items, n_categories, embed_dim, ratings, rngs=rngs)
        self.input_keys = value_keys(ratings)
        self.convs = nnx.List([nnx.Conv(embed_dim, filters, (k,), padding="SAME", rngs=rngs) for k in kernel_sizes])
        self.out = nnx.Linear(filters * len(kernel_sizes), out_dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out_dim = out_dim

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array,
                 values: jax.Array | None = None) -> jax.Array:
        x = self.embed(items, categories, mask, values)                                  # [B, L, e]
        pooled = [masked_max(nnx.relu(conv(x)), mask) for conv in self.convs]    # each [B, f]
        return self.out(self.dropout(jnp.concatenate(pooled, axis=-1)))          # [B, out_dim]
