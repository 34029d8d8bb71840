"""Row-sparse training of both sides' factor tables in one jit-compiled epoch.

The CF-side (target) and DL-side (source) rows are stacked into one problem: items ``0..I_CF-1`` are
CF-side items and ``I_CF..I_CF+I_DL-1`` DL-side items, and ``r̂_ui = μ_side + b_u + b_i + P_u·Q_i``.

Each table carries its bias as a last column (``P [·, d+1]``, ``Q [·, d+1]``): two row-sparse
updates per step instead of four, with the same element-wise optimiser arithmetic.

* ``shared_users=True`` (CMF): a user has one row ``P_u``, ``b_u`` for both sides.
* ``shared_users=False`` (the per-side MF of EMCDR and PTUPCDR): DL-side rows belong to user rows
  ``U..2U-1``, so the two sides are two independent biased MFs with the losses of
  :class:`~jmf.models.cf.mf.MatrixFactorization` (pair-weighted MSE, BPR or sampled softmax,
  per-example L2 on the touched rows), trained by one compiled epoch instead of two.

Ranking negatives are uniform over the positive's own side.  As in ``mf.py``, an epoch is one
``lax.scan`` in one ``jax.jit`` call and each step updates only the rows it touches
(:func:`jmf.optim.sparse_rows_update`).  The epochs run on the training engine
(:func:`jmf.train.stages.train_passes`: checkpoints, exact resume, validation-based
selection); each epoch's ``[S, B]`` batches are sharded over the ``data`` mesh axis along ``B``
and the tables are replicated (``trainer.shard_tables`` row-shards them when their row
counts divide over the devices).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jmf import losses
from jmf.data.split import SplitData
from jmf.optim import build_optimizer, sparse_rows_update
from jmf.train import parallel
from jmf.models.base import RunContext, StageResult, stage_engine, train_passes
from jmf.train.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableConfig:
    """Knobs of the table training (the models' ``model.*`` keys of the same names).

    Attributes:
      dim: factor size ``d``; kind: ``mse`` | ``bpr`` | ``softmax`` (already resolved from ``auto``).
      epochs, batch_size: passes over the stacked CF-side + DL-side rows, rows per step.
      optimizer, lr: optax optimiser applied row-sparsely.
      reg, bias_reg: L2 weights on the touched factor rows and biases (per example).
      source_weight: weight of a DL-side row against a CF-side row.
      init_scale: std of the normal initialisation; negatives: per positive (ranking losses).
    """

    dim: int = 32
    kind: str = "bpr"
    epochs: int = 20
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 0.01
    reg: float = 0.001
    bias_reg: float = 0.001
    source_weight: float = 1.0
    init_scale: float = 0.1
    negatives: int = 4


@dataclass
class SideTables:
    """Trained tables: ``P [U or 2U, d+1]`` and ``Q [I_CF+I_DL, d+1]``; the last column is the bias."""

    params: dict
    means: np.ndarray      # [2] rating means of the CF side, the DL side (0 for ranking losses)
    n_users: int
    n_target: int
    shared_users: bool
    stage: StageResult     # the engine stage: last loss, validation history, best value
    engine: Engine         # the stage's engine (traces, mesh)

    @property
    def loss(self) -> float:
        """Mean training loss of the last epoch run."""
        return self.stage.loss

    def side(self, name: str) -> dict[str, jax.Array]:
        """``P [U, d]``, ``user_bias [U]``, ``Q [I, d]``, ``item_bias [I]`` and ``mean`` of ``target`` or ``source``."""
        P, Q, U, T = np.asarray(self.params["P"]), np.asarray(self.params["Q"]), self.n_users, self.n_target
        users = P[:U] if name == "target" or self.shared_users else P[U:2 * U]
        items = Q[:T] if name == "target" else Q[T:]
        return {"P": jnp.asarray(users[:, :-1]), "user_bias": jnp.asarray(users[:, -1]),
                "Q": jnp.asarray(items[:, :-1]), "item_bias": jnp.asarray(items[:, -1]),
                "mean": float(self.means[0 if name == "target" else 1])}


def fit_tables(split: SplitData, cfg: TableConfig, *, shared_users: bool, seed: int, model: str,
               ctx: RunContext | None = None, folder: str | None = None,
               validate: Callable[[dict], float] | None = None, monitor: str = "valid", patience: int = 0,
               eval_every: int = 1) -> SideTables:
    """Train the tables of both sides on ``split.train`` (the CF side) and ``split.dl`` (the DL side), on
    the engine.

    Args:
      model: the model's config name (engine name, error messages).
      ctx, folder: the run context and the stage's folder in it (:func:`~jmf.train.stages.stage_engine`).
      validate: ``params -> metric`` every ``eval_every`` epochs and after the last; the best
        validated tables are returned (``params`` is live: copy what you keep).
      monitor, patience: the validated metric's name and early stopping (0: run every epoch).
    """

    n_users, n_target = split.train.shape
    n_source = split.dl.shape[1]
    rows, cols, vals, side, means = _stacked_rows(split, cfg.kind == "mse", shared_users)
    scale = np.where(side == 1, cfg.source_weight, 1.0).astype(np.float32)

    engine = stage_engine(ctx, f"{model}-tables", seed, folder)
    parallel.check_batch_size(cfg.batch_size, engine.mesh, "model.batch_size")
    n_rows = n_users if shared_users else 2 * n_users
    params = _initial_tables(cfg, n_rows, n_target + n_source, seed)
    tx = build_optimizer(cfg.optimizer, cfg.lr)
    state = {"params": params, "opt_state": {k: tx.init(v) for k, v in params.items()}}
    table_rows = {n_rows, n_target + n_source}
    n_dev = engine.n_devices
    sharding = engine.state_shardings(state, lambda path, leaf: leaf.shape[0] in table_rows
                                      and leaf.shape[0] % n_dev == 0)
    state = engine.put_state(state, sharding)
    device_means = parallel.put_replicated(jnp.asarray(means), engine.mesh)
    base_key = jax.random.key(engine.sampling_seed)

    def step(state, batch):
        params, opt_state, loss = _epoch_body(state["params"], state["opt_state"], batch["rows"], batch["key"],
                                              batch["means"], cfg=cfg, n_target=n_target, n_source=n_source)
        return {"params": params, "opt_state": opt_state}, {"loss": loss}

    n = len(rows)
    n_batches = -(-n // cfg.batch_size)

    def batch_of(epoch: int, rng: np.random.Generator) -> dict:
        perm = rng.permutation(n)
        pad = n_batches * cfg.batch_size - n  # the ragged last batch: padded rows of weight 0
        idx = np.concatenate([perm, np.zeros(pad, np.int64)])
        weight = np.concatenate([scale[perm], np.zeros(pad, np.float32)])
        shape = (n_batches, cfg.batch_size)
        batches = {"users": rows[idx].reshape(shape), "items": cols[idx].reshape(shape),    # [S, B] each
                   "values": vals[idx].reshape(shape), "side": side[idx].reshape(shape),
                   "weight": weight.reshape(shape)}
        return {"rows": engine.put_batch(batches, axis=1), "means": device_means,
                "key": parallel.put_replicated(jax.random.fold_in(base_key, epoch), engine.mesh)}

    check = None if validate is None else (lambda s: validate(s["params"]))
    result = train_passes(engine, "tables", state, sharding, step, batch_of, passes=cfg.epochs,
                          eval_every=eval_every, validate=check, monitor=monitor, patience=patience,
                          examples_per_pass=n)
    log.debug("%s tables: loss %.4f", model, result.loss)
    return SideTables(result.state["params"], means, n_users, n_target, shared_users, result, engine)


def _stacked_rows(split: SplitData, rated: bool, shared_users: bool) -> tuple[np.ndarray, ...]:
    """CF-side then DL-side training rows over the stacked tables: ``(users, items, values, side, means)``;
    DL-side items follow the CF-side items, and DL-side users follow the CF-side users unless ``shared_users``."""
    target, source = split.train.tocoo(), split.dl.tocoo()
    n_users, n_target = split.train.shape
    means = np.array([target.data.mean(), source.data.mean()] if rated else [0.0, 0.0], np.float32)
    offset = 0 if shared_users else n_users
    rows = np.concatenate([target.row, source.row + offset]).astype(np.int32)
    cols = np.concatenate([target.col, source.col + n_target]).astype(np.int32)
    vals = np.concatenate([target.data, source.data]).astype(np.float32)
    side = np.concatenate([np.zeros(target.nnz, np.int32), np.ones(source.nnz, np.int32)])
    return rows, cols, vals, side, means


def _initial_tables(cfg: TableConfig, n_rows: int, n_items: int, seed: int) -> dict[str, jax.Array]:
    """``P [n_rows, d+1]``, ``Q [n_items, d+1]``: factors ~ N(0, init_scale²), the last column (bias) 0."""
    key_u, key_i = jax.random.split(jax.random.key(seed))
    bias = jnp.zeros((1,))
    return {"P": jnp.concatenate([cfg.init_scale * jax.random.normal(key_u, (n_rows, cfg.dim)),
                                  jnp.broadcast_to(bias, (n_rows, 1))], 1),
            "Q": jnp.concatenate([cfg.init_scale * jax.random.normal(key_i, (n_items, cfg.dim)),
                                  jnp.broadcast_to(bias, (n_items, 1))], 1)}


def _example_loss(rows: dict, batch: dict, means: jax.Array, cfg: TableConfig) -> jax.Array:
    """The loss as a function of the gathered rows only (so gradients are row-sized).

    ``rows``: ``P, Q [B, d+1]`` (last column: bias) and, for ranking losses, ``Qneg [B*N, d+1]``.
    """
    pu, bu = rows["P"][:, :-1], rows["P"][:, -1]                        # [B, d], [B]
    qi, bi = rows["Q"][:, :-1], rows["Q"][:, -1]
    w = batch["weight"]
    pos = (pu * qi).sum(-1) + bi
    penalty = cfg.reg * ((pu ** 2).sum(-1) + (qi ** 2).sum(-1)) + cfg.bias_reg * bi ** 2
    if cfg.kind == "mse":
        main = losses.mse(means[batch["side"]] + bu + pos, batch["values"], w)
        penalty = penalty + cfg.bias_reg * bu ** 2
    else:  # b_u cancels out of ranking losses
        neg_rows = rows["Qneg"].reshape(pu.shape[0], cfg.negatives, -1)   # [B, N, d+1]
        qj, bj = neg_rows[..., :-1], neg_rows[..., -1]
        neg = jnp.einsum("bd,bnd->bn", pu, qj) + bj
        penalty = penalty + cfg.reg * (qj ** 2).sum((-1, -2)) / cfg.negatives
        main = (losses.bpr if cfg.kind == "bpr" else losses.sampled_softmax)(pos, neg, w)
    return main + losses.weighted_mean(penalty, w)


def _epoch_body(params: dict, opt_state: dict, batches: dict, key: jax.Array, means: jax.Array, *, cfg: TableConfig,
                n_target: int, n_source: int):
    """One epoch: ``lax.scan`` over ``batches [S, B]``; returns ``(params, opt_state, mean loss)``.

    Traced inside the engine's jitted step (one trace per fit and shape).
    """
    tx = build_optimizer(cfg.optimizer, cfg.lr)
    n_neg = cfg.negatives

    def step(carry, batch):
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        users, items = batch["users"], batch["items"]
        ids = {"P": users, "Q": items}
        rows = {"P": params["P"][users], "Q": params["Q"][items]}
        if cfg.kind != "mse":
            # negatives from the positive's own side: CF-side items 0..I_CF-1, DL-side items I_CF..I_CF+I_DL-1
            u = jax.random.uniform(sub, (users.shape[0], n_neg))
            is_source = batch["side"][:, None] == 1
            neg = jnp.where(is_source, n_target + jnp.floor(u * n_source), jnp.floor(u * n_target))
            neg = jnp.minimum(neg.astype(jnp.int32), n_target + n_source - 1).reshape(-1)   # [B*N]
            ids["Q"] = jnp.concatenate([items, neg])
            rows["Qneg"] = params["Q"][neg]
        loss, grads = jax.value_and_grad(_example_loss)(rows, batch, means, cfg)
        if cfg.kind != "mse":
            grads = {"P": grads["P"], "Q": jnp.concatenate([grads["Q"], grads["Qneg"]])}
        new_params, new_state = {}, {}
        for name in params:
            new_params[name], new_state[name] = sparse_rows_update(tx, params[name], opt_state[name], ids[name],
                                                                   grads[name])
        return (new_params, new_state, key), loss

    (params, opt_state, _), loss = jax.lax.scan(step, (params, opt_state, key), batches)
    return params, opt_state, loss.mean()
