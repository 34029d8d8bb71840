"""Collective matrix factorisation (Singh & Gordon, KDD 2008): one user factor for both sides.

``r̂_ui = μ_s(i) + b_u + b_i + P_u·Q_i`` where ``Q`` stacks the CF-side (target) items and the
DL-side (source) items, ``μ_s(i)`` is the rating mean of item i's side, and ``P_u``, ``b_u``
are shared.  The loss is ``L_O1 + source_weight · L_O2`` (+ L2 on the touched rows): MSE on
ratings, BPR or sampled softmax on implicit data, with negatives drawn from the positive's own
side (:mod:`jmf.models.cdr.tables`).  A user without CF-side training rows gets ``P_u`` from the DL
side alone, which is how CMF scores cold-start users.  The epoch kept is the best on the valid fold.
Training runs on the engine (:func:`jmf.models.cdr.common.train_passes`).
"""

from __future__ import annotations

import logging
import time

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jmf.data.split import SplitData
from jmf.evaluate import registry
from jmf.evaluate.validator import Validator
from jmf.models.cdr.common import FactorScorer, check_loss, check_positive, require_dl_side, resolve_loss
from jmf.models.cdr.tables import TableConfig, fit_tables
from jmf.models.base import RunContext
from jmf.errors import ConfigError

log = logging.getLogger(__name__)


class CMF(FactorScorer):
    """Collective MF over ``[O1 | O2]`` with shared user factors.

    Args:
      dim: factor size ``d``.
      loss: ``auto`` (mse on ratings, bpr on implicit data) | ``mse`` | ``bpr`` | ``softmax``.
      epochs: passes over the CF-side + DL-side training rows.
      batch_size: examples (rows of either side) per step.
      optimizer, lr: optax optimiser applied row-sparsely.
      reg: L2 weight on the touched rows (per example); bias_reg: on the biases (default ``reg``).
      source_weight: weight of a DL-side example against a CF-side example (CMF's α).
      init_scale: std of the normal initialisation of ``P`` and ``Q``.
      negatives: uniform negatives per positive (``bpr``/``softmax``), from the positive's side.
      patience: validations without improvement before stopping (0 = run all epochs).
      eval_every: epochs between validations (the best validated epoch is kept).
      monitor: validation metric (``auto``: rmse for mse, ndcg@10 otherwise).
      eval_batch_size: users per validation batch.
    """

    def __init__(self, dim: int = 64, loss: str = "auto", epochs: int = 30, batch_size: int = 256,
                 optimizer: str = "adam", lr: float = 0.01, reg: float = 0.001, bias_reg: float | None = None,
                 source_weight: float = 1.0, init_scale: float = 0.1, negatives: int = 4, patience: int = 3,
                 eval_every: int = 1, monitor: str = "auto", eval_batch_size: int = 512):
        check_loss(loss)
        registry.check_monitor(monitor, auto=True)
        if source_weight < 0:
            raise ConfigError(f"model.source_weight: {source_weight} must be >= 0")
        check_positive(dim=dim, batch_size=batch_size, negatives=negatives, eval_every=eval_every)
        self.dim, self.loss, self.epochs, self.batch_size = dim, loss, epochs, batch_size
        self.optimizer, self.lr, self.reg = optimizer, lr, reg
        self.bias_reg = reg if bias_reg is None else bias_reg
        self.source_weight, self.init_scale, self.negatives = source_weight, init_scale, negatives
        self.patience, self.eval_every, self.monitor = patience, eval_every, monitor
        self.eval_batch_size = eval_batch_size

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        """Train on the engine (``ctx`` from ``jmf.run``: checkpoints and resume in the run directory)."""
        require_dl_side(split, "cmf")
        seed = ctx.seed if ctx is not None else 0
        self.validator = Validator.of(ctx, split, self.eval_batch_size)
        start = time.perf_counter()
        self.kind = resolve_loss(self.loss, split)
        monitor = registry.resolve_monitor(self.monitor, self.kind)
        cfg = TableConfig(dim=self.dim, kind=self.kind, epochs=self.epochs, batch_size=self.batch_size,
                          optimizer=self.optimizer, lr=self.lr, reg=self.reg, bias_reg=self.bias_reg,
                          source_weight=self.source_weight, init_scale=self.init_scale, negatives=self.negatives)
        n_target = split.train.shape[1]
        mean = float(split.train.data.mean()) if self.kind == "mse" else 0.0
        self._side_means = [mean, float(split.dl.data.mean()) if self.kind == "mse" and split.dl.nnz else 0.0]

        def check(params: dict) -> float:
            self._publish(params, n_target, mean)
            return self.validator(self, monitor)

        tables = fit_tables(split, cfg, shared_users=True, seed=seed, model="cmf", ctx=ctx,
                            validate=check if self.validator.has_data else None, monitor=monitor, patience=self.patience,
                            eval_every=self.eval_every)
        self.engine = tables.engine
        self._publish(tables.params, n_target, mean)
        return {"train/loss": tables.loss, "train/fit_seconds": time.perf_counter() - start, **tables.stage.stats()}

    fitted = ("tables", "mean", "source_items", "side_means", "kind")

    def _publish(self, params: dict, n_target: int, mean: float) -> None:
        """Expose the CF-side slice of the tables (``P, Q [·, d+1]``, bias last) to :class:`FactorScorer`;
        keep the DL-side item rows for folding new users in."""
        P, Q = jnp.asarray(params["P"]), jnp.asarray(params["Q"])
        self.set_tables(P[:, :-1], P[:, -1], Q[:n_target, :-1], Q[:n_target, -1], mean)
        self.source_items = Q[n_target:]
        self.side_means = jnp.asarray(self._side_means)

    def score_new(self, hist):
        """Fold-in over both sides' items (one user factor): ridge on the ratings against each item's side
        mean (mse), else the implicit least squares; CF-side scores ``x·Q_i + b_i``."""
        from jmf.models.foldin import explicit_fold_in, implicit_fold_in, rows_present

        t = {k: np.asarray(v) for k, v in self.tables.items()}
        source = np.asarray(self.source_items)
        Q = np.concatenate([t["items"], source[:, :-1]])
        rows = sp.hstack([hist.cf, hist.dl]).tocsr()
        if self.kind == "mse":
            bias = np.concatenate([t["item_bias"], source[:, -1]])
            means = np.repeat(np.asarray(self.side_means), [len(t["items"]), len(source)])
            x, _ = explicit_fold_in(Q, bias, means, rows, self.reg, per_rating=True)
        else:
            x = implicit_fold_in(Q, rows)
        return x @ t["items"].T + t["item_bias"][None, :], rows_present(rows)
