"""Linear mapping ``P̂_u = W2 h_u + b2``."""

from __future__ import annotations

import jax
from flax import nnx


class LinearHead(nnx.Module):
    """``P̂_u = W2 h_u + b2`` (design.md#the-mapping-head).  ``d_in``/``d_out`` are supplied at run time."""

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(d_in, d_out, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.linear(h)  # [B, d_in] -> [B, d_out]
