"""Item-level transfer (``model/item_transfer=attention``): a user's DL-side items speak to CF-side items directly.

The mapping head gives one ``d``-wide ``P̂_u`` per user, which smooths away item-level signal: that a user's
DL-side item ``j`` and a CF-side item ``i`` are bought together (or are the same product listed on both sides)
is what the co-occurrence score term counts and a user-level map cannot carry.  :class:`ItemAttention` learns
it: every CF-side item attends over the user's DL-side history ``x_u``,

    s_att(u, i) = w · τ · log( (1/|x_u|) Σ_{j ∈ x_u} exp(k_j · f_i / τ) ),

a soft maximum of the similarities of ``i`` to the user's DL-side items (``k`` a DL-side item table, ``f`` a
CF-side one, both ``dim`` wide; ``τ`` the temperature: small is a hard max, large the mean, i.e. a bag
encoder).  ``w`` is learned (started at 1) and the score is added to the joint model's CF-side scores in
``L_CF`` and ``L_transfer`` (so it is trained on the warm users' CF-side items against the same negatives)
and at ranking time; a user without DL-side history gets 0.  Ranking every CF-side item runs over item blocks
(``block`` items at a time), so memory is ``B·L·block``, not ``B·L·I_CF``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jmf.errors import ConfigError


class ItemAttention(nnx.Module):
    """See the module docstring.

    Args:
      n_dl_items, n_cf_items: the two sides' item counts (supplied when the model is built).
      dim: width of the two item tables.
      temperature: ``τ``.
      init_scale: std of the tables' normal start.
      block: CF-side items per block when ranking every item.
    """

    def __init__(self, n_dl_items: int, n_cf_items: int, dim: int = 32, temperature: float = 0.25,
                 init_scale: float = 0.1, block: int = 2048, *, rngs: nnx.Rngs):
        if dim < 1 or block < 1:
            raise ConfigError(f"model.item_transfer.dim, block: {dim}, {block} must be >= 1")
        if not temperature > 0:
            raise ConfigError(f"model.item_transfer.temperature: {temperature} must be > 0")
        init = nnx.initializers.normal(init_scale)
        self.keys = nnx.Embed(n_dl_items + 1, dim, embedding_init=init, rngs=rngs)    # row 0: the pad
        self.items = nnx.Embed(n_cf_items, dim, embedding_init=init, rngs=rngs)
        self.scale = nnx.Param(jnp.ones(()))
        self.temperature, self.block = float(temperature), int(block)

    def _soft_max(self, sims: jax.Array, mask: jax.Array) -> jax.Array:
        """``sims [B, L, n]`` similarities, ``mask [B, L]`` -> ``[B, n]`` ``w·τ·log mean_j exp(sim/τ)``."""
        tau = self.temperature
        logits = jnp.where(mask[:, :, None], sims / tau, -1e9)            # finite: no NaN gradient on pads
        count = jnp.maximum(mask.sum(1), 1).astype(sims.dtype)[:, None]
        out = jax.nn.logsumexp(logits, axis=1) - jnp.log(count)
        return jnp.where(mask.any(1)[:, None], self.scale[...] * tau * out, 0.0)

    def __call__(self, seq_items: jax.Array, mask: jax.Array, items: jax.Array) -> jax.Array:
        """``seq_items, mask [B, L]`` (DL-side item ids + 1, 0 = pad) and CF-side ``items`` -- ``[B, n]`` (each
        user's own) or ``[n]`` (shared by the batch) -- -> ``[B, n]`` scores."""
        keys = self.keys(seq_items)                                                   # [B, L, e]
        f = self.items(items)
        sims = (jnp.einsum("ble,bne->bln", keys, f) if items.ndim == 2 else jnp.einsum("ble,ne->bln", keys, f))
        return self._soft_max(sims, mask)

    def all_items(self, seq_items: jax.Array, mask: jax.Array) -> jax.Array:
        """``[B, I_CF]``: every CF-side item's score, block by block."""
        table = self.items.embedding[...]
        n, block = table.shape[0], min(self.block, table.shape[0])
        pad = -n % block
        blocks = jnp.pad(table, ((0, pad), (0, 0))).reshape(-1, block, table.shape[1])
        keys = self.keys(seq_items)

        def one(f):
            return self._soft_max(jnp.einsum("ble,ne->bln", keys, f), mask)
        out = jax.lax.map(one, blocks)                                                # [n_blocks, B, block]
        return jnp.moveaxis(out, 0, 1).reshape(seq_items.shape[0], -1)[:, :n]
