"""Shared pieces of the sequence encoders: the item + category embedding and masked pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jmf.errors import ConfigError


class BehaviorEmbedding(nnx.Module):
    """``e = E_item[i] + E_cat[c] (+ r̃ · w_r)``, pads (index 0) -> 0.

    ``r̃`` is the behaviour's centred value (its rating minus the DL-side mean; 0 on implicit
    data) and ``w_r`` a learned direction, so an encoder can read how a user rates, not only what
    they touched: on rating data a user's DL-side leniency is the strongest cue for their CF-side bias.

    Args:
      n_items, n_categories: DL-side sizes without the pad (ids are 1-based, 0 = pad).
      dim: embedding size.
      ratings: add the value term (``w_r`` starts at 0, so the embedding starts item + category;
        it draws no random numbers, so other parameters' initial values do not change with it).
    """

    def __init__(self, n_items: int, n_categories: int, dim: int, ratings: bool = False, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.05)
        self.items = nnx.Embed(n_items + 1, dim, embedding_init=init, rngs=rngs)
        self.categories = nnx.Embed(n_categories + 1, dim, embedding_init=init, rngs=rngs)
        self.rating = nnx.Param(jnp.zeros((dim,))) if ratings else None
        self.dim = dim

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array,
                 values: jax.Array | None = None) -> jax.Array:
        """``[B, L]`` ids, mask (and centred values) -> ``[B, L, dim]``."""
        e = self.items(items) + self.categories(categories)
        if self.rating is not None:
            if values is None:
                raise ConfigError("model.encoder.ratings=true: the encoder needs the sequence values ('values')")
            e = e + values[..., None] * self.rating[...]
        return e * mask[..., None]


def value_keys(ratings: bool) -> tuple[str, ...]:
    """The ``input_keys`` of a sequence encoder: its centred values when it reads ratings."""
    return ("values",) if ratings else ()


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, L, d]``, ``[B, L]`` -> ``[B, d]``; an empty row gives 0.  A float ``mask`` weighs the positions (the
    weighted mean; ``model.source_weights``)."""
    m = mask[..., None].astype(x.dtype)
    return (x * m).sum(1) / jnp.maximum(m.sum(1), 1e-6)


def masked_max(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, L, d]``, ``[B, L]`` -> ``[B, d]``; an empty row gives 0."""
    out = jnp.where(mask[..., None], x, -jnp.inf).max(1)
    return jnp.where(mask.any(1, keepdims=True), out, 0.0)
