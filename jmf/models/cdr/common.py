"""What the cross-domain baselines share: side checks, per-side MF, validation-based selection on
the training engine, and scoring from a composed user table (own ``P_u`` for warm users,
transferred for cold ones).

Every training stage of CMF, EMCDR and PTUPCDR runs on :class:`~jmf.train.engine.Engine`
through :func:`train_passes`: one engine step is one pass over the stage's data (a
``lax.scan`` in one ``jax.jit`` call, the batch axis sharded over the ``data`` mesh axis), an
engine epoch is ``eval_every`` passes followed by a validation, and the engine brings
checkpoints, exact resume, early stopping on the best validated state, NaN checks, metric
logs and the bound on steps in flight.  A model with several stages gives each its own
folder under the run directory (``tables/``, ``mapping/``, ``meta/``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jmf.data.split import SplitData, dl_side_missing
from jmf.errors import ConfigError
from jmf.evaluate import registry
from jmf.evaluate.validator import Validator
from jmf.models.base import RunContext, StagedModel

log = logging.getLogger(__name__)

LOSSES = ("auto", "mse", "bpr", "softmax")


def check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ConfigError(f"model.loss: {loss!r} is not one of {LOSSES}")


def check_positive(**knobs: int) -> None:
    """``model.<name>`` must be >= 1 (sizes, counts)."""
    for name, value in knobs.items():
        if value < 1:
            raise ConfigError(f"model.{name}: {value} must be >= 1")


def resolve_loss(loss: str, split: SplitData) -> str:
    """``auto`` -> ``mse`` on ratings, ``bpr`` on implicit data (as :class:`MatrixFactorization`)."""
    if loss == "auto":
        return "bpr" if split.implicit else "mse"
    if loss == "mse" and split.implicit:
        log.warning("model.loss=mse on implicit data fits a constant; use bpr or softmax")
    return loss


def require_dl_side(split: SplitData, name: str) -> None:
    """Raise unless the split has DL-side (source) interactions."""
    if len(split.dl_items) == 0 or split.dl.nnz == 0:
        raise ConfigError(dl_side_missing(split.data, split.partition, f"model={name}"))
    if split.train.nnz == 0:
        raise ConfigError(f"model={name}: {split.data.name} has no CF-side training interactions")


def overlap_users(split: SplitData, name: str) -> np.ndarray:
    """``[N]`` int32 users with CF-side training rows and DL-side rows (the mapping's training set)."""
    users = np.flatnonzero((np.diff(split.train.indptr) > 0) & (np.diff(split.dl.indptr) > 0)).astype(np.int32)
    if len(users) == 0:
        raise ConfigError(f"model={name}: no user has both CF-side training rows and DL-side rows, so there is "
                         "nothing to fit the cross-side mapping on (check partition.k / partition.cf_categories "
                         "and split.beta)")
    return users


def cold_users(split: SplitData) -> np.ndarray:
    """``[M]`` int32 users with DL-side rows but no CF-side training rows (scored by transfer)."""
    return np.flatnonzero((np.diff(split.train.indptr) == 0) & (np.diff(split.dl.indptr) > 0)).astype(np.int32)


def transfer_table(own: np.ndarray, own_bias: np.ndarray, users: np.ndarray,
                   map_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
                   chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Replace the rows ``users`` of the user table by their transferred factors.

    Args:
      own: ``[U, d]`` target-side factors ``P_u``; own_bias: ``[U]`` target-side user biases.
      users: ``[M]`` users to transfer (the cold ones).
      map_fn: jitted ``[C] users -> ([C, d] P̂_u, [C] b̂_u)``, called on fixed-size padded chunks.

    Returns:
      ``([U, d], [U])`` host arrays.
    """
    table, bias = np.array(own, np.float32), np.array(own_bias, np.float32)
    if len(users) == 0:
        return table, bias
    chunk = min(chunk, 1 << int(len(users) - 1).bit_length())
    for start in range(0, len(users), chunk):
        part = users[start:start + chunk]
        padded = np.zeros(chunk, np.int32)
        padded[:len(part)] = part
        vec, b = jax.device_get(map_fn(jnp.asarray(padded)))
        table[part], bias[part] = vec[:len(part)], b[:len(part)]
    return table, bias


@jax.jit
def _scores(user_table: jax.Array, item_table: jax.Array, item_bias: jax.Array, users: jax.Array) -> jax.Array:
    return user_table[users] @ item_table.T + item_bias[None, :]


class FactorScorer(StagedModel):
    """``score``/``predict`` from the composed tables ``self.tables``.

    ``tables``: ``users [U, d]`` (``P_u`` for warm users, ``P̂_u`` for cold ones), ``user_bias [U]``,
    ``items [I_CF, d]`` (``Q``), ``item_bias [I_CF]``; ``self.mean`` is the target rating mean ``μ``.
    """

    tables: dict[str, jax.Array]
    mean: float = 0.0
    fitted = ("tables", "mean")

    def set_tables(self, users, user_bias, items, item_bias, mean: float) -> None:
        self.tables = {"users": jnp.asarray(users, jnp.float32), "user_bias": jnp.asarray(user_bias, jnp.float32),
                       "items": jnp.asarray(items, jnp.float32), "item_bias": jnp.asarray(item_bias, jnp.float32)}
        self.mean = float(mean)

    def score_tables(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        t = self.tables
        return t["users"], t["items"], t["item_bias"]

    def score(self, users: jax.Array) -> jax.Array:
        """``[B]`` users -> ``[B, I_CF]`` scores ``P_u·Q_i + b_i``."""
        t = self.tables
        return _scores(t["users"], t["items"], t["item_bias"], jnp.asarray(users))

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Paired ``[N]`` users and CF-side items -> ``[N]`` ratings ``μ + b_u + b_i + P_u·Q_i``."""
        t = {k: np.asarray(v) for k, v in self.tables.items()}
        dot = np.einsum("nd,nd->n", t["users"][users], t["items"][items])
        return self.mean + t["user_bias"][users] + t["item_bias"][items] + dot

    @property
    def user_factors(self) -> np.ndarray:
        return np.asarray(self.tables["users"])

    @property
    def item_factors(self) -> np.ndarray:
        return np.asarray(self.tables["items"])


class TwoStageTransfer(FactorScorer):
    """Shared by EMCDR and PTUPCDR: per-side MF (stage 1), then a transfer fitted with validation.

    Stage 1 trains two independent biased MFs, on the CF side and on the DL side, in one compiled epoch
    (:func:`~jmf.models.cdr.tables.fit_tables` with ``shared_users=False``): ``self.target`` and
    ``self.source`` hold ``P [U, d]``, ``user_bias [U]``, ``Q``, ``item_bias`` and ``mean``.
    """

    name = "transfer"
    fitted = ("tables", "mean", "source", "target", "kind")

    def source_fold_in(self, hist) -> tuple[np.ndarray, np.ndarray]:
        """New users' source-side factors and biases, folded in on the source MF's item tables from their
        DL-side rows (ridge on ratings with ``b_u``, else the implicit least squares; :mod:`jmf.models.foldin`)."""
        from jmf.models.foldin import explicit_fold_in, implicit_fold_in

        s = {k: np.asarray(v) for k, v in self.source.items()}
        if self.kind == "mse":
            return explicit_fold_in(s["Q"], s["item_bias"], s["mean"], hist.dl, self.reg, per_rating=True)
        return implicit_fold_in(s["Q"], hist.dl), np.zeros(len(hist.users), np.float32)

    def _init_common(self, dim: int, loss: str, epochs: int, batch_size: int, optimizer: str, lr: float,
                     reg: float, init_scale: float, negatives: int, patience: int, eval_every: int, monitor: str,
                     eval_batch_size: int) -> None:
        check_loss(loss)
        registry.check_monitor(monitor, auto=True)
        check_positive(dim=dim, batch_size=batch_size, negatives=negatives, eval_every=eval_every)
        self.dim, self.loss, self.epochs, self.batch_size = dim, loss, epochs, batch_size
        self.optimizer, self.lr, self.reg, self.init_scale, self.negatives = optimizer, lr, reg, init_scale, negatives
        self.patience, self.eval_every, self.monitor = patience, eval_every, monitor
        self.eval_batch_size = eval_batch_size

    def _fit_sides(self, split: SplitData, seed: int, ctx: RunContext | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Check the split, train both sides' MF (in ``ctx``'s ``tables/``); returns (overlapping, cold users)."""
        from jmf.models.cdr.tables import TableConfig, fit_tables

        require_dl_side(split, self.name)
        self.validator = Validator.of(ctx, split, self.eval_batch_size)
        self.kind = resolve_loss(self.loss, split)
        self.monitor_name = registry.resolve_monitor(self.monitor, self.kind)
        overlap = overlap_users(split, self.name)
        cfg = TableConfig(dim=self.dim, kind=self.kind, epochs=self.epochs, batch_size=self.batch_size,
                          optimizer=self.optimizer, lr=self.lr, reg=self.reg, bias_reg=self.reg,
                          init_scale=self.init_scale, negatives=self.negatives)
        tables = fit_tables(split, cfg, shared_users=False, seed=seed, model=self.name, ctx=ctx, folder="tables")
        self.target, self.source = tables.side("target"), tables.side("source")
        self.tables_engine = tables.engine
        log.info("%s: per-side MF loss %.4f; %d overlapping users", self.name, tables.loss, len(overlap))
        return overlap, cold_users(split)

    def _publish(self, cold: np.ndarray, map_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]]) -> None:
        """Compose the user table: ``P_t`` (own) for everyone, the transferred factors for ``cold``."""
        t = self.target
        users, bias = transfer_table(np.asarray(t["P"]), np.asarray(t["user_bias"]), cold, map_fn)
        self.set_tables(users, bias, t["Q"], t["item_bias"], t["mean"])
