"""What the graph models share: triple sampling, validation with early stopping on the engine, and
scoring from the final embeddings.

A graph model encodes the *whole* graph at every step (the authors' code does too: every user and
item embedding moves at every step), so its parameters are dense pytrees updated by a dense optax
optimiser; batches are index triples.  :class:`GraphModel` is an :class:`~jmf.models.base.EngineModel`:
subclasses give ``init_params``, ``loss`` (one step's objective) and ``embed`` (the final user
embeddings and the CF-side item embeddings, in evaluation mode).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from jmf.data.split import SplitData
from jmf.models.base import EngineModel, EpochPlan, Phase, RunContext, TrainPlan
from jmf.models.graph.tables import TablesModel, _scores
from jmf.train.plan import Selection
from jmf.train import parallel
from jmf.train.engine import Engine, FitResult
from jmf.errors import ConfigError
from jmf.evaluate import registry
from jmf.evaluate.protocols import evaluate_split
from jmf.evaluate.validator import Validator

log = logging.getLogger(__name__)


class Triples:
    """Uniform ``(user, positive, negative)`` draws from one side's training matrix ``[U, I]``.

    Negatives are uniform over the side's items, redrawn (``retries`` times) when they are one of the
    user's training items, as LightGCN, DisenCDR and CDRIB sample them.
    """

    def __init__(self, matrix: sp.csr_matrix, retries: int = 5):
        coo = sp.csr_matrix(matrix).tocoo()
        order = np.lexsort((coo.col, coo.row))
        self.users, self.items = coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)
        self.n_items = matrix.shape[1]
        self.keys = self.users * self.n_items + self.items           # sorted
        self.retries = retries
        self.csr = sp.csr_matrix(matrix)

    def __len__(self) -> int:
        return len(self.users)

    def negatives(self, users: np.ndarray, shape: tuple, rng: np.random.Generator) -> np.ndarray:
        """``shape`` uniform items (``shape[0] == len(users)``) that are, after retries, not the user's."""
        neg = rng.integers(0, self.n_items, shape)
        for _ in range(self.retries):
            keys = users.reshape(-1, *([1] * (len(shape) - 1))) * self.n_items + neg
            pos = np.searchsorted(self.keys, keys)
            hit = self.keys[np.minimum(pos, len(self.keys) - 1)] == keys
            if not hit.any():
                break
            neg = np.where(hit, rng.integers(0, self.n_items, shape), neg)
        return neg

    def other_positive(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform training item of each user (users without any get item 0 and weight 0 upstream)."""
        start, degree = self.csr.indptr[users], np.diff(self.csr.indptr)[users]
        pick = start + np.floor(rng.random(len(users)) * np.maximum(degree, 1)).astype(np.int64)
        return np.where(degree > 0, self.csr.indices[np.minimum(pick, max(self.csr.nnz - 1, 0))], 0)


class GraphModel(EngineModel):
    """Base of the graph models (see the module docstring).

    Args (shared by every graph model):
      dim: embedding size.  epochs: passes over the training interactions.  batch_size: triples per step.
      lr: Adam learning rate.  weight_decay: coupled L2 added to the gradients (``torch.optim.Adam``'s).
      patience: validations without improvement before stopping (0: run every epoch).
      eval_every: epochs between validations (the best validated epoch is kept).
      monitor: validation ranking metric (``ndcg@10``, ``hr@10``, ``mrr``...).
      eval_batch_size: users per validation batch.
    """

    name = "graph"
    rates = False       # ranking models: the evaluators skip RMSE/MAE
    adam_state = "global"   # or "first_gradient": torch's per-parameter Adam state (see optimizer())
    matmul_dtype = "float32"    # or "bfloat16" where the model's encoders take it (dense())

    def _init_base(self, dim: int, epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int,
                   eval_every: int, monitor: str, eval_batch_size: int) -> None:
        for key, value in dict(dim=dim, batch_size=batch_size, eval_every=eval_every).items():
            if value < 1:
                raise ConfigError(f"model.{key}: {value} must be >= 1")
        if lr <= 0 or weight_decay < 0:
            raise ConfigError(f"model.lr / model.weight_decay: {lr} / {weight_decay} must be > 0 / >= 0")
        registry.check_monitor(monitor, ratings=False)
        self.dim, self.epochs, self.batch_size, self.lr, self.weight_decay = dim, epochs, batch_size, lr, weight_decay
        self.patience, self.eval_every, self.monitor = patience, eval_every, monitor
        self.eval_batch_size = eval_batch_size

    # --------------------------------------------------------------- what a subclass gives
    def prepare(self, split: SplitData) -> dict:
        """Host-side preparation; returns the device arrays every step reads (graphs, ...)."""
        raise NotImplementedError

    def init_params(self, split: SplitData, key: jax.Array) -> dict:
        raise NotImplementedError

    def loss(self, params: dict, data: dict, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]:
        """One step's objective and its named parts (training mode: dropout, sampling).  ``batch`` holds
        one step of :meth:`sample`'s arrays and ``step`` (the global step, a replicated int32 scalar)."""
        raise NotImplementedError

    def embed(self, params: dict, data: dict) -> tuple[jax.Array, jax.Array]:
        """Evaluation mode: ``([U, d'] user rows for ranking CF-side items, [I_CF, d'] CF-side item rows)``."""
        raise NotImplementedError

    # a model that trains the DL side as a second target sets ``trains_both_sides`` and gives ``embed_dl``
    trains_both_sides = False
    selects_on_test = True      # eval.select_on_test: the test figures at each validation (see setup)

    def embed_dl(self, params: dict, data: dict) -> tuple[jax.Array, jax.Array]:
        """Evaluation mode, the DL side: ``([U, d'] user rows for ranking DL-side items, [I_DL, d'] DL-side
        item rows)``: with ``split.dl_folds``, the run validates (its own best epoch) and tests the DL side too."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n_steps: int, epoch: int) -> dict[str, np.ndarray]:
        """``n_steps`` batches of arrays ``[n_steps, B, ...]`` for model epoch ``epoch`` (each batch's
        ``B`` axis is sharded over the devices); draw everything from ``rng``."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    # --------------------------------------------------------------- the engine hand-off
    def setup(self, split: SplitData, ctx: RunContext | None = None) -> TrainPlan:
        if split.train.nnz == 0:
            raise ConfigError(f"model={self.name}: {split.data.name} has no CF-side training interactions")
        ctx = ctx or RunContext()
        self.validator = Validator.of(ctx, split, self.eval_batch_size)
        self.dl_validator = None
        if split.has_dl_folds:
            if not self.trains_both_sides:
                raise ConfigError(f"split.dl_folds=true: model={self.name} does not rank the DL side's items "
                                  "(a model that trains both sides does: disencdr, cdrib, bitgcf)")
            self.dl_validator = Validator.of(ctx, split.mirrored(), self.eval_batch_size)
        engine = self.engine = Engine(ctx, name=self.name)
        parallel.check_batch_size(self.batch_size, engine.mesh, "model.batch_size")
        self.split = split
        data = self.prepare(split)
        self.data = jax.device_put(data, _replicated(engine))
        params = self.init_params(split, jax.random.key(ctx.seed))
        tx = self.optimizer()
        state = {"params": params, "opt_state": tx.init(params), "key": jax.random.key(engine.sampling_seed)}
        sharding = engine.state_shardings(state)
        state = engine.put_state(state, sharding)

        def step(state, batch, data):
            key, sub = jax.random.split(jax.random.fold_in(state["key"], batch["step"]))
            with matmul_dtype(self.matmul_dtype):
                (loss, parts), grads = jax.value_and_grad(self.loss, has_aux=True)(state["params"], data, batch, sub)
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            return ({"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
                     "key": state["key"]}, {"loss": loss, **parts})

        jitted = engine.jit_step(step, sharding)
        n_steps = self.steps_per_epoch()

        def plan(epoch: int) -> EpochPlan:
            batches = self.sample(engine.epoch_rng(0, epoch), n_steps, epoch)
            first = epoch * n_steps
            return EpochPlan(n_steps, lambda i: {**engine.put_batch({k: v[i] for k, v in batches.items()}),
                                                 "step": jax.device_put(np.int32(first + i), _replicated(engine))},
                             examples_per_step=self.batch_size)

        def embed(params, data, side="cf"):
            with matmul_dtype(self.matmul_dtype):
                return self.embed(params, data) if side == "cf" else self.embed_dl(params, data)
        self._embed = jax.jit(embed, static_argnames="side")
        self.params = self.dl_params = state["params"]
        # an engine epoch is ``eval_every`` model epochs, validated once at its end
        engine_plan = _every(plan, self.eval_every, self.epochs) if self.eval_every > 1 else plan
        phase = Phase("train", -(-self.epochs // self.eval_every), engine_plan, lambda s, b: jitted(s, b, self.data),
                      validate=self._validate if self.validator.has_data else None, patience=self.patience,
                      metric=self.monitor, mode=Validator.mode(self.monitor), selections=self._selections(ctx))
        return TrainPlan(engine, state, [phase])

    def _selections(self, ctx: RunContext) -> tuple[Selection, ...]:
        """The phase's further selections: the DL side's own best epoch (``split.dl_folds``), and the test
        figures of each validated epoch, the best kept (``eval.select_on_test``: the authors' selection)."""
        out = ()
        if self.dl_validator is not None and self.dl_validator.has_data:
            out = (Selection("dl", self._validate_dl, self.mode),)
        self._test_cfg = None
        if ctx.eval_config is not None and ctx.eval_config.select_on_test:
            self._test_cfg = dataclasses.replace(ctx.eval_config, ratings=False, test_sampling_seeds=(),
                                                 test_full=False, batch_size=self.eval_batch_size)
            out += (Selection("test", self._test_figures, self.mode, keep_state=False),)
            if self.dl_validator is not None:
                out += (Selection("dl_test", lambda s: self._test_figures(s, dl=True), self.mode, keep_state=False),)
        return out

    def optimizer(self) -> optax.GradientTransformation:
        """Adam with coupled L2 (``torch.optim.Adam``'s ``weight_decay``).  ``adam_state: first_gradient`` starts
        each parameter's state at its first gradient, as torch does; ``global``: ``optax.adam``'s one step
        count for every parameter."""
        from jmf.optim import adam_from_first_gradient

        if self.adam_state == "first_gradient":
            return adam_from_first_gradient(self.lr, self.weight_decay)
        adam = optax.adam(self.lr)
        return optax.chain(optax.add_decayed_weights(self.weight_decay), adam) if self.weight_decay else adam

    def finish(self, split: SplitData, result: FitResult) -> dict[str, float]:
        state = result.best_state if result.best_state is not None else result.state
        self._publish(state["params"])
        summary = result.phases["train"]
        info = {"train/loss": summary.losses[-1] if summary.losses else math.nan,
                "train/epochs": float(len(summary.losses) * self.eval_every)}
        if summary.best is not None:
            info[f"train/best_valid_{self.monitor}"] = summary.best if self.mode == "max" else -summary.best
        if self.dl_validator is not None:
            # the DL side's own best epoch (the last one when it has no validation rows)
            self.dl_params = result.selected.get("dl", result.state)["params"]
            book = summary.selected.get("dl")
            if book and book["best"] is not None:
                info[f"train/dl/best_valid_{self.monitor}"] = book["best"] if self.mode == "max" else -book["best"]
                info["train/dl/best_epoch"] = float((book["best_epoch"] + 1) * self.eval_every)
        for name, prefix in (("test", ""), ("dl_test", "dl/")):
            book = summary.selected.get(name)
            if book and book["best"] is not None:
                info.update({f"{prefix}test_selected/{k}": v for k, v in book["best_metrics"].items()})
                info[f"{prefix}test_selected/epoch"] = float((book["best_epoch"] + 1) * self.eval_every)
        return info

    def _test_figures(self, state, dl: bool = False) -> tuple[float, dict[str, float]]:
        """The test fold's figures of this epoch (``eval.select_on_test``) and the monitor's among them."""
        if dl:
            model, split = self._dl_model(state["params"]), self.split.mirrored()
        else:
            self._publish(state["params"])
            model, split = self, self.split
        out = evaluate_split(model, split, "test", self._test_cfg)
        if self.monitor not in out:
            raise ConfigError(f"model.monitor: {self.monitor!r} not among the test fold's metrics {sorted(out)} "
                              "(eval.select_on_test selects on it)")
        return out[self.monitor], out

    @property
    def mode(self) -> str:
        return Validator.mode(self.monitor)

    def fitted_state(self) -> dict:
        """The CF side's best parameters (and the DL side's, of its own best epoch, with ``split.dl_folds``)."""
        return {"params": self.params, **({"dl_params": self.dl_params} if self.dl_validator is not None else {})}

    def load_fitted(self, split: SplitData, saved: dict) -> None:
        from jmf.pytrees import fill

        self.setup(split)                 # graphs and shapes from the split
        self._publish(fill(self.params, saved["arrays"], prefix="['params']"))
        if self.dl_validator is not None:
            self.dl_params = fill(self.dl_params, saved["arrays"], prefix="['dl_params']")

    def fold_tables(self) -> tuple[jax.Array, jax.Array | None]:
        """The item tables a new user is folded in against: ``(CF-side items [I_CF, d'], DL-side items or
    None)``."""
        return self.item_table, None

    def score_new(self, hist) -> tuple[np.ndarray, np.ndarray]:
        """Fold-in: the implicit least-squares user vector on the final item embeddings (CF-side rows, and
        DL-side rows where the model embeds DL-side items in the same space), scored like a known user."""
        from jmf.models.foldin import implicit_fold_in, rows_present

        cf_table, dl_table = (None if t is None else np.asarray(t) for t in self.fold_tables())
        rows, table = hist.cf, cf_table
        if dl_table is not None:
            rows, table = sp.hstack([hist.cf, hist.dl]).tocsr(), np.concatenate([cf_table, dl_table])
        x = implicit_fold_in(table, rows)
        return x @ cf_table.T, rows_present(rows)

    def _publish(self, params) -> None:
        self.params = params
        self.user_table, self.item_table = self._embed(params, self.data)

    def _validate(self, state) -> float:
        self._publish(state["params"])
        return self.validator(self, self.monitor)

    def _validate_dl(self, state) -> float:
        return self.dl_validator(self._dl_model(state["params"]), self.monitor)

    def _dl_model(self, params) -> TablesModel:
        return TablesModel(*self._embed(params, self.data, side="dl"), self.name)

    def dl_view(self) -> TablesModel | None:
        """The fitted model on the DL side (users ranking DL-side items, at the DL side's own best epoch), for
        :func:`jmf.pipeline.evaluate` on ``split.mirrored()``; ``None`` without ``split.dl_folds``."""
        if getattr(self, "dl_validator", None) is None:
            return None
        return self._dl_model(self.dl_params)

    # --------------------------------------------------------------- inference
    def score_tables(self) -> tuple[jax.Array, jax.Array, None]:
        return self.user_table, self.item_table, None

    def score(self, users: jax.Array) -> jax.Array:
        """``[B] -> [B, I_CF]``: dot products of the final embeddings."""
        return _scores(self.user_table, self.item_table, jnp.asarray(users))

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise ConfigError(f"model={self.name} ranks items; it has no rating scale (its tables report no RMSE)")


MATMUL_DTYPES = ("float32", "bfloat16")
_MATMUL_DTYPE = contextvars.ContextVar("jmf_graph_matmul_dtype", default="float32")


def check_matmul_dtype(name: str) -> str:
    """``model.matmul_dtype``: ``name`` if it is one of :data:`MATMUL_DTYPES`, else a clear error."""
    if name not in MATMUL_DTYPES:
        raise ConfigError(f"model.matmul_dtype: {name!r} is not one of {'|'.join(MATMUL_DTYPES)}")
    return name


@contextlib.contextmanager
def matmul_dtype(name: str):
    """Trace the graph encoders' dense products (:func:`dense`) in ``name`` (``float32`` or ``bfloat16``)."""
    check_matmul_dtype(name)
    token = _MATMUL_DTYPE.set(name)
    try:
        yield
    finally:
        _MATMUL_DTYPE.reset(token)


def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w``; under ``matmul_dtype("bfloat16")`` both rounded to bfloat16 and accumulated in float32
    (``preferred_element_type``): the products run at the bfloat16 rate where the hardware has one (CPUs with
    AVX512_BF16 or AMX, GPUs, TPUs); sparse propagation and everything elementwise stay float32."""
    if _MATMUL_DTYPE.get() == "float32":
        return x @ w
    return jnp.dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout whose mask is a hash of (a random seed from ``key``, element index).

    ``jax.random.bernoulli`` over every node's embedding (60k x 64, six times a step) was two thirds of a
    BiTGCF step on the CPU (threefry: ~70 ms per call); the murmur3 finaliser of the element index,
    seeded per call, is a few integer ops per element and as good a coin for dropout.
    """
    seed = jax.random.bits(key, (), jnp.uint32)
    h = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape) * jnp.uint32(0x9E3779B1) + seed
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    keep = h < jnp.uint32(min(int(round((1.0 - rate) * 2 ** 32)), 2 ** 32 - 1))
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _replicated(engine: Engine):
    return parallel.replicated(engine.mesh)


def _every(plan, every: int, epochs: int):
    """An engine epoch of ``every`` model epochs (validated once, at its end); the last may be shorter."""
    def merged(epoch: int) -> EpochPlan:
        parts = [plan(e) for e in range(epoch * every, min((epoch + 1) * every, epochs))]
        offsets = np.cumsum([0] + [p.n_steps for p in parts])

        def batch(i: int) -> Any:
            j = int(np.searchsorted(offsets, i, side="right") - 1)
            return parts[j].batch(i - offsets[j])
        return EpochPlan(int(offsets[-1]), batch, parts[0].examples_per_step)
    return merged
