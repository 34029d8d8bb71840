"""EMCDR (Man et al., IJCAI 2017): embed each side, then map source factors to target factors.

1. **Embedding**: biased MF on the DL side (source) gives ``P_s``, ``b_s``; on the CF side (target) it gives
   ``P_t``, ``b_t``, ``Q_t``, ``b_i`` (two independent MFs, :mod:`jmf.models.cdr.tables`).
2. **Mapping**: an MLP ``f`` (linear with ``map_hidden: []``) fitted on the overlapping users
   (CF-side training rows and DL-side rows) by minibatch Adam on ``‖f(P_s,u) − P_t,u‖²``.  On ratings the
   user bias rides along (``f([P_s,u, b_s,u]) ≈ [P_t,u, b_t,u]``) so a cold user's rating scale
   transfers too.  The mapping epoch kept is the best on the valid fold.  Both stages run on the
   training engine, in the run directory's ``tables/`` and ``mapping/``.
3. **Inference**: warm users keep ``P_t,u``; cold-start users (DL-side rows, no CF-side training rows) get
   ``P̂_u = f(P_s,u)``; ``s_ui = P̂_u·Q_i + b_i``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jmf import losses
from jmf.data.split import SplitData
from jmf.models.base import RunContext, StageResult, stage_engine, train_passes
from jmf.models.cdr.common import TwoStageTransfer, check_positive
from jmf.models.heads.mlp import MLPHead
from jmf.train import parallel
from jmf.errors import ConfigError

log = logging.getLogger(__name__)


class FactorMapping:
    """``f: R^{d_in} -> R^{d_out}``, an MLP (GELU hidden layers; ``hidden=()`` is affine) fitted on
    paired factor rows by minibatch Adam(W) on the squared error summed over dimensions.

    Args:
      d_in, d_out: factor sizes; hidden: hidden layer sizes.
      lr, weight_decay: AdamW knobs; batch_size: rows per step (sharded over the ``data`` axis).
    """

    def __init__(self, d_in: int, d_out: int, hidden: Sequence[int] = (), lr: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 256, seed: int = 0):
        net = MLPHead(d_in, d_out, hidden=tuple(hidden), rngs=nnx.Rngs(seed))
        self.graphdef, self.params, self.rest = nnx.split(net, nnx.Param, ...)
        self.tx = optax.adamw(lr, weight_decay=weight_decay)
        self.batch_size, self.seed = batch_size, seed
        self.engine = None
        self._apply = jax.jit(functools.partial(_apply, self.graphdef))

    def fit(self, source: jax.Array, target: jax.Array, epochs: int, *, ctx: RunContext | None = None,
            folder: str | None = None, name: str = "mapping", validate=None, monitor: str = "valid",
            patience: int = 0, eval_every: int = 1) -> StageResult:
        """``epochs`` shuffled passes over ``source [N, d_in]`` -> ``target [N, d_out]`` on the engine.

        ``validate()`` (no argument: it reads ``self.params``) runs every ``eval_every`` epochs;
        the best validated parameters are kept.  ``ctx``/``folder``: see :func:`stage_engine`.
        """
        engine = self.engine = stage_engine(ctx, name, self.seed, folder)
        parallel.check_batch_size(self.batch_size, engine.mesh, "model.map_batch_size")
        state = {"params": self.params, "opt_state": self.tx.init(self.params)}
        sharding = engine.state_shardings(state)
        state = engine.put_state(state, sharding)
        data = parallel.put_replicated({"source": jnp.asarray(source), "target": jnp.asarray(target)}, engine.mesh)
        n, B = int(source.shape[0]), self.batch_size
        n_batches = -(-n // B)
        graphdef, tx, rest = self.graphdef, self.tx, self.rest

        def step(state, batch):
            params, opt_state, loss = _mapping_epoch(graphdef, tx, state["params"], state["opt_state"], rest,
                                                     batch["data"]["source"], batch["data"]["target"],
                                                     batch["ids"], batch["weight"])
            return {"params": params, "opt_state": opt_state}, {"loss": loss}

        def batch_of(epoch: int, rng: np.random.Generator) -> dict:
            perm = rng.permutation(n)
            pad = n_batches * B - n  # the ragged last batch: padded rows of weight 0
            ids = np.concatenate([perm, np.zeros(pad, np.int64)]).astype(np.int32).reshape(n_batches, B)
            weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]).reshape(n_batches, B)
            return {"data": data, **engine.put_batch({"ids": ids, "weight": weight}, axis=1)}

        def check(state) -> float:
            self.params = state["params"]
            return validate()

        result = train_passes(engine, name, state, sharding, step, batch_of, passes=epochs, eval_every=eval_every,
                              validate=None if validate is None else check, monitor=monitor, patience=patience,
                              examples_per_pass=n)
        self.params = result.state["params"]
        return result

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, d_in]`` -> ``[B, d_out]``."""
        return self._apply(self.params, self.rest, x)


def _apply(graphdef, params, rest, x):
    return nnx.merge(graphdef, params, rest)(x)


def _mapping_epoch(graphdef, tx, params, opt_state, rest, source, target, ids, weight):
    """One pass: scan the ``[S, B]`` row ids (padding rows have weight 0); the mean loss."""

    def step(carry, xs):
        params, opt_state = carry
        idx, w = xs

        def loss_fn(p):
            pred = nnx.merge(graphdef, p, rest)(source[idx])
            return losses.weighted_mean(((pred - target[idx]) ** 2).sum(-1), w)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), loss = jax.lax.scan(step, (params, opt_state), (ids, weight))
    return params, opt_state, loss.mean()


