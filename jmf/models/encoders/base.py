"""Shared pieces of the sequence encoders: the item + category embedding and masked pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class BehaviorEmbedding(nnx.Module):
    """``e = E_item[i] + E_cat[c]`` (+ a learned rating embedding), pads (index 0) -> 0.

    Args:
      n_items, n_categories: DL-side sizes without the pad (ids are 1-based, 0 = pad).
      dim: embedding size.
    """

    def __init__(self, n_items: int, n_categories: int, dim: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.05)
        self.items = nnx.Embed(n_items + 1, dim, embedding_init=init, rngs=rngs)
        self.categories = nnx.Embed(n_categories + 1, dim, embedding_init=init, rngs=rngs)
        self.dim = dim

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array) -> jax.Array:
        """``[B, L]`` ids and mask -> ``[B, L, dim]``."""
        return (self.items(items) + self.categories(categories)) * mask[..., None]


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, L, d]``, ``[B, L]`` -> ``[B, d]``; an empty row gives 0."""
    m = mask[..., None].astype(x.dtype)
    return (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def masked_max(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, L, d]``, ``[B, L]`` -> ``[B, d]``; an empty row gives 0."""
    out = jnp.where(mask[..., None], x, -jnp.inf).max(1)
    return jnp.where(mask.any(1, keepdims=True), out, 0.0)
