"""The dense part of the joint model (design.md#the-joint-model): DL-side encoder + mapping head + interest layer.

Parameters live in two places, on purpose:

* the CF tables ``P [U, d]``, ``Q [I_CF, d]``, ``b_u``, ``b_i`` are plain arrays in the train
  state, updated row-sparsely (a batch touches a few hundred rows of tables that can hold
  10^6 users);
* everything dense (encoder ``f_θ``, head, interest layer ``W3``, the DL-side prediction heads
  of ``L_DL``) is the NNX module :class:`JMFNet`, updated by a dense optax optimiser.

``JMFNet.map(x_u)`` gives ``h_u``, ``P̂_u``, ``b̂_u`` and ``I_u``; :mod:`jmf.models.joint.losses`
turns a batch into the named loss terms.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from flax import nnx

from jmf.errors import ConfigError



# the source weights' exponent is this multiple of their parameter, so they move this much faster than the net's
# weights under the same optimiser (a weight far from 1 is what the occlusion map wants to see)
SOURCE_RATE = 10.0


class Mapped(NamedTuple):
    h: jax.Array         # [B, d_h]  encoder output
    p_hat: jax.Array     # [B, d]    P̂_u
    bias_hat: jax.Array  # [B]       b̂_u (the user bias predicted from the DL side)
    interest: jax.Array  # [B, K]    I_u (logits over the CF-side categories)


class JMFNet(nnx.Module):
    """Encoder + head + interest layer + DL-side prediction heads.

    Args:
      encoder: an encoder module (``out_dim`` attribute; ``(items, categories, mask) -> h``).
      head_fn: ``head_fn(d_in, d_out, rngs=...)`` builds the mapping head.
      dim: CF factor size ``d``.
      n_cf_categories: ``K``; n_cf_items: ``I_CF`` (for the literal head).
      n_dl_items, n_dl_categories: DL-side sizes (for the ``L_DL`` prediction heads).
      item_transfer: ``item_transfer(n_dl_items, n_cf_items, rngs=...)`` builds the item-level transfer module
        (``model/item_transfer``; ``None``: none).
    """

    def __init__(self, encoder: nnx.Module, head_fn, dim: int, n_cf_categories: int, n_cf_items: int,
                 n_dl_items: int, n_dl_categories: int, *, rngs: nnx.Rngs, n_targets: int = 0,
                 source_weights: bool | None = False, item_transfer=None):
        d_h = encoder.out_dim
        self.encoder = encoder
        self.head = head_fn(d_h, dim, rngs=rngs)
        self.bias = nnx.Linear(d_h, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.interest = nnx.Linear(dim, n_cf_categories, rngs=rngs)        # I_u = W3 P̂_u + b3
        self.dl_items = nnx.Embed(n_dl_items + 1, d_h, embedding_init=nnx.initializers.normal(0.05), rngs=rngs)
        self.dl_categories = nnx.Linear(d_h, n_dl_categories + 1, rngs=rngs)
        # b̂_u's DL-side rating offset: a · (the user's damped mean DL-side residual), a started by the model
        self.offset_scale = nnx.Param(jnp.zeros(()))
        # model=jmf_map: a target category's embedding, added to h_u before the head (zero at the start), and its
        # own linear map after it (identity at the start): each target's CF side has its own basis (its own SVD)
        self.target = (nnx.Embed(n_targets, d_h, embedding_init=nnx.initializers.zeros_init(), rngs=rngs)
                       if n_targets else None)
        if n_targets:
            self.target_map = nnx.Param(jnp.tile(jnp.eye(dim)[None], (n_targets, 1, 1)))
            self.target_shift = nnx.Param(jnp.zeros((n_targets, dim)))
        # model.source_weights (model=jmf_map; null: on where the encoder pools by a weighted mean): per target, a
        # learned weight exp(g[t, c]) of each input category in the pooling (1 at the start), so a target can ignore
        # the sources that say nothing about it instead of having them dilute its input
        weighted = bool(getattr(encoder, "weighted_mask", False))
        if source_weights and not weighted:
            raise ConfigError(f"model.source_weights=true: the {type(encoder).__name__} does not pool its input by a "
                              "weighted mean (model/encoder=bag does; null turns the weights on where it can)")
        self.source_logits = (nnx.Param(jnp.zeros((n_targets, n_dl_categories + 1)))
                              if n_targets and weighted and source_weights is not False else None)
        # model/item_transfer (jmf.models.joint.item_transfer): CF-side items attend over the DL-side history
        self.item_attention = item_transfer(n_dl_items, n_cf_items, rngs=rngs) if item_transfer else None
        self.literal = bool(getattr(self.head, "literal", False))
        if self.literal:                                                    # C_u = σ(W4 I_u + b4)
            self.literal_out = nnx.Linear(n_cf_categories, n_cf_items, rngs=rngs)

    def map(self, items: jax.Array, categories: jax.Array, mask: jax.Array, offset: jax.Array | None = None,
            target: jax.Array | None = None, **inputs: jax.Array) -> Mapped:
        """``offset [B]``: the user's DL-side rating offset (:func:`jmf.models.joint.start.o2_user_offsets`; 0 on
        implicit data), added to ``b̂_u`` with the learned scale ``a``.  ``target [B]`` (``model=jmf_map``): the
        target category each user is mapped to (its embedding added to ``h_u`` before the head and the bias; the
        interest vector is read from ``h_u`` alone, so it is one profile over every target), and with source
        weights each behaviour's weight in the pooling for that target."""
        if target is not None and self.source_logits is not None:
            logits = jnp.clip(SOURCE_RATE * self.source_logits[...][target[:, None], categories], -20.0, 20.0)
            h = self.encoder(items, categories, mask * jnp.exp(logits), **inputs)
        else:
            h = self.encoder(items, categories, mask, **inputs)
        p_hat = self.head(h)
        interest = self.interest(p_hat)
        if target is not None:
            h = h + self.target(target)
            p_hat = jnp.einsum("bd,bde->be", self.head(h), self.target_map[...][target]) + self.target_shift[...][target]
        bias_hat = self.bias(h)[:, 0]
        if offset is not None:
            bias_hat = bias_hat + self.offset_scale[...] * offset
        return Mapped(h, p_hat, bias_hat, interest)

    def literal_logits(self, interest: jax.Array) -> jax.Array:
        """``[B, K]`` -> ``[B, I_CF]`` logits of ``C_u``."""
        return self.literal_out(jax.nn.softmax(interest, axis=-1))


def encoder_inputs(net: JMFNet, seq: dict, users: jax.Array) -> dict[str, jax.Array]:
    """The extra inputs an encoder asks for: per-user arrays (its ``input_keys``, e.g. the LM encoder's
    ``tokens``) gathered for ``users``, and whole arrays (its ``shared_keys``, e.g. the graph encoder's
    DL-side graph); ``{}`` for the sequence encoders."""
    inputs = {k: seq[k][users] for k in getattr(net.encoder, "input_keys", ())}
    return {**inputs, **{k: seq[k] for k in getattr(net.encoder, "shared_keys", ())}}


def centred_values(seqs, implicit: bool) -> np.ndarray:
    """``[U, L]`` float32: each behaviour's value minus the mean DL-side value (0 on pads; all 0
    on implicit data, where the value carries nothing) — the encoders' ``values`` input."""
    if implicit or not seqs.mask.any():
        return np.zeros(seqs.values.shape, np.float32)
    mean = float(seqs.values[seqs.mask].mean())
    return np.where(seqs.mask, seqs.values - mean, 0.0).astype(np.float32)