class EMCDR(TwoStageTransfer):
    """Embedding and mapping.

    Args:
      dim: factor size ``d`` of both sides' MF.
      loss: MF loss: ``auto`` (mse on ratings, bpr on implicit data) | ``mse`` | ``bpr`` | ``softmax``.
      epochs, batch_size, optimizer, lr, reg, init_scale, negatives: per-side MF (both sides alike):
        epochs over the CF-side + DL-side rows, rows per step, row-sparse optax optimiser, per-example L2,
        init std, uniform negatives per positive.
      map_hidden: hidden sizes of the mapping MLP (``[]``: linear mapping).
      map_epochs, map_lr, map_weight_decay, map_batch_size: mapping training (AdamW, overlapping users).
      patience: validations without improvement before the mapping stops (0 = run all map_epochs).
      eval_every: mapping epochs between validations (the best validated mapping is kept).
      monitor: validation metric (``auto``: rmse for mse, ndcg@10 otherwise).
      eval_batch_size: users per validation batch.
    """

    name = "emcdr"

    def __init__(self, dim: int = 32, loss: str = "auto", epochs: int = 20, batch_size: int = 256,
                 optimizer: str = "adam", lr: float = 0.01, reg: float = 0.001, init_scale: float = 0.1,
                 negatives: int = 4, map_hidden: Sequence[int] = (64,), map_epochs: int = 100,
                 map_lr: float = 3e-3, map_weight_decay: float = 0.0, map_batch_size: int = 128,
                 patience: int = 3, eval_every: int = 10, monitor: str = "auto", eval_batch_size: int = 512):
        self._init_common(dim, loss, epochs, batch_size, optimizer, lr, reg, init_scale, negatives, patience,
                          eval_every, monitor, eval_batch_size)
        try:
            self.map_hidden = tuple(int(h) for h in map_hidden)
        except (TypeError, ValueError):
            raise ConfigError(f"model.map_hidden: {map_hidden!r} is not a list of layer sizes") from None
        check_positive(map_batch_size=map_batch_size, **{f"map_hidden[{i}]": h for i, h in enumerate(self.map_hidden)})
        self.map_epochs, self.map_lr, self.map_weight_decay = map_epochs, map_lr, map_weight_decay
        self.map_batch_size = map_batch_size

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        """Both stages on the engine (``ctx`` from ``jmf.run``: checkpoints and resume per stage)."""
        start = time.perf_counter()
        seed = ctx.seed if ctx is not None else 0
        overlap, cold = self._fit_sides(split, seed, ctx)
        src, tgt = self.source, self.target
        with_bias = self.kind == "mse"  # b_u cancels out of ranking losses: nothing to transfer
        x = jnp.concatenate([src["P"], src["user_bias"][:, None]], 1) if with_bias else src["P"]   # [U, d(+1)]
        y = jnp.concatenate([tgt["P"], tgt["user_bias"][:, None]], 1) if with_bias else tgt["P"]   # [U, d(+1)]
        self.mapping = FactorMapping(x.shape[1], y.shape[1], self.map_hidden, self.map_lr, self.map_weight_decay,
                                     self.map_batch_size, seed)

        def check() -> float:
            self._publish_mapped(x, cold)
            return self.validator(self, self.monitor_name)

        result = self.mapping.fit(x[overlap], y[overlap], self.map_epochs, ctx=ctx, folder="mapping",
                                  name="emcdr-mapping", validate=check if self.validator.has_data else None,
                                  monitor=self.monitor_name, patience=self.patience, eval_every=self.eval_every)
        self._publish_mapped(x, cold)
        return {"train/map_loss": result.loss, "train/fit_seconds": time.perf_counter() - start, **result.stats()}

    def extra_state(self) -> dict:
        return {"mapping": {"params": self.mapping.params, "rest": self.mapping.rest}}

    def restored(self, split: SplitData, saved: dict) -> None:
        from jmf.pytrees import fill

        d = self.dim + (self.kind == "mse")
        self.mapping = FactorMapping(d, d, self.map_hidden, self.map_lr, self.map_weight_decay, self.map_batch_size)
        self.mapping.params = fill(self.mapping.params, saved["arrays"], prefix="['mapping']['params']")
        self.mapping.rest = fill(self.mapping.rest, saved["arrays"], prefix="['mapping']['rest']")

    def score_new(self, hist):
        """Through EMCDR's own mapping: source factors folded in from the DL-side rows, mapped to ``P̂_u``."""
        from jmf.models.foldin import rows_present

        p_s, b_s = self.source_fold_in(hist)
        x = np.concatenate([p_s, b_s[:, None]], 1) if self.kind == "mse" else p_s
        p_hat = np.asarray(self.mapping(jnp.asarray(x)))[:, :self.dim]
        t = {k: np.asarray(v) for k, v in self.tables.items()}
        return p_hat @ t["items"].T + t["item_bias"][None, :], rows_present(hist.dl)

    def _publish_mapped(self, x: jax.Array, cold: np.ndarray) -> None:
        m = self.mapping
        self._publish(cold, lambda users: _map_users(m.graphdef, m.params, m.rest, x, users, self.dim))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _map_users(graphdef, params, rest, x, users, dim):
    """``x [U, d(+1)]`` source rows of ``users [C]`` -> (``[C, d]`` P̂_u, ``[C]`` b̂_u; 0 without a bias column)."""
    out = nnx.merge(graphdef, params, rest)(x[users])
    bias = out[:, dim] if out.shape[1] > dim else jnp.zeros(out.shape[0], out.dtype)
    return out[:, :dim], bias
