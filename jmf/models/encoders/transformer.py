"""Transformer encoder: embeddings + positions -> pre-norm self-attention blocks -> pooled."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jmf.models.encoders.base import BehaviorEmbedding, value_keys, masked_mean


class Block(nnx.Module):
    """Pre-norm block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``, with the padding mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, dropout_rate=dropout, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, dim * mlp_ratio, rngs=rngs)
        self.fc2 = nnx.Linear(dim * mlp_ratio, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        attn_mask = nnx.make_attention_mask(mask, mask)                     # [B, 1, L, L]
        # a query row with no valid key would be all -inf; let pads attend to themselves
        attn_mask = (attn_mask > 0) | jnp.eye(mask.shape[1], dtype=bool)[None, None]
        x = x + self.dropout(self.attn(self.norm1(x), mask=attn_mask))
        return x + self.dropout(self.fc2(nnx.gelu(self.fc1(self.norm2(x)))))


class TransformerEncoder(nnx.Module):
    """Self-attention over the last L behaviours with learned positions and a padding mask.

    Args:
      n_items, n_categories, max_len: supplied at run time.
      embed_dim: model width; layers; heads; mlp_ratio; out_dim: size of ``h_u``;
      ratings: read each behaviour's centred value (see ``BehaviorEmbedding``).
    """

    def __init__(self, n_items: int, n_categories: int, max_len: int, embed_dim: int = 64, layers: int = 2,
                 heads: int = 2, mlp_ratio: int = 2, out_dim: int = 64, dropout: float = 0.0,
                 ratings: bool = True, *, rngs: nnx.Rngs):
        self.embed = BehaviorEmbedding(n_items, n_categories, embed_dim, ratings, rngs=rngs)
        self.input_keys = value_keys(ratings)
        self.positions = nnx.Embed(max_len, embed_dim, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.blocks = nnx.List([Block(embed_dim, heads, mlp_ratio, dropout, rngs=rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(embed_dim, rngs=rngs)
        self.out = nnx.Linear(embed_dim, out_dim, rngs=rngs)
        self.out_dim = out_dim

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array,
                 values: jax.Array | None = None) -> jax.Array:
        L = items.shape[1]
        x = self.embed(items, categories, mask, values) + self.positions(jnp.arange(L))[None]   # [B, L, e]
        for block in self.blocks:
            x = block(x, mask)
        return self.out(masked_mean(self.norm(x), mask))                                # [B, out_dim]
