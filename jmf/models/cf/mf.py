"""Low-rank matrix factorisation with biases (LRMF), trained by jit-compiled optax steps.

``r̂_ui = μ + b_u + b_i + P_u·Q_i`` (design.md#the-cf-side).  Losses: ``mse`` on ratings, ``bpr`` or
``softmax`` (sampled softmax over uniform negatives) on implicit feedback.  Each step
updates only the embedding rows the batch touches (:func:`jmf.optim.sparse_rows_update`),
and a whole epoch is one ``lax.scan`` inside one ``jax.jit`` call: no per-step dispatch; the
engine (:mod:`jmf.train.engine`) runs it as a one-step epoch, with epoch-end checkpoints.
The epoch's order is drawn from ``(sampling seed, epoch)`` and negatives on the device from
``fold_in(key(sampling seed), epoch)``, so a run is a pure function of its seeds and a
resumed run repeats exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jmf import losses
from jmf.data.split import SplitData
from jmf.optim import build_optimizer, first_occurrence, grouped_rows_update, sparse_rows_update
from jmf.train import parallel
from jmf.models.base import EngineModel, EpochPlan, Phase, RunContext, TrainPlan
from jmf.train.engine import Engine, FitResult
from jmf.errors import ConfigError

log = logging.getLogger(__name__)

LOSSES = ("auto", "mse", "bpr", "softmax")


class MatrixFactorization(EngineModel):
    """Biased MF.

    Args:
      dim: factor size ``d``.
      loss: ``mse`` | ``bpr`` | ``softmax`` | ``auto`` (mse on ratings, bpr on implicit data).
      epochs: passes over the training rows.
      batch_size: examples per step.
      optimizer, lr: optax optimiser applied row-sparsely (``sgd``, ``adagrad``, ``adam``...).
      reg: L2 weight on the touched rows and biases (per example, as Surprise's SVD).
      bias_reg: L2 weight on the biases (defaults to ``reg``).
      init: ``normal`` (std ``init_scale``) or ``svd`` (``P = U Σ^½``, ``Q = V Σ^½``).
      negatives: uniform negatives per positive for ``bpr``/``softmax``.
      weighting: ``pair`` (mean over examples; matches RMSE) or ``user`` (mean per user, then
        over users, as design.md#the-cf-side writes ``L_CF``).
      use_bias: learn ``b_u``, ``b_i`` (and use the global mean ``μ`` for ratings).
    """

    name = "mf"
    # one XLA CPU thread (trainer.cpu_threads=auto, jmf/threads.py): the epoch's scan of tiny steps ran
    # slower, and varying from process to process, when XLA spread each step's operations over two cores
    cpu_threads = 1

    def __init__(self, dim: int = 64, loss: str = "mse", epochs: int = 20, batch_size: int = 256,
                 optimizer: str = "sgd", lr: float = 0.01, reg: float = 0.02, bias_reg: float | None = None,
                 init: str = "normal", init_scale: float = 0.1, negatives: int = 1, weighting: str = "pair",
                 use_bias: bool = True):
        if loss not in LOSSES:
            raise ConfigError(f"model.loss: {loss!r} is not one of {LOSSES}")
        if init not in ("normal", "svd"):
            raise ConfigError(f"model.init: {init!r} is not normal|svd")
        if weighting not in ("pair", "user"):
            raise ConfigError(f"model.weighting: {weighting!r} is not pair|user")
        self.dim, self.loss, self.epochs, self.batch_size = dim, loss, epochs, batch_size
        self.optimizer, self.lr, self.reg = optimizer, lr, reg
        self.bias_reg = reg if bias_reg is None else bias_reg
        self.init, self.init_scale, self.negatives = init, init_scale, negatives
        self.weighting, self.use_bias = weighting, use_bias

    # ------------------------------------------------------------------ training
    def init_params(self, split: SplitData, seed: int) -> dict[str, jax.Array]:
        n_users, n_items = split.train.shape
        if self.init == "svd":
            from jmf.models.cf.svd import TruncatedSVD

            svd = TruncatedSVD(self.dim, center=True)
            svd.decompose(split, seed)
            P, Q = jnp.asarray(svd.user_factors), jnp.asarray(svd.item_factors)
        else:
            # the draws are one program; the product stays outside it (fused into the draw, it rounds differently)
            # (on the host: the same float32 products, without a compiled program each)
            scale = np.float32(self.init_scale)
            P, Q = (scale * np.asarray(draw) for draw in _normal_draws(seed, n_users, n_items, self.dim))
        return {"P": P, "Q": Q, "user_bias": np.zeros((n_users, 1), np.float32),
                "item_bias": np.zeros((n_items, 1), np.float32)}

    def finish(self, split: SplitData, result: FitResult) -> dict[str, float]:
        self.params = result.state["params"]
        losses = result.phases["train"].losses
        return {"train/loss": losses[-1] if losses else float("nan"), "train/epochs": float(len(losses))}

    def setup(self, split: SplitData, ctx: RunContext | None = None) -> TrainPlan:
        """The engine, the placed initial state ``{params, opt_state}`` and the one ``train`` phase.

        One engine step per epoch (the epoch is one ``lax.scan``).  ``ctx`` (from ``jmf.run``) adds
        epoch-end checkpoints/resume and logs, and shards each batch over the ``data`` mesh axis;
        with ``ctx.devices=None`` (library use) the fit runs on one device.
        """
        train = split.train.tocoo()
        self.loss = self._requested_loss = getattr(self, "_requested_loss", self.loss)
        if self.loss == "auto":
            self.loss = "bpr" if split.implicit else "mse"
        if train.nnz == 0:
            raise ConfigError(f"{split.data.name}: no CF-side training interactions")
        if self.loss == "mse" and split.implicit:
            log.warning("model.loss=mse on implicit data fits a constant; use bpr or softmax")
        self.global_mean = float(train.data.mean()) if (self.loss == "mse" and self.use_bias) else 0.0
        # Without a device count MF trains on one device: its small-batch, row-sparse scan is
        # communication-bound when sharded over forced CPU devices (4x slower measured here).
        ctx = ctx or RunContext()
        if ctx.devices is None:
            ctx = dataclasses.replace(ctx, devices=1)
        seed = ctx.seed
        engine = self.engine = Engine(ctx, name="mf")
        parallel.check_batch_size(self.batch_size, engine.mesh, "model.batch_size")
        params = self.init_params(split, seed)
        tx = build_optimizer(self.optimizer, self.lr)
        state = {"params": params, "opt_state": {k: tx.init(v) for k, v in params.items()}}
        n_dev = engine.n_devices
        if engine.ctx.shard_tables and any(n % n_dev for n in split.train.shape):
            log.warning("trainer.shard_tables: %s rows do not divide over %d devices; MF tables stay replicated",
                        split.train.shape, n_dev)
        sharding = engine.state_shardings(
            state, lambda path, leaf: leaf.shape[0] in split.train.shape and leaf.shape[0] % n_dev == 0)
        state = engine.put_state(state, sharding)
        user_counts = jnp.asarray(np.bincount(train.row, minlength=split.train.shape[0]).astype(np.float32))
        epoch_fn = self._make_epoch_fn(tx, split.train.shape[1], user_counts)

        def step(state, batch):
            key = jax.random.fold_in(batch["key"], batch["epoch"])        # the epoch's key, as fold_in on the host
            params, opt_state, loss = epoch_fn(state["params"], state["opt_state"],
                                               _epoch_batches(batch["train"], batch["order"], train.nnz), key)
            return {"params": params, "opt_state": opt_state}, {"loss": loss}

        plan = self._epoch_plan(engine, train)
        self.params = state["params"]
        options = _NO_YNN if engine.mesh.devices.flat[0].platform == "cpu" else None
        return TrainPlan(engine, state, [Phase("train", self.epochs, plan,
                                               engine.jit_step(step, sharding, compiler_options=options))])

    def _epoch_plan(self, engine: Engine, train) -> Callable[[int], EpochPlan]:
        """``epoch -> EpochPlan``: one step whose batch is the whole epoch (a scan over ``[n_batches, B]``).

        The training triples go to the devices once; an epoch sends only its order, ``[n_batches, B]``
        int32 row numbers (sharded over ``data`` along B), and the step gathers the batches from them
        (:func:`_epoch_batches`).
        """
        n = train.nnz
        n_batches = -(-n // self.batch_size)
        triples = parallel.put_replicated({"users": np.asarray(train.row, np.int32),      # [n] each
                                           "items": np.asarray(train.col, np.int32),
                                           "values": np.asarray(train.data, np.float32)}, engine.mesh)
        base_key = parallel.put_replicated(jax.random.key(engine.sampling_seed), engine.mesh)

        def plan(epoch: int) -> EpochPlan:
            order = np.zeros(n_batches * self.batch_size, np.int32)  # the ragged last batch: row 0, weight 0
            order[:n] = engine.epoch_rng(0, epoch).permutation(n)
            return EpochPlan(1, lambda i: {"train": triples, "key": base_key,
                                           "order": engine.put_batch(order.reshape(n_batches, self.batch_size), axis=1),
                                           "epoch": parallel.put_replicated(np.int32(epoch), engine.mesh)},
                             examples_per_step=n)
        return plan

    def _make_example_loss(self, user_counts: jax.Array):
        loss_name, reg, bias_reg, mu = self.loss, self.reg, self.bias_reg, self.global_mean
        n_neg, weighting, use_bias = self.negatives, self.weighting, self.use_bias

        def example_loss(rows, batch, neg_items):
            """Loss as a function of the gathered rows only (so gradients are row-sized)."""
            pu, qi, bu, bi = rows["P"], rows["Q"], rows["user_bias"][:, 0], rows["item_bias"][:, 0]
            w = batch["weight"]
            if weighting == "user":
                w = losses.user_mean_weights(batch["users"], w, user_counts)
            bias = (bu + bi) if use_bias else 0.0
            pos = (pu * qi).sum(-1) + bias
            penalty = reg * ((pu ** 2).sum(-1) + (qi ** 2).sum(-1)) + bias_reg * (bu ** 2 + bi ** 2) * use_bias
            if loss_name == "mse":
                main = losses.mse(mu + pos, batch["values"], w)
            else:
                qj = rows["Qneg"].reshape(-1, n_neg, qi.shape[-1])       # [B, N, d]
                bj = rows["item_bias_neg"].reshape(-1, n_neg) * use_bias  # [B, N]
                neg = jnp.einsum("bd,bnd->bn", pu, qj) + bj + (bu[:, None] if use_bias else 0.0)
                penalty = penalty + reg * (qj ** 2).sum((-1, -2)) / n_neg
                fn = losses.bpr if loss_name == "bpr" else losses.sampled_softmax
                main = fn(pos, neg, w)
            return main + losses.weighted_mean(penalty, w)
        return example_loss

    def _make_epoch_fn(self, tx, n_items: int, user_counts: jax.Array, plain_sgd: bool | None = None):
        """``(params, opt_state, batches, key) -> (params, opt_state, mean loss)``; ``plain_sgd`` (default:
        ``mse`` with ``optimizer=sgd``) takes :func:`_sgd_epoch_fn`, the rest the general row-sparse update."""
        loss_name, n_neg = self.loss, self.negatives
        if (self.optimizer == "sgd" and loss_name == "mse") if plain_sgd is None else plain_sgd:
            return _sgd_epoch_fn(self, user_counts)
        example_loss = self._make_example_loss(user_counts)

        def mse_step(carry, batch):
            """One batch of the ``mse`` loss: no negatives, so each table's duplicate rows are grouped
            before the scan (:func:`jmf.optim.first_occurrence`), not by a sort in every step."""
            params, opt_state = carry
            users, items = batch["users"], batch["items"]
            rows = {"P": params["P"][users], "Q": params["Q"][items],
                    "user_bias": params["user_bias"][users], "item_bias": params["item_bias"][items]}
            loss, grads = jax.value_and_grad(example_loss)(rows, batch, None)
            side = {"P": "user", "user_bias": "user", "Q": "item", "item_bias": "item"}
            new_params, new_state = {}, {}
            for name in params:
                new_params[name], new_state[name] = grouped_rows_update(
                    tx, params[name], opt_state[name], batch[f"{side[name]}_group"], batch[f"{side[name]}_target"],
                    grads[name])
            return (new_params, new_state), loss

        def step(carry, batch):
            params, opt_state, key = carry
            key, sub = jax.random.split(key)
            users, items = batch["users"], batch["items"]
            neg_items = jax.random.randint(sub, (users.shape[0] * n_neg,), 0, n_items)
            rows = {"P": params["P"][users], "Q": params["Q"][items],
                    "user_bias": params["user_bias"][users], "item_bias": params["item_bias"][items]}
            if loss_name != "mse":
                rows["Qneg"] = params["Q"][neg_items]
                rows["item_bias_neg"] = params["item_bias"][neg_items][:, 0]
            loss, grads = jax.value_and_grad(example_loss)(rows, batch, neg_items)
            ids = {"P": users, "Q": items, "user_bias": users, "item_bias": items}
            g = dict(grads)
            if loss_name != "mse":
                ids["Q"] = jnp.concatenate([items, neg_items])
                ids["item_bias"] = ids["Q"]
                g["Q"] = jnp.concatenate([grads["Q"], grads["Qneg"]])
                g["item_bias"] = jnp.concatenate([grads["item_bias"], grads["item_bias_neg"][:, None]])
            new_params, new_state = {}, {}
            for name in params:
                new_params[name], new_state[name] = sparse_rows_update(
                    tx, params[name], opt_state[name], ids[name], g[name])
            return (new_params, new_state, key), loss

        def epoch(params, opt_state, batches, key):
            if loss_name == "mse":
                for side, ids, table in (("user", batches["users"], "P"), ("item", batches["items"], "Q")):
                    batches[f"{side}_group"], batches[f"{side}_target"] = first_occurrence(ids, params[table].shape[0])
                (params, opt_state), loss = jax.lax.scan(mse_step, (params, opt_state), batches)
                return params, opt_state, loss.mean()
            (params, opt_state, _), loss = jax.lax.scan(step, (params, opt_state, key), batches)
            return params, opt_state, loss.mean()

        return epoch

    # ------------------------------------------------------------------ artifact (jmf.artifact)
    def fitted_state(self) -> dict:
        return {"params": self.params}

    def load_fitted(self, split: SplitData, saved: dict) -> None:
        from jmf.pytrees import fill

        self.setup(split)                 # the resolved loss and mean, and the tables' shapes
        self.params = fill(self.params, saved["arrays"], prefix="['params']")

    def score_new(self, hist) -> tuple[np.ndarray, np.ndarray]:
        """Fold-in of a new user's CF row: ridge on the ratings with ``b_u`` (mse), else the implicit
        least squares on ``Q`` (:mod:`jmf.models.foldin`)."""
        from jmf.models.foldin import explicit_fold_in, implicit_fold_in, rows_present

        p = {k: np.asarray(v) for k, v in self.params.items()}
        item_bias = p["item_bias"][:, 0] if self.use_bias else np.zeros(len(p["Q"]), np.float32)
        if self.loss == "mse":
            x, _ = explicit_fold_in(p["Q"], item_bias, self.global_mean, hist.cf, self.reg, per_rating=True)
        else:
            x = implicit_fold_in(p["Q"], hist.cf)
        return x @ p["Q"].T + item_bias[None, :], rows_present(hist.cf)

    # ------------------------------------------------------------------ scoring
    def score_tables(self) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        p = self.params
        return p["P"], p["Q"], p["item_bias"][:, 0] if self.use_bias else None

    def score(self, users: jax.Array) -> jax.Array:
        p = self.params
        s = p["P"][users] @ p["Q"].T
        return s + p["item_bias"][:, 0][None, :] if self.use_bias else s

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        p = self.params
        pred = (p["P"][users] * p["Q"][items]).sum(-1)
        if self.use_bias:
            pred = pred + p["user_bias"][users, 0] + p["item_bias"][items, 0]
        return np.asarray(self.global_mean + pred)

    @property
    def user_factors(self) -> np.ndarray:
        return np.asarray(self.params["P"])

    @property
    def item_factors(self) -> np.ndarray:
        return np.asarray(self.params["Q"])


# XLA CPU compiles the row dots and sums of each tiny step into YNNPACK calls, whose call overhead outweighs
# the work at 64 rows (with one thread: the fit's speed-up in benchmarks/first_result.py --ref c327728)
_NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _normal_draws(seed: int, n_users: int, n_items: int, dim: int) -> tuple[jax.Array, jax.Array]:
    """``N(0, 1)`` draws ``[n_users, d]``, ``[n_items, d]`` from ``split(key(seed))`` in one program (op by op,
    the key, the split and the draws were a large part of a short fit's dispatch)."""
    key_u, key_i = jax.random.split(jax.random.key(seed))
    return jax.random.normal(key_u, (n_users, dim)), jax.random.normal(key_i, (n_items, dim))


def _epoch_batches(train: dict, order: jax.Array, n: int) -> dict:
    """The epoch's batches, gathered on the device: ``train`` ``{users, items, values}`` ``[n]`` each,
    ``order`` ``[n_batches, B]`` row numbers (the epoch's permutation, then padding) -> ``{users, items,
    values, weight}`` ``[n_batches, B]`` each; the padding has weight 0."""
    position = jnp.arange(order.size, dtype=jnp.int32).reshape(order.shape)
    return {"users": train["users"][order], "items": train["items"][order], "values": train["values"][order],
            "weight": (position < n).astype(jnp.float32)}


def _sgd_epoch_fn(model: MatrixFactorization, user_counts: jax.Array):
    """The ``mse`` epoch for plain SGD: ``U = [P | b_u]`` and ``I = [Q | b_i]`` are each one table in the scan,
    and a step is two gathers, the loss and its gradient written out (:func:`_mse_grads`), and two
    scatter-adds of ``-lr * grad``.  Repeated rows add up, as SGD's update of their summed gradient does
    (only the rounding order differs from grouping the repeats first, which costs 2.3x the step here).
    ``benchmarks/first_result.py`` times the whole fit."""
    lr = model.lr

    def step(carry, batch):
        U, I = carry
        users, items = batch["users"], batch["items"]
        loss, g_u, g_i = _mse_grads(model, U[users], I[items], batch, user_counts)
        return (U.at[users].add(-lr * g_u), I.at[items].add(-lr * g_i)), loss

    def epoch(params, opt_state, batches, key):
        U = jnp.concatenate([params["P"], params["user_bias"]], 1)
        I = jnp.concatenate([params["Q"], params["item_bias"]], 1)
        (U, I), loss = jax.lax.scan(step, (U, I), batches)
        dim = params["P"].shape[1]
        return {"P": U[:, :dim], "Q": I[:, :dim], "user_bias": U[:, dim:], "item_bias": I[:, dim:]}, opt_state, \
            loss.mean()

    return epoch


def _mse_grads(model: MatrixFactorization, u_rows: jax.Array, i_rows: jax.Array, batch: dict,
               user_counts: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ``mse`` example loss and its gradient w.r.t. the gathered rows ``[B, d+1]`` of ``[P | b_u]`` and
    ``[Q | b_i]``, written out: with ``e = μ + p·q + b_u + b_i - r`` and ``W = Σw``, ``∂/∂p = (2we/W) q +
    (2w/W) reg p``, ``∂/∂b_u = (2we/W) + (2w/W) bias_reg b_u`` (biases only with ``use_bias``)."""
    dim, use_bias = u_rows.shape[1] - 1, float(model.use_bias)
    w = batch["weight"]
    if model.weighting == "user":
        w = losses.user_mean_weights(batch["users"], w, user_counts)
    total = jnp.maximum(w.sum(), 1e-12)
    p, q, b_u, b_i = u_rows[:, :dim], i_rows[:, :dim], u_rows[:, dim], i_rows[:, dim]
    bias_col = jnp.arange(dim + 1) == dim
    decay = jnp.where(bias_col, model.bias_reg * use_bias, model.reg)       # [d+1]
    err = model.global_mean + (p * q).sum(-1) + use_bias * (b_u + b_i) - batch["values"]
    penalty = (decay * (u_rows ** 2 + i_rows ** 2)).sum(-1)
    loss = (w * (err ** 2 + penalty)).sum() / total
    c, a = (2.0 * w * err / total)[:, None], (2.0 * w / total)[:, None]
    g_u = c * jnp.where(bias_col, use_bias, i_rows) + a * decay * u_rows
    g_i = c * jnp.where(bias_col, use_bias, u_rows) + a * decay * i_rows
    return loss, g_u, g_i
