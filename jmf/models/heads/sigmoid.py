"""The literal head of design.md#the-mapping-head: ``C_u = σ(W4 I_u + b4)`` scores CF-side items from the interest vector.

It maps ``h_u`` linearly to ``P̂_u`` like :class:`LinearHead`; marking ``literal = True``
tells the joint model to score items by ``W4 I_u + b4`` (``σ`` is monotone, so ranking by
the logit equals ranking by ``C_u``) and to train that scorer with a sigmoid cross-entropy
on the user's CF-side items.
"""

from __future__ import annotations

import jax
from flax import nnx


class SigmoidHead(nnx.Module):
    literal = True

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(d_in, d_out, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.linear(h)
