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
               table_tx: optax.GradientTransformation, seed: int) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, rest=rest, opt_state=tx.init(params), tables=tables,
        table_opt={k: table_tx.init(v) for k, v in tables.items()}, rng=jax.random.key(seed),
    )
    return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    table_tx: optax.GradientTransformation, kind: str, mean: float, reg: float, n_negatives: int,
                    n_items: int):
    """Return ``train_step(state, batch, seq, weights) -> (state, metrics)``.

    ``batch``: ``users [B]``, ``items, values, weight [B, m]``, ``dl_users [B]`` (sharded over ``data``);
    ``seq``: per-user device arrays (replicated); ``weights``: :class:`LossWeights` of scalars.
    """

    def train_step(state: TrainState, batch: dict, seq: dict, weights: LossWeights):
        key = jax.random.fold_in(state.rng, state.step)
        key_neg, key_dl = jax.random.split(key)
        users, items = batch["users"], batch["items"].reshape(-1)
        user_rows = batch.get("user_rows", users)     # model=jmf_map: the row of (user, target) in P and b_u
        if "neg_lo" in batch:      # model=jmf_map: negatives from the batch's target category, items lo..lo+n-1
            lo, n = batch["neg_lo"][0], batch["neg_n"][0]
            neg_items = lo + jnp.floor(jax.random.uniform(key_neg, (n_negatives,)) * n).astype(jnp.int32)
        else:
            neg_items = jax.random.randint(key_neg, (n_negatives,), 0, n_items)   # shared by the batch
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


def _neg_name(name: str) -> str:
    """The row key of a table's negatives: ``Q -> Qneg``, ``item_bias -> item_bias_neg``."""
    return f"{name}neg" if name.endswith("Q") else f"{name}_neg"
