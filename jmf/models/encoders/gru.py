"""GRU encoder (the recurrent option): embeddings -> GRU over the masked sequence -> last valid state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jmf.models.encoders.base import BehaviorEmbedding, value_keys


class GRUEncoder(nnx.Module):
    """``h_u = W · GRU(x_u)[last valid step]``; the state advances only on valid (unmasked) steps.

    Args:
      n_items, n_categories, max_len: supplied at run time.
      embed_dim: embedding size; hidden: GRU state size; out_dim: size of ``h_u``;
      ratings: read each behaviour's centred value (see ``BehaviorEmbedding``).
    """

    def __init__(self, n_items: int, n_categories: int, max_len: int, embed_dim: int = 64, hidden: int = 64,
                 out_dim: int = 64, ratings: bool = True, *, rngs: nnx.Rngs):
        self.embed = BehaviorEmbedding(n_items, n_categories, embed_dim, ratings, rngs=rngs)
        self.input_keys = value_keys(ratings)
        self.cell = nnx.GRUCell(embed_dim, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, out_dim, rngs=rngs)
        self.hidden, self.out_dim = hidden, out_dim

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array,
                 values: jax.Array | None = None) -> jax.Array:
        x = self.embed(items, categories, mask, values)                       # [B, L, e]

        def body(carry, inputs):
            x_t, m_t = inputs                                         # [B, e], [B]
            new, _ = self.cell(carry, x_t)
            return jnp.where(m_t[:, None], new, carry), None

        # a plain lax.scan over time: the cell is only read inside, never mutated
        init = jnp.zeros((x.shape[0], self.hidden), x.dtype)
        last, _ = jax.lax.scan(body, init, (jnp.swapaxes(x, 0, 1), jnp.swapaxes(mask, 0, 1)))
        return self.out(last)                                         # [B, out_dim]; empty history -> W·0 + b
