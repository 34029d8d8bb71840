"""EMCDR (Man et al., IJCAI 2017): embed each side, then map source factors to target factors.

1. **Embedding**: biased MF on O2 (source) gives ``P_s``, ``b_s``; on O1 (target) it gives
   ``P_t``, ``b_t``, ``Q_t``, ``b_i`` (two independent MFs, :mod:`jmf.models.cdr.tables`).
2. **Mapping**: an MLP ``f`` (linear with ``map_hidden: []``) fitted on the overlapping users
   (O1 training rows and O2 rows) by minibatch Adam on ``‖f(P_s,u) − P_t,u‖²``.  On ratings the
   user bias rides along (``f([P_s,u, b_s,u]) ≈ [P_t,u, b_t,u]``) so a cold user's rating scale
   transfers too.  The mapping epoch kept is the best on the valid fold.
3. **Inference**: warm users keep ``P_t,u``; cold-start users (O2 rows, no O1 training rows) get
   ``P̂_u = f(P_s,u)``; ``s_ui = P̂_u·Q_i + b_i``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jmf import losses
from jmf.data.split import SplitData
from jmf.models.cdr.common import BestKeeper, TwoStageTransfer, check_positive, validate
from jmf.models.heads.mlp import MLPHead

log = logging.getLogger(__name__)


class FactorMapping:
    """``f: R^{d_in} -> R^{d_out}``, an MLP (GELU hidden layers; ``hidden=()`` is affine) fitted on
    paired factor rows by minibatch Adam(W) on the squared error summed over dimensions.

    Args:
      d_in, d_out: factor sizes; hidden: hidden layer sizes.
      lr, weight_decay: AdamW knobs; batch_size: rows per step.
    """

    def __init__(self, d_in: int, d_out: int, hidden: Sequence[int] = (), lr: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 256, seed: int = 0):
        net = MLPHead(d_in, d_out, hidden=tuple(hidden), rngs=nnx.Rngs(seed))
        self.graphdef, self.params, self.rest = nnx.split(net, nnx.Param, ...)
        self.tx = optax.adamw(lr, weight_decay=weight_decay)
        self.opt_state = self.tx.init(self.params)
        self.batch_size, self.seed, self.epochs_done = batch_size, seed, 0
        self._epoch = jax.jit(functools.partial(_mapping_epoch, self.graphdef, self.tx, batch_size),
                              donate_argnums=(0, 1))
        self._apply = jax.jit(functools.partial(_apply, self.graphdef))

    def fit_epoch(self, source: jax.Array, target: jax.Array) -> float:
        """One pass over ``source [N, d_in]`` -> ``target [N, d_out]`` in shuffled minibatches; the mean loss."""
        key = jax.random.fold_in(jax.random.key(self.seed), self.epochs_done)
        self.params, self.opt_state, loss = self._epoch(self.params, self.opt_state, self.rest, source, target, key)
        self.epochs_done += 1
        return float(loss)

    def fit(self, source: jax.Array, target: jax.Array, epochs: int) -> float:
        loss = math.nan
        for _ in range(epochs):
            loss = self.fit_epoch(source, target)
        return loss

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, d_in]`` -> ``[B, d_out]``."""
        return self._apply(self.params, self.rest, x)


def _apply(graphdef, params, rest, x):
    return nnx.merge(graphdef, params, rest)(x)


def _mapping_epoch(graphdef, tx, batch_size, params, opt_state, rest, source, target, key):
    """Shuffle ``N`` rows into ``ceil(N/B)`` batches (the last one padded with weight 0) and scan."""
    n = source.shape[0]
    B = min(batch_size, n)
    n_batches = -(-n // B)
    perm = jax.random.permutation(key, n)
    slots = jnp.arange(n_batches * B)
    ids = perm[slots % n].reshape(n_batches, B)                            # [S, B]
    weight = (slots < n).astype(jnp.float32).reshape(n_batches, B)         # [S, B]

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
        epochs over the O1 + O2 rows, rows per step, row-sparse optax optimiser, per-example L2,
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
            raise ValueError(f"model.map_hidden: {map_hidden!r} is not a list of layer sizes") from None
        check_positive(map_batch_size=map_batch_size, **{f"map_hidden[{i}]": h for i, h in enumerate(self.map_hidden)})
        self.map_epochs, self.map_lr, self.map_weight_decay = map_epochs, map_lr, map_weight_decay
        self.map_batch_size = map_batch_size

    def fit(self, split: SplitData, seed: int = 0) -> dict[str, float]:
        start = time.perf_counter()
        overlap, cold = self._fit_sides(split, seed)
        src, tgt = self.source, self.target
        with_bias = self.kind == "mse"  # b_u cancels out of ranking losses: nothing to transfer
        x = jnp.concatenate([src["P"], src["user_bias"][:, None]], 1) if with_bias else src["P"]   # [U, d(+1)]
        y = jnp.concatenate([tgt["P"], tgt["user_bias"][:, None]], 1) if with_bias else tgt["P"]   # [U, d(+1)]
        self.mapping = FactorMapping(x.shape[1], y.shape[1], self.map_hidden, self.map_lr, self.map_weight_decay,
                                     self.map_batch_size, seed)
        x_fit, y_fit = x[overlap], y[overlap]
        keeper = BestKeeper(self.monitor_name, self.patience)
        loss = math.nan
        for epoch in range(self.map_epochs):
            loss = self.mapping.fit_epoch(x_fit, y_fit)
            if (epoch + 1) % self.eval_every and epoch + 1 < self.map_epochs:
                continue
            self._publish_mapped(x, cold)
            value = validate(self, split, self.monitor_name, self.eval_batch_size)
            log.info("emcdr map epoch %d: factor mse %.4f  valid/%s %s", epoch, loss, self.monitor_name, value)
            if keeper.update(value, self.mapping.params):
                break
        if keeper.state is not None:
            self.mapping.params = jax.device_put(keeper.state)
        self._publish_mapped(x, cold)
        return {"train/map_loss": loss, "train/fit_seconds": time.perf_counter() - start, **keeper.stats()}

    def _publish_mapped(self, x: jax.Array, cold: np.ndarray) -> None:
        m = self.mapping
        self._publish(cold, lambda users: _map_users(m.graphdef, m.params, m.rest, x, users, self.dim))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _map_users(graphdef, params, rest, x, users, dim):
    """``x [U, d(+1)]`` source rows of ``users [C]`` -> (``[C, d]`` P̂_u, ``[C]`` b̂_u; 0 without a bias column)."""
    out = nnx.merge(graphdef, params, rest)(x[users])
    bias = out[:, dim] if out.shape[1] > dim else jnp.zeros(out.shape[0], out.dtype)
    return out[:, :dim], bias
