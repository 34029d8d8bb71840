"""The joint model on users outside training: their DL-side history is encoded and mapped, no retraining.

A new user is a cold-start user by construction: ``P̂_u`` and ``b̂_u`` come from the encoder and head
exactly as for a training user without CF-side history, from the same inputs -- their last ``max_len``
DL-side behaviours (time order), each rating centred by the training DL-side mean, and (on ratings) their
DL-side offset ``o_u`` against the training DL-side item means.  The score terms read the same things of a new
user as of a known one (:class:`~jmf.models.joint.terms.UserVectors`).

With ``model/cf=graph`` a training user with an edge on either side also has a propagated ``P_u``, blended with
``P̂_u`` as for a cold-start user of the run: a new user gets theirs by
:meth:`~jmf.models.joint.cf_side.GraphCF.fold_in` (their CF-side and DL-side rows over the trained graph's item
layers, no retraining), so a user with CF-side history only is scored too (by that ``P_u``).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jmf.models.joint.cf_side import stacked
from jmf.models.joint.terms import UserVectors, binary_rows
from jmf.models.joint.vectors import blended
from jmf.errors import ConfigError


class NewUserInputs:
    """What encoding a new user needs from the training split (kept by :meth:`JMF.setup`)."""

    def __init__(self, split, seq_values, mask, damping: float, user_offset: bool):
        from jmf.models.joint.start import o2_item_means

        self.value_mean = float(seq_values[mask].mean()) if (not split.implicit and mask.any()) else 0.0
        self.implicit = split.implicit
        self.item_mean = o2_item_means(split, damping) if (user_offset and not split.implicit) else None
        self.damping = damping
        positions = {c: k + 1 for k, c in enumerate(split.partition.dl_categories)}
        self.item_category = np.array([positions[c] for c in split.data.item_category[split.dl_items]], np.int32)


def new_user_vectors(model, hist) -> tuple[UserVectors, np.ndarray]:
    """``(UserVectors of the B new users, [B] whether each can be scored)``: DL-side history to encode, or (with
    ``model/cf=graph``) an edge to fold into the graph."""
    inputs = new_user_inputs(model, hist)
    vec, bias, interest = map_new_users(model, inputs)
    usable = inputs["mask"].any(1)
    if model.cf.dense:
        own, has_edge = model.cf.fold_in(graph_layers(model), hist.cf, hist.dl)
        mapped = SimpleNamespace(p_hat=vec, bias_hat=bias)
        vec, bias = blended(mapped, jnp.zeros(len(usable), bool), jnp.asarray(usable), jnp.asarray(own),
                            jnp.zeros(len(usable)), model.blend, jnp.asarray(has_edge))
        usable = usable | has_edge
    return (UserVectors(vec, bias, interest, binary_rows(hist.dl, per_user=True), jnp.asarray(inputs["items"]),
                        jnp.asarray(inputs["mask"])), usable)


def graph_layers(model) -> dict:
    """The item layers :meth:`~jmf.models.joint.cf_side.GraphCF.fold_in` reads, of the state ``score`` ranks with
    (``model/cf=graph``), computed once per state."""
    state = model.state if model.rank_state is None else model.rank_state
    cached = getattr(model, "_graph_layers", (None, None))
    if cached[0] is not state.tables:        # the item layers only: the users' are as large and not read
        layers = stacked(model.cf, state.tables, model.seq["cf_graph"])
        items = {k: v for k, v in layers.items() if k not in ("P", "P_dl")}
        model._graph_layers = (state.tables, jax.device_get(items))
    return model._graph_layers[1]


def new_user_inputs(model, hist) -> dict[str, np.ndarray]:
    """The encoder's inputs for the B new users: ``items, cats, mask [B, L]``, ``offset [B]``, ``per_user`` (the
    ``values`` an encoder reads, as a dict)."""
    inputs: NewUserInputs = model.new_inputs
    keys = model.encoder_keys
    if set(keys) - {"values"}:
        raise ConfigError(f"recommend_new: the encoder reads {keys}, which new users do not have (the sequence "
                         "and graph encoders can encode new users; the LM encoder cannot yet)")
    L, B = model.max_len, len(hist.users)
    items = np.zeros((B, L), np.int32)
    cats = np.zeros((B, L), np.int32)
    values = np.zeros((B, L), np.float32)
    offset = np.zeros(B, np.float32)
    for b, (order, vals) in enumerate(zip(hist.dl_order, hist.dl_values)):
        order, vals = order[-L:], vals[-L:]
        items[b, :len(order)] = order + 1
        cats[b, :len(order)] = inputs.item_category[order]
        values[b, :len(order)] = 0.0 if inputs.implicit else vals - inputs.value_mean
        if inputs.item_mean is not None and len(hist.dl_order[b]):
            full, full_vals = hist.dl_order[b], hist.dl_values[b]
            offset[b] = (full_vals - inputs.item_mean[full]).sum() / (len(full) + inputs.damping)
    return {"items": items, "cats": cats, "mask": items > 0, "offset": offset,
            "per_user": {"values": values} if "values" in keys else {}}


def map_new_users(model, inputs: dict, mask: np.ndarray | None = None, target: int | None = None):
    """``(P̂ [B, d], b̂ [B], I [B, K])`` of :func:`new_user_inputs` (``mask``: in place of theirs; ``target``: the
    target category position, ``model=jmf_map``), from the state ``score`` ranks with."""
    state = model.state if model.rank_state is None else model.rank_state
    shared = {k: model.seq[k] for k in model.shared_keys}
    per_user = {k: jnp.asarray(v) for k, v in inputs["per_user"].items()}
    mask = inputs["mask"] if mask is None else mask
    args = (model.graphdef, state.params, state.rest, jnp.asarray(inputs["items"]), jnp.asarray(inputs["cats"]),
            jnp.asarray(mask), jnp.asarray(inputs["offset"]), per_user, shared)
    return _map(*args) if target is None else _map_target(*args, jnp.int32(target))


@functools.partial(jax.jit, static_argnums=0)
def _map(graphdef, params, rest, items, cats, mask, offset, per_user, shared):
    net = nnx.merge(graphdef, params, rest)
    mapped = net.map(items, cats, mask, offset, **per_user, **shared)
    return mapped.p_hat, mapped.bias_hat, mapped.interest


@functools.partial(jax.jit, static_argnums=0)
def _map_target(graphdef, params, rest, items, cats, mask, offset, per_user, shared, target):
    net = nnx.merge(graphdef, params, rest)
    mapped = net.map(items, cats, mask, offset, target=jnp.full(items.shape[:1], target), **per_user, **shared)
    return mapped.p_hat, mapped.bias_hat, mapped.interest
