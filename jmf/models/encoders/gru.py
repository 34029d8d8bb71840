"""GRU encoder (the recurrent option): embeddings -> GRU over the masked sequence -> last valid state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jmf.models.encoders.base import BehaviorEmbedding


class GRUEncoder(nnx.Module):
    """``h_u = W · GRU(x_u)[last valid step]`` (sequences are left-aligned, oldest first).

    Args:
      n_items, n_categories, max_len: supplied at run time.
      embed_dim: embedding size; hidden: GRU state size; out_dim: size of ``h_u``.
    """

    def __init__(self, n_items: int, n_categories: int, max_len: int, embed_dim: int = 64, hidden: int = 64,
                 out_dim: int = 64, *, rngs: nnx.Rngs):
        self.embed = BehaviorEmbedding(n_items, n_categories, embed_dim, rngs=rngs)
        self.rnn = nnx.RNN(nnx.GRUCell(embed_dim, hidden, rngs=rngs))
        self.out = nnx.Linear(hidden, out_dim, rngs=rngs)
        self.out_dim = out_dim

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array) -> jax.Array:
        x = self.embed(items, categories, mask)                        # [B, L, e]
        lengths = mask.sum(1).astype(jnp.int32)
        states = self.rnn(x, seq_lengths=jnp.maximum(lengths, 1))      # [B, L, hidden]
        last = jnp.take_along_axis(states, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
        return self.out(jnp.where((lengths > 0)[:, None], last, 0.0))  # [B, out_dim]
