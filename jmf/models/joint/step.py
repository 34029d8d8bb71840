"""The joint train step: a pure function of ``(state, batch, seq, weights)`` (design.md#conventions).

Made by a factory that closes over static things (NNX graphdef, optax transformations,
the CF loss kind); the caller jits it once with pinned shardings.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jmf.models.joint.losses import LossWeights, joint_losses, total_loss
from jmf.optim import sparse_rows_update

TABLES = ("P", "Q", "user_bias", "item_bias", "rank_bias")
DENSE_TABLES = ("P", "Q", "E_dl", "P_dl")            # model/cf=graph: layer-0 tables, updated whole
ITEM_TABLES = ("Q", "item_bias", "rank_bias")       # rows indexed by item (own rows and negatives)


class TrainState(NamedTuple):
    """Everything a step reads and writes; orbax saves it whole."""

    step: jax.Array          # [] int32
    params: nnx.State        # dense NNX parameters (encoder, head, ...)
    rest: nnx.State          # non-parameter NNX state (RNG counters)
    opt_state: optax.OptState
    tables: dict             # P [U, d], Q [I_CF, d], user_bias [U, 1], item_bias, rank_bias [I_CF, 1]
    table_opt: dict          # row-sparse optimiser state per table
    rng: jax.Array           # base key; step keys are fold_in(rng, step)


def init_state(net: nnx.Module, tables: dict, tx: optax.GradientTransformation,
               table_tx: optax.GradientTransformation, seed: int,
               dense_tx: optax.GradientTransformation | None = None) -> tuple[nnx.GraphDef, TrainState]:
    """``dense_tx``: the optimiser of the tables a graph CF side updates whole (:data:`DENSE_TABLES`)."""
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, rest=rest, opt_state=tx.init(params), tables=tables,
        table_opt={k: (dense_tx if dense_tx is not None and k in DENSE_TABLES else table_tx).init(v)
                   for k, v in tables.items()}, rng=jax.random.key(seed),
    )
    return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    table_tx: optax.GradientTransformation, kind: str, mean: float, reg: float, n_negatives: int,
                    n_items: int, cf=None, dense_tx: optax.GradientTransformation | None = None):
    """Return ``train_step(state, batch, seq, weights) -> (state, metrics)``.

    ``batch``: ``users [B]``, ``items, values, weight [B, m]``, ``dl_users [B]`` (sharded over ``data``);
    ``seq``: per-user device arrays (replicated); ``weights``: :class:`LossWeights` of scalars.
    ``cf``: a CF side that propagates whole tables (``model/cf=graph``, :mod:`jmf.models.joint.cf_side`): then
    ``P, Q`` are its propagations, updated whole by ``dense_tx`` (:func:`make_graph_train_step`).
    """
    if cf is not None and cf.dense:
        return make_graph_train_step(graphdef, tx, table_tx, dense_tx, cf, kind, mean, reg, n_negatives, n_items)

    def train_step(state: TrainState, batch: dict, seq: dict, weights: LossWeights):
        key = jax.random.fold_in(state.rng, state.step)
        key_neg, key_dl = jax.random.split(key)
        users, items = batch["users"], batch["items"].reshape(-1)
        user_rows = batch.get("user_rows", users)     # model=jmf_map: the row of (user, target) in P and b_u
        if "neg_lo" in batch:      # model=jmf_map: negatives from the batch's target category, items lo..lo+n-1
            lo, n = batch["neg_lo"][0], batch["neg_n"][0]
            neg_items = lo + jnp.floor(jax.random.uniform(key_neg, (n_negatives,)) * n).astype(jnp.int32)
        else:
            neg_items = shared_negatives(batch, key_neg, n_negatives, n_items)
        batch = {**batch, "neg_items": neg_items}
        t = state.tables
        rows = {"P": t["P"][user_rows], "user_bias": t["user_bias"][user_rows]}
        for name in ITEM_TABLES:
            rows[name], rows[_neg_name(name)] = t[name][items], t[name][neg_items]   # Q -> Q, Qneg; ...

        def loss_fn(params, rows):
            net = nnx.merge(graphdef, params, state.rest)
            parts = joint_losses(net, rows, batch, seq, kind, mean, reg, key_dl)
            return total_loss(parts, weights), (parts, nnx.state(net, nnx.Not(nnx.Param)))

        (total, (parts, rest)), (g_params, g_rows) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, rows)
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        both = jnp.concatenate([items, neg_items])
        tables, table_opt = {}, {}
        for name in t:
            if name in ITEM_TABLES:
                ids, grads = both, jnp.concatenate([g_rows[name], g_rows[_neg_name(name)]])
            else:
                ids, grads = user_rows, g_rows[name]
            tables[name], table_opt[name] = sparse_rows_update(table_tx, t[name], state.table_opt[name], ids, grads)
        new_state = TrainState(state.step + 1, params, rest, opt_state, tables, table_opt, state.rng)
        return new_state, {"loss": total, **parts}

    return train_step


def make_graph_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                          table_tx: optax.GradientTransformation, dense_tx: optax.GradientTransformation, cf,
                          kind: str, mean: float, reg: float, n_negatives: int, n_items: int):
    """The step of ``model/cf=graph``: the joint graph propagates the layer-0 tables ``P⁰, Q⁰, E⁰`` (whole), the
    batch's rows of ``P, Q`` are read from the propagation, ``L_CF`` adds ``o2_weight`` times the DL-side edge
    loss, the layer-0 tables get ``dense_tx`` updates and the biases row-sparse ``table_tx`` ones."""

    def train_step(state: TrainState, batch: dict, seq: dict, weights: LossWeights):
        key = jax.random.fold_in(state.rng, state.step)
        key_neg, key_dl, key_o2 = jax.random.split(key, 3)
        users, items = batch["users"], batch["items"].reshape(-1)
        neg_items = shared_negatives(batch, key_neg, n_negatives, n_items)
        batch = {**batch, "neg_items": neg_items}
        t = state.tables
        dense = {k: t[k] for k in DENSE_TABLES if k in t}
        rows = {"user_bias": t["user_bias"][users]}
        for name in ITEM_TABLES[1:]:
            rows[name], rows[_neg_name(name)] = t[name][items], t[name][neg_items]

        def loss_fn(params, rows, dense):
            P, Q, E, P_dl = cf.propagate_sides(dense, seq["cf_graph"])
            rows = {**rows, "P": P[users], "Q": Q[items], "Qneg": Q[neg_items]}
            net = nnx.merge(graphdef, params, state.rest)
            parts = joint_losses(net, rows, batch, seq, kind, mean, reg, key_dl)
            parts["cf_o2"] = cf.o2_loss(P_dl, E, batch["dl_users"], seq, key_o2)
            total = total_loss(parts, weights) + weights.cf * cf.o2_weight * parts["cf_o2"]
            return total, (parts, nnx.state(net, nnx.Not(nnx.Param)))

        (total, (parts, rest)), (g_params, g_rows, g_dense) = jax.value_and_grad(
            loss_fn, argnums=(0, 1, 2), has_aux=True)(state.params, rows, dense)
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        tables, table_opt = {}, {}
        for name in dense:
            step, table_opt[name] = dense_tx.update(g_dense[name], state.table_opt[name], t[name])
            tables[name] = optax.apply_updates(t[name], step)
        both = jnp.concatenate([items, neg_items])
        for name, ids in (("user_bias", users), ("item_bias", both), ("rank_bias", both)):
            grads = g_rows[name] if name == "user_bias" else jnp.concatenate([g_rows[name], g_rows[_neg_name(name)]])
            tables[name], table_opt[name] = sparse_rows_update(table_tx, t[name], state.table_opt[name], ids, grads)
        new_state = TrainState(state.step + 1, params, rest, opt_state, tables, table_opt, state.rng)
        return new_state, {"loss": total, **parts}

    return train_step


def shared_negatives(batch: dict, key: jax.Array, n_negatives: int, n_items: int) -> jax.Array:
    """The ``[N]`` uniform negatives a batch shares: drawn here, or by the batch plan when score terms are inside
    the fit (``neg_rows [B, N]``, every row the same; :func:`jmf.models.joint.plan.user_batches`)."""
    if "neg_rows" in batch:
        return batch["neg_rows"][0]
    return jax.random.randint(key, (n_negatives,), 0, n_items)


def _neg_name(name: str) -> str:
    """The row key of a table's negatives: ``Q -> Qneg``, ``item_bias -> item_bias_neg``."""
    return f"{name}neg" if name.endswith("Q") else f"{name}_neg"
