"""A new mapping head: ``P̂_u = (W h_u + b) ⊙ σ(G h_u + c)`` -- one class satisfying the head contract.

Plugged in with ``conf/model/head/gated.yaml`` in a config folder added to Hydra's search path.
"""

import jax
from flax import nnx


class GatedHead(nnx.Module):
    """``d_in``/``d_out``/``rngs`` are supplied by the joint model at run time (``_partial_: true``)."""

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        self.value = nnx.Linear(d_in, d_out, rngs=rngs)
        self.gate = nnx.Linear(d_in, d_out, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.value(h) * jax.nn.sigmoid(self.gate(h))   # [B, d_in] -> [B, d_out]
