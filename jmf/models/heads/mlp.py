"""MLP mapping ``P̂_u = MLP(h_u)`` (EMCDR's non-linear mapping)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx


class MLPHead(nnx.Module):
    """Hidden layers with GELU, then a linear output.  ``d_in``/``d_out`` are supplied at run time."""

    def __init__(self, d_in: int, d_out: int, hidden: Sequence[int] = (256,), dropout: float = 0.0,
                 *, rngs: nnx.Rngs):
        sizes = [d_in, *hidden]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], d_out, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        for layer in self.layers:
            h = self.dropout(nnx.gelu(layer(h)))
        return self.out(h)
