"""Personalised bridge (PTUPCDR, Zhu et al. WSDM 2022): a meta-network writes a per-user mapping.

PTUPCDR maps a user's source embedding ``u_s`` to the target as ``u_t = u_s W_u``, where
``W_u = reshape(MLP(c_u))`` is generated from a characteristic embedding ``c_u`` of the
user's source-side history.  Here the encoder output ``h_u`` plays both roles:
``u_s = A h_u`` and ``c_u = h_u``; ``W_u`` starts near the identity so training begins
from the linear head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class BridgeHead(nnx.Module):
    """``P̂_u = (A h_u) (I + reshape(MLP(h_u)))``; ``d_in``/``d_out`` are supplied at run time."""

    def __init__(self, d_in: int, d_out: int, meta_hidden: int = 128, *, rngs: nnx.Rngs):
        self.base = nnx.Linear(d_in, d_out, rngs=rngs)
        self.meta_hidden = nnx.Linear(d_in, meta_hidden, rngs=rngs)
        self.meta_out = nnx.Linear(meta_hidden, d_out * d_out, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.d_out = d_out

    def __call__(self, h: jax.Array) -> jax.Array:
        base = self.base(h)                                                           # [B, d]
        delta = self.meta_out(nnx.gelu(self.meta_hidden(h))).reshape(-1, self.d_out, self.d_out)
        return base + jnp.einsum("bd,bde->be", base, delta)                          # u_s (I + ΔW_u)
