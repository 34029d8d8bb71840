"""Trained users' vectors at inference: ``P̂_u`` blended with ``P_u`` (jitted; the joint model and ``model=jmf_map``
read them)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jmf.models.joint.net import encoder_inputs


@functools.partial(jax.jit, static_argnums=0)
def trained_vectors(graphdef, params, rest, tables, seq, has_cf, has_factors, users, blend):
    """``(vec [B, d], bias [B], interest [B, K])`` of training users ``users [B]`` (:func:`blended`); ``tables``:
    the CF side's factors (propagated for ``model/cf=graph``)."""
    net = nnx.merge(graphdef, params, rest)
    mapped = net.map(seq["items"][users], seq["categories"][users], seq["mask"][users], seq["offset"][users],
                     **encoder_inputs(net, seq, users))
    vec, bias = blended(mapped, has_cf[users], seq["mask"][users].any(1), tables["P"][users],
                        tables["user_bias"][users, 0], blend, has_factors[users])
    return vec, bias, mapped.interest


def blended(mapped, warm: jax.Array, has_dl: jax.Array, own: jax.Array, own_bias: jax.Array, blend,
            has_factors: jax.Array | None = None):
    """``(vec [B, d], bias [B])``: a warm user's ``blend·P_u + (1-blend)·P̂_u`` (``P_u`` alone without DL-side
    history), a cold user's ``P̂_u``; the bias likewise.  ``has_factors``: the users whose ``P_u`` blends in
    (default ``warm``; ``model/cf=graph`` propagates a ``P_u`` to cold users too -- their bias stays ``b̂_u``)."""
    factors = (warm if has_factors is None else has_factors)[:, None]
    warm, has_dl = warm[:, None], has_dl[:, None]
    w = jnp.where(has_dl, blend, 1.0)  # a warm user without DL-side history keeps P_u
    vec = jnp.where(factors, w * own + (1 - w) * mapped.p_hat, mapped.p_hat)
    bias = jnp.where(warm[:, 0], w[:, 0] * own_bias + (1 - w[:, 0]) * mapped.bias_hat, mapped.bias_hat)
    return vec, bias


def ranked(model, user, users, state, candidates: jax.Array | None = None) -> jax.Array:
    """``[B, I_CF]`` ranking scores of the joint model ``model`` for ``user`` (its ``UserVectors``) from ``state``:
    the CF-side scores (the literal head's, or with ``L_rank`` its logits), the item-level transfer's, the terms.
    ``candidates [B, n]``: only those items' scores, ``[B, n]`` -- the item-level transfer then scores ``n`` items
    a user rather than every CF-side item (the sampled protocols' candidates); the other parts are the same
    values, picked."""
    t, n = model.factors(state), model.n_items    # row-sharded tables carry padding rows past the last item

    def pick(scores: jax.Array) -> jax.Array:
        return scores if candidates is None else jnp.take_along_axis(scores, candidates, 1)

    if model.literal:
        scores = literal_scores(model.graphdef, state.params, state.rest, user.interest)
    elif model.ranks_by_rank_bias:        # ratings with L_rank: rank by which items the user would rate
        scores = user.vec @ t["Q"][:n].T + t["rank_bias"][:n, 0][None, :]
    else:
        scores = user.vec @ t["Q"][:n].T + t["item_bias"][:n, 0][None, :] + user.bias[:, None]
    scores = pick(scores)
    if model.item_transfer:
        scores = scores + (item_scores(model.graphdef, state.params, state.rest, user.items, user.mask)
                           if candidates is None else
                           candidate_item_scores(model.graphdef, state.params, state.rest, user.items, user.mask,
                                                 candidates))
    for term in model.terms.values():
        if term.weight:
            scores = scores + term.weight * pick(term(users, user))
    return scores


@functools.partial(jax.jit, static_argnums=0)
def item_scores(graphdef, params, rest, items: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, I_CF]``: the item-level transfer's scores of every CF-side item (``model/item_transfer``)."""
    return nnx.merge(graphdef, params, rest).item_attention.all_items(items, mask)


@functools.partial(jax.jit, static_argnums=0)
def candidate_item_scores(graphdef, params, rest, items: jax.Array, mask: jax.Array,
                          candidates: jax.Array) -> jax.Array:
    """``[B, n]``: the item-level transfer's scores of each user's ``candidates [B, n]``."""
    return nnx.merge(graphdef, params, rest).item_attention(items, mask, candidates)


@functools.partial(jax.jit, static_argnums=0)
def literal_scores(graphdef, params, rest, interest):
    return nnx.merge(graphdef, params, rest).literal_logits(interest)
