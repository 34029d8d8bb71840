"""``model=jmf``: the joint cross-category model behind the common CF-model interface.

Schedule (DESIGN 2.4): SVD initialises ``P`` and ``Q`` (closed form) -> ``pretrain_epochs`` of
``L_DL`` alone on O2 -> ``epochs`` of the joint objective, with early stopping on a
validation metric (the best epoch's parameters are kept).  Cold-start users (no CF-side
history) are scored from O2 alone: ``s_ui = P̂_u·Q_i + b_i``; warm users use
``blend·P_u + (1-blend)·P̂_u``.  Ranking can add the interest vector (``interest_score``) and a
cross-category item-neighbourhood term (``neighbour_score``, :func:`neighbour_term`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx

from jmf.data.batches import cf_category_distribution, cf_item_categories, dl_sequences
from jmf.data.split import SplitData
from jmf.models.jmf import JMFNet, LossWeights, encoder_inputs
from jmf.optim import build_optimizer, part_optimizer
from jmf.train import parallel
from jmf.train.engine import Engine, EpochPlan, Phase, RunContext, copy_state
from jmf.train.step import TrainState, init_state, make_train_step

log = logging.getLogger(__name__)


class JMF:
    """The joint model.

    Args:
      encoder: ``encoder(n_items, n_categories, max_len, rngs=...)`` (a Hydra ``_partial_``).
      head: ``head(d_in, d_out, rngs=...)`` (a Hydra ``_partial_``).
      dim: CF factor size ``d``.
      loss: CF loss: ``auto`` (mse on ratings, softmax on implicit), ``mse``, ``bpr``, ``softmax``.
      weights: loss weights ``{cf, dl (α), map (β), transfer (γ), interest (δ), rank (ρ)}``.  ``rank``
        (ratings only) adds ``L_rank``: a sampled softmax over which items a user rates,
        ``p_u·Q_i + r_i`` with its own item bias ``r`` (started at the centred log popularity), for
        ``P_u`` and ``P̂_u``; with ``rank > 0``, ``score`` (the ranking metrics) uses these logits and
        ``predict`` (RMSE/MAE) the rating ``μ + b_u + b_i + p_u·Q_i``.
      epochs, pretrain_epochs: joint and O2-only epochs (an epoch = as many pairs as O1 has training rows).
      batch_size: users per global batch (divided over the devices of the ``data`` mesh axis).
      items_per_user: CF-side items drawn per user and step (``m``): the loss is a mean over a user's
        items, then over users (DESIGN 2.1), and the encoder runs once per user.
      optimizer, lr: dense optax optimiser of the encoder/head; table_optimizer, table_lr: the
        row-sparse optimiser of ``P, Q, b``.
      reg: L2 weight on the touched CF rows.
      negatives: uniform negatives per positive (ranking losses; also the literal head).
      max_len: O2 sequence length ``L``.
      init: ``svd`` or ``normal`` initialisation of ``P, Q``.
      embed_init: ``random``, or ``cooc``: the encoder's O2 item embeddings start as the leading
        factors of the warm users' O2 -> O1 item co-occurrence (:func:`cooccurrence_factors`), so
        an O2 item starts out saying which O1 items go with it.
      bias_init: ``auto`` (``prior`` on ratings, ``zero`` on implicit data), ``prior`` or ``zero``.
        ``prior`` starts the item biases at the popularity baseline: on ratings each item's mean
        deviation shrunk by ``bias_damping`` pseudo-ratings (the ``model=pop`` predictor), on implicit
        data the centred ``log(1 + count)``; ``zero`` starts them at 0.
      bias_damping: the shrinkage of the rating prior (``model=pop``'s ``damping``) and of the O2 offsets.
      user_offset: on ratings, ``b̂_u`` (the user bias predicted from O2) adds ``a·o_u``: ``o_u`` is the
        user's mean O2 residual (each O2 rating minus its item's damped mean), shrunk by
        ``bias_damping`` pseudo-ratings (:func:`o2_user_offsets`), so a user who rates high in the
        other categories is predicted to rate high here; ``a`` is learned, started at the
        least-squares fit of the warm users' O1 residuals (against ``μ + b_i``) on ``o_u``.
      blend: weight of ``P_u`` against ``P̂_u`` for warm users at inference.
      interest_score: weight ``λ`` of the interest vector in ``score`` (the ranking metrics):
        ``s_ui += λ·(log softmax(I_u)[c_i] − log p̄(c_i))``, ``c_i`` the item's CF-side category and ``p̄``
        the warm users' mean training category mix, i.e. ``p(i|u) ∝ p(i|u)·p(c_i|u)/p(c_i)`` with
        ``p(c|u)`` the ``L_interest``-trained ``I_u`` (0: off; a constant when ``K = 1``).
      rank_item_factors: ``shared`` (``L_rank`` and ``score`` use the rating fit's ``Q``) or ``own``
        (ratings with ``weights.rank > 0``: a separate table ``Q^r``, started as a copy of ``Q``, so
        ranking is ``p_u·Q^r_i + r_i`` and only ``predict`` uses ``Q``).
      neighbour_score: weight ``λ_nb`` of the cross-category item-neighbourhood term in ``score`` (the
        neighbourhood half of a hybrid "factorisation meets the neighbourhood" model, Koren 2008):
        ``s_ui += λ_nb·log(ε + n_ui / max_k n_uk)``, ``n_ui = Σ_{j ∈ O2(u)} K_ji / |O2(u)|`` with ``K`` the
        O2 -> O1 item kernel of the warm users' *training* rows (:func:`neighbour_kernel`), ``ε = 1e-3``.
        It carries item-level co-occurrence that a ``dim``-rank map smooths away.  A list of weights is
        a choice made on validation: the epochs are validated with the first, then every weight is
        scored on the validation fold by the ranking metric (``rank_monitor``, or ``monitor`` when it
        ranks) and the best is kept (``train/neighbour_score``).  0 (default): off.
      neighbour_kernel: ``count`` (``K_ji`` = warm users holding O2 item ``j`` and O1 item ``i``) or
        ``conditional`` (that count over the warm holders of ``j``: ``p(i|j)``).
      rank_factors: whether ``P̂_u·Q_i`` (``P_u`` blended in for warm users) enters ``score``; ``false``
        ranks by the item biases (``r_i`` with ``L_rank``) plus the interest term alone -- the
        category-level transfer without the item-level one (``predict`` is unchanged).
      patience: epochs without validation improvement before stopping (0 = never stop early).
      monitor: validation metric for early stopping (``auto``: rmse on ratings, ndcg@10 else).
      rank_monitor: ``null`` or a ranking metric (e.g. ``ndcg@10``) for a model that both rates and
        ranks: each epoch also validates it, and ``score`` uses the state of the epoch where it was
        best, while ``predict`` keeps ``monitor``'s (early stopping follows ``monitor``).
      max_inflight: steps dispatched before blocking on one (0: ``trainer.max_inflight``; bounds XLA's CPU
        all-reduce rendezvous, see :mod:`jmf.train.parallel`).
    """

    def __init__(self, encoder: Callable, head: Callable, dim: int = 64, loss: str = "auto",
                 weights: dict | None = None, epochs: int = 20, pretrain_epochs: int = 1, batch_size: int = 256,
                 items_per_user: int = 8,
                 optimizer: str = "adam", lr: float = 1e-3, table_optimizer: str = "adagrad", table_lr: float = 0.05,
                 reg: float = 1e-4, negatives: int = 32, max_len: int = 50, init: str = "svd", blend: float = 0.5,
                 bias_init: str = "auto", bias_damping: float = 5.0, user_offset: bool = True, interest_score: float = 0.0, rank_factors: bool = True,
                 rank_item_factors: str = "shared", embed_init: str = "random",
                 neighbour_score: float | list[float] = 0.0, neighbour_kernel: str = "count",
                 patience: int = 3, monitor: str = "auto", rank_monitor: str | None = None, max_inflight: int = 0,
                 eval_batch_size: int = 512):
        if init not in ("svd", "normal"):
            raise ValueError(f"model.init: {init!r} is not svd|normal")
        if bias_init not in ("auto", "prior", "zero"):
            raise ValueError(f"model.bias_init: {bias_init!r} is not auto|prior|zero")
        if loss not in ("auto", "mse", "bpr", "softmax"):
            raise ValueError(f"model.loss: {loss!r} is not auto|mse|bpr|softmax")
        unknown = set(weights or {}) - set(LossWeights._fields)
        if unknown:
            raise ValueError(f"model.weights: unknown term(s) {sorted(unknown)} (known: {LossWeights._fields})")
        self.encoder_fn, self.head_fn = encoder, head
        self.dim, self.loss, self.weights = dim, loss, LossWeights(**(weights or {}))
        self.epochs, self.pretrain_epochs, self.batch_size = epochs, pretrain_epochs, batch_size
        self.items_per_user = items_per_user
        self.optimizer, self.lr, self.table_optimizer, self.table_lr = optimizer, lr, table_optimizer, table_lr
        self.reg, self.negatives, self.max_len, self.init = reg, negatives, max_len, init
        self.blend, self.patience, self.monitor, self.max_inflight = blend, patience, monitor, max_inflight
        self.bias_init, self.bias_damping, self.user_offset = bias_init, bias_damping, bool(user_offset)
        self.interest_score, self.rank_factors = float(interest_score), bool(rank_factors)
        if rank_item_factors not in ("shared", "own"):
            raise ValueError(f"model.rank_item_factors: {rank_item_factors!r} is not shared|own")
        self.rank_item_factors = rank_item_factors
        if embed_init not in ("random", "cooc"):
            raise ValueError(f"model.embed_init: {embed_init!r} is not random|cooc")
        self.embed_init = embed_init
        weights_nb = (list(neighbour_score) if isinstance(neighbour_score, Sequence) and not isinstance(neighbour_score, str)
                      else [neighbour_score])
        try:
            self.neighbour_choices = [float(w) for w in weights_nb]
        except (TypeError, ValueError):
            raise ValueError(f"model.neighbour_score: {neighbour_score!r} is not a number or a list of numbers") from None
        if not self.neighbour_choices or any(not np.isfinite(w) or w < 0 for w in self.neighbour_choices):
            raise ValueError(f"model.neighbour_score: {neighbour_score!r} needs finite weights >= 0")
        self.neighbour_score = self.neighbour_choices[0]   # the weight score uses (the chosen one after fit)
        if neighbour_kernel not in ("count", "conditional"):
            raise ValueError(f"model.neighbour_kernel: {neighbour_kernel!r} is not count|conditional")
        self.neighbour_kernel = neighbour_kernel
        if rank_monitor is not None and not str(rank_monitor).startswith(("ndcg@", "recall@", "hr@", "mrr@",
                                                                           "precision@")):
            raise ValueError(f"model.rank_monitor: {rank_monitor!r} is not a ranking metric such as ndcg@10")
        self.rank_monitor = rank_monitor
        self.rank_state, self.rank_history, self._rank_best = None, [], None   # _rank_best: a state
        self.eval_batch_size = eval_batch_size

    # ------------------------------------------------------------------ set-up
    def _build(self, split: SplitData, seed: int, n_user_rows: int, n_item_rows: int):
        rngs = nnx.Rngs(seed)
        n_dl_items, n_dl_cats = len(split.dl_items), len(split.partition.dl_categories)
        encoder = self.encoder_fn(n_items=n_dl_items, n_categories=n_dl_cats, max_len=self.max_len, rngs=rngs)
        net = JMFNet(encoder, self.head_fn, self.dim, len(split.partition.cf_categories), split.train.shape[1],
                     n_dl_items, n_dl_cats, rngs=rngs)
        if self.embed_init == "cooc":
            _cooccurrence_init(encoder, split, seed)
        n_users, n_items = split.train.shape
        if self.init == "svd":
            from jmf.models.cf.svd import TruncatedSVD

            svd = TruncatedSVD(self.dim, center=self.kind == "mse")
            svd.fit(split, seed)
            P, Q = svd.user_factors, svd.item_factors
        else:
            key_u, key_i = jax.random.split(jax.random.key(seed))
            P = 0.1 * np.asarray(jax.random.normal(key_u, (n_users, self.dim)))
            Q = 0.1 * np.asarray(jax.random.normal(key_i, (n_items, self.dim)))
        P, Q = _pad_rows(np.asarray(P, np.float32), n_user_rows), _pad_rows(np.asarray(Q, np.float32), n_item_rows)
        log_pop = _log_popularity(split.train)
        prior = self._item_bias_prior(split, log_pop)
        self.offsets = (o2_user_offsets(split, self.bias_damping) if self.user_offset and self.kind == "mse"
                        else np.zeros(split.n_users, np.float32))
        net.offset_scale[...] = jnp.float32(fit_offset_scale(split.train, self.offsets, self.mean + prior))
        item_bias = _pad_rows(prior[:, None], n_item_rows)
        rank_bias = _pad_rows(log_pop[:, None], n_item_rows)
        tables = {"P": jnp.asarray(P), "Q": jnp.asarray(Q),
                  "user_bias": jnp.zeros((n_user_rows, 1)), "item_bias": jnp.asarray(item_bias),
                  "rank_bias": jnp.asarray(rank_bias)}
        if self.rank_item_factors == "own" and self.ranks_by_rank_bias:
            tables["rank_Q"] = jnp.asarray(Q)   # L_rank's item factors, started where Q starts
        return net, tables

    def _item_bias_prior(self, split: SplitData, log_pop: np.ndarray) -> np.ndarray:
        """``[I_T]`` float32 initial item biases (see ``bias_init``); ``log_pop``: the implicit prior."""
        mode = self.bias_init if self.bias_init != "auto" else ("prior" if self.kind == "mse" else "zero")
        if mode == "zero" or split.train.nnz == 0:
            return np.zeros(split.train.shape[1], np.float32)
        if self.kind == "mse":  # score = mean + b_u + b_i + P·Q: mean + b_i = model=pop's damped item mean
            from jmf.models.cf.popularity import Popularity

            pop = Popularity(damping=self.bias_damping)
            pop.fit(split)
            return (pop.item_mean - pop.global_mean).astype(np.float32)
        return log_pop

    def fit(self, split: SplitData, seed: int = 0, ctx: RunContext | None = None) -> dict[str, float]:
        """SVD init -> ``pretrain_epochs`` of ``L_DL`` -> joint epochs with early stopping, on the engine.

        ``ctx`` (from ``jmf.run``) adds checkpoints/resume, logs and the device choice; without it
        the fit runs in memory on every device.
        """
        start = time.perf_counter()
        engine, state, phases = self.setup(split, seed, ctx)
        result = engine.fit(phases, state)
        self.state = result.best_state if result.best_state is not None else result.state
        joint = result.phases["joint"]
        info = {"train/epochs": float(len(joint.history)), "train/steps": float(result.global_step),
                "train/fit_seconds": time.perf_counter() - start,
                f"train/best_valid_{self.monitor_name}": abs(joint.best) if joint.best is not None else float("nan")}
        if self.rank_monitor is not None:
            if result.resumed_from is not None and self._rank_best is not None:
                log.warning("model.rank_monitor: the run resumed; the ranking state is the best of the epochs "
                            "run since the resume (the earlier epochs' states are not checkpointed)")
            if self._rank_best is None:   # nothing validated since a resume: rank with predict's state
                log.warning("model.rank_monitor: no epoch validated in this fit; score uses monitor's state")
            self.rank_state, self._rank_best = self._rank_best, None
            if self.rank_history:
                info[f"train/best_valid_{self.rank_monitor}"] = max(self.rank_history)
        if len(self.neighbour_choices) > 1:
            info.update(self._select_neighbour_score(split))
        return info

    def _select_neighbour_score(self, split: SplitData) -> dict[str, float]:
        """Score every ``neighbour_score`` choice on the validation fold (the fitted states fixed) by the
        ranking metric; keep the best (the first on ties).  Returns the ``train/`` entries to log."""
        from jmf.evaluate.protocols import evaluate_split, validation_config

        metric = self._neighbour_metric
        cfg = validation_config(self, (int(metric.split("@")[1]),), self.eval_batch_size, ratings=False)
        values = []
        for weight in self.neighbour_choices:
            self.neighbour_score = weight
            values.append(evaluate_split(self, split, "valid", cfg)[metric])
        best = int(np.argmax(values))
        self.neighbour_score = self.neighbour_choices[best]
        log.info("model.neighbour_score: validation %s %s -> %g", metric,
                 ", ".join(f"{w:g}: {v:.4f}" for w, v in zip(self.neighbour_choices, values)), self.neighbour_score)
        return {"train/neighbour_score": self.neighbour_score,
                **{f"train/valid_{metric}@neighbour_score={w:g}": v for w, v in zip(self.neighbour_choices, values)}}

    def setup(self, split: SplitData, seed: int = 0, ctx: RunContext | None = None
              ) -> tuple[Engine, TrainState, list[Phase]]:
        """Everything before the loop: the engine, the placed initial state, and the two phases
        (``pretrain``: ``L_DL`` only; ``joint``: validated).  ``fit`` runs them; benchmarks time their steps."""
        if len(split.dl_items) == 0:
            raise ValueError("model=jmf needs a DL side: set partition.k or partition.cf_categories")
        train = split.train.tocoo()
        self.kind = self.loss if self.loss != "auto" else ("softmax" if split.implicit else "mse")
        self.mean = float(train.data.mean()) if self.kind == "mse" else 0.0
        self.monitor_name = self.monitor if self.monitor != "auto" else ("rmse" if self.kind == "mse" else "ndcg@10")
        if self.rank_item_factors == "own" and not self.ranks_by_rank_bias:
            raise ValueError("model.rank_item_factors=own: L_rank's item factors need ratings (loss mse) and "
                             f"model.weights.rank > 0 (here loss {self.kind}, weights.rank {self.weights.rank})")
        if self.max_inflight and (ctx is None or not ctx.max_inflight):
            ctx = dataclasses.replace(ctx or RunContext(checkpoint=False, progress=False),
                                      max_inflight=self.max_inflight)
        engine = self.engine = Engine(ctx, name="jmf", seed=seed)
        parallel.check_batch_size(self.batch_size, engine.mesh, "model.batch_size")
        n_users, n_items = split.train.shape
        self.n_items = n_items
        rows = {"users": n_users, "items": n_items}
        if engine.ctx.shard_tables:  # even shards: pad table rows (never sampled, sliced off in score)
            rows = {k: parallel.padded_rows(v, engine.mesh) for k, v in rows.items()}
        net, tables = self._build(split, seed, rows["users"], rows["items"])
        tx = build_optimizer(self.optimizer, self.lr)
        if getattr(net.encoder, "lr", None):  # a pretrained encoder's own (smaller) learning rate
            tx = part_optimizer(tx, build_optimizer(self.optimizer, net.encoder.lr), "encoder")
        table_tx = build_optimizer(self.table_optimizer, self.table_lr)
        self.graphdef, state = init_state(net, tables, tx, table_tx, seed)
        table_rows = set(rows.values())
        sharding = engine.state_shardings(
            state, lambda path, leaf: path[0].name in ("tables", "table_opt") and leaf.shape[0] in table_rows)
        state = engine.put_state(state, sharding)
        seqs = dl_sequences(split, self.max_len)
        interest = cf_category_distribution(split)
        self.item_category, self.category_log_prior = _category_prior(split, interest)
        self.seq = parallel.put_replicated(
            {"items": seqs.items, "categories": seqs.categories, "mask": seqs.mask,
             "values": centred_values(seqs, split.implicit), "offset": self.offsets,
             **(net.encoder.user_inputs(split, seqs) if hasattr(net.encoder, "user_inputs") else {}),
             "interest": interest}, engine.mesh)
        self.has_cf = jnp.asarray(np.diff(split.train.indptr) > 0)
        self.neighbour_score = self.neighbour_choices[0]
        self._neighbours = neighbour_inputs(split, self.neighbour_kernel) if any(self.neighbour_choices) else None
        if len(self.neighbour_choices) > 1:
            self._neighbour_metric = self.rank_monitor or self.monitor_name
            if "@" not in self._neighbour_metric:
                raise ValueError(f"model.neighbour_score: a list of weights is chosen on a validation ranking metric, "
                                 f"but model.monitor is {self.monitor_name} and model.rank_monitor is unset "
                                 "(set model.rank_monitor=ndcg@10)")
        step_fn = make_train_step(self.graphdef, tx, table_tx, self.kind, self.mean, self.reg, self.negatives,
                                  n_items=n_items)
        jitted = engine.jit_step(step_fn, sharding)
        csr = split.train.tocsr()
        dl_users = np.flatnonzero(seqs.mask.sum(1) >= 2).astype(np.int32)

        def phase(index: int, name: str, epochs: int, weights: LossWeights, validate=None) -> Phase:
            weights = jax.tree.map(jnp.float32, weights)
            return Phase(name, epochs, lambda epoch: self._plan(engine, csr, dl_users, engine.epoch_rng(index, epoch)),
                         lambda s, b: jitted(s, b, self.seq, weights), validate=validate,
                         mode="min" if self.monitor_name in ("rmse", "mae") else "max", patience=self.patience,
                         metric=self.monitor_name)

        self.rank_state, self.rank_history, self._rank_best = None, [], None

        def validate(state) -> float:
            self.state = state
            if self.rank_monitor is None:
                return self._validate(split)[self.monitor_name]
            out = self._validate(split, self.rank_monitor)   # one pass gives both metrics
            if not self.rank_history or out[self.rank_monitor] > max(self.rank_history):
                self._rank_best = copy_state(state)          # the ranking state, kept apart from predict's
            self.rank_history.append(out[self.rank_monitor])
            return out[self.monitor_name]

        zero = LossWeights(cf=0.0, dl=1.0, map=0.0, transfer=0.0, interest=0.0)
        self.state = state
        return engine, state, [phase(0, "pretrain", self.pretrain_epochs, zero),
                               phase(1, "joint", self.epochs, self.weights, validate)]

    def _plan(self, engine: Engine, csr, dl_users: np.ndarray, rng: np.random.Generator) -> EpochPlan:
        """One epoch of user-centric batches: ``B`` users x ``m`` of their CF-side items.

        Drawn from ``rng`` (keyed by seed, phase and epoch); ``n_steps·B`` users are drawn by
        cycling over permutations of the warm users, so there is no ragged last batch.
        """
        B, m = self.batch_size, self.items_per_user
        degree = np.diff(csr.indptr)
        warm = np.flatnonzero(degree > 0)
        n_steps = max(1, -(-csr.nnz // (B * m)))
        users = np.concatenate([rng.permutation(warm) for _ in range(-(-n_steps * B // len(warm)))])[:n_steps * B]
        picks = csr.indptr[users][:, None] + np.floor(rng.random((len(users), m)) * degree[users][:, None]).astype(
            np.int64)
        items, values = csr.indices[picks].astype(np.int32), csr.data[picks].astype(np.float32)
        dl_draw = (dl_users[rng.integers(0, len(dl_users), n_steps * B)] if len(dl_users)
                   else np.zeros(n_steps * B, np.int32))
        users = users.astype(np.int32)
        ones = np.ones((B, m), np.float32)

        def batch(b: int) -> dict:
            sl = slice(b * B, (b + 1) * B)
            # users [B], items/values/weight [B, m], dl_users [B]; sharded over "data"
            return engine.put_batch({"users": users[sl], "items": items[sl], "values": values[sl], "weight": ones,
                                     "dl_users": dl_draw[sl]})
        return EpochPlan(n_steps, batch, examples_per_step=B * m)

    def _validate(self, split: SplitData, rank_metric: str | None = None) -> dict[str, float]:
        """The validation metrics of the current state, in one evaluation: ``monitor``'s, and
        ``rank_metric`` (``model.rank_monitor``'s) when given."""
        from jmf.evaluate.protocols import evaluate_split, validation_config

        wanted = {"model.monitor": self.monitor_name, **({"model.rank_monitor": rank_metric} if rank_metric else {})}
        ks = tuple(sorted({int(n.split("@")[1]) for n in wanted.values() if "@" in n} or {10}))
        cfg = validation_config(self, ks, self.eval_batch_size,
                                ratings=self.kind == "mse" and self.monitor_name in ("rmse", "mae"))
        out = evaluate_split(self, split, "valid", cfg)
        for key, name in wanted.items():
            if name not in out:
                raise ValueError(f"{key}: {name!r} not among validation metrics {sorted(out)}")
        return out

    # ------------------------------------------------------------------ inference
    def user_vectors(self, users: jax.Array, state: TrainState | None = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``[B]`` users -> (user factors ``[B, d]``, user bias ``[B]``, interest logits ``[B, K]``) of
        ``state`` (default: the fitted state ``predict`` uses)."""
        state = self.state if state is None else state
        return _user_vectors(self.graphdef, state.params, state.rest, state.tables, self.seq,
                             self.has_cf, users, self.blend)

    def score(self, users: jax.Array) -> jax.Array:
        """``[B, I_T]`` ranking scores, from ``rank_state`` when ``rank_monitor`` chose one."""
        state = self.state if self.rank_state is None else self.rank_state
        vec, bias, interest = self.user_vectors(users, state)
        t = state.tables
        if getattr(self, "_literal", None) is None:
            self._literal = nnx.merge(self.graphdef, state.params, state.rest).literal
        if self._literal:
            return self._add_neighbours(_literal_scores(self.graphdef, state.params, state.rest, interest), users)
        n = self.n_items  # row-sharded tables carry padding rows past the last item
        item_factors = t["rank_Q"] if "rank_Q" in t else t["Q"]
        factors = vec @ item_factors[:n].T if self.rank_factors else jnp.zeros((vec.shape[0], n), vec.dtype)
        if self.ranks_by_rank_bias:  # ratings with L_rank: rank by which items the user would rate
            scores = factors + t["rank_bias"][:n, 0][None, :]
        else:
            scores = factors + t["item_bias"][:n, 0][None, :] + bias[:, None]
        if self.interest_score:
            log_mix = jax.nn.log_softmax(interest, axis=-1) - self.category_log_prior[None, :]   # [B, K]
            scores = scores + self.interest_score * log_mix[:, self.item_category]
        return self._add_neighbours(scores, users)

    def _add_neighbours(self, scores: jax.Array, users: jax.Array) -> jax.Array:
        """``scores + λ_nb·log(ε + n_u / max n_u)`` (``neighbour_score``); ``scores`` unchanged at ``λ_nb = 0``."""
        if not self.neighbour_score:
            return scores
        rows, kernel = self._neighbours
        return scores + self.neighbour_score * jnp.asarray(neighbour_term(rows, kernel, np.asarray(users)))

    @property
    def ranks_by_rank_bias(self) -> bool:
        """Whether ``score`` ranks with the ``L_rank`` logits (ratings and ``weights.rank > 0``)."""
        return self.kind == "mse" and self.weights.rank > 0

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if len(users) == 0:
            return np.zeros(0, np.float32)
        # the encoder runs once per distinct user (not once per rating), in fixed-size padded batches
        uniq, inverse = np.unique(np.asarray(users), return_inverse=True)
        B = self.eval_batch_size
        padded = np.zeros(-(-len(uniq) // B) * B, np.int32)
        padded[:len(uniq)] = uniq
        parts = [self.user_vectors(jnp.asarray(padded[s:s + B])) for s in range(0, len(padded), B)]
        vec = np.concatenate([np.asarray(p[0]) for p in parts])[inverse]
        bias = np.concatenate([np.asarray(p[1]) for p in parts])[inverse]
        t = self.state.tables
        q, b_i = np.asarray(t["Q"])[items], np.asarray(t["item_bias"])[items, 0]
        return (self.mean + bias + b_i + (vec * q).sum(-1)).astype(np.float32)

    def interest(self, users: jax.Array) -> jax.Array:
        """``[B, K]`` interest distribution ``softmax(I_u)`` over the CF-side categories (of the state
        ``score`` ranks with)."""
        return jax.nn.softmax(self.user_vectors(users, self.rank_state)[2], axis=-1)


def centred_values(seqs, implicit: bool) -> np.ndarray:
    """``[U, L]`` float32: each behaviour's value minus the mean DL-side value (0 on pads; all 0
    on implicit data, where the value carries nothing) — the encoders' ``values`` input."""
    if implicit or not seqs.mask.any():
        return np.zeros(seqs.values.shape, np.float32)
    mean = float(seqs.values[seqs.mask].mean())
    return np.where(seqs.mask, seqs.values - mean, 0.0).astype(np.float32)


def o2_user_offsets(split: SplitData, damping: float) -> np.ndarray:
    """``[U]`` float32: each user's O2 rating offset ``o_u = Σ_j (r_uj - m_j) / (n_u + damping)`` over
    the user's O2 ratings, ``m_j`` the O2 item mean shrunk towards the O2 mean by ``damping``
    pseudo-ratings (``model=pop``'s predictor on O2); 0 for users without O2 ratings and on implicit data."""
    dl = split.dl.tocoo()
    if split.implicit or dl.nnz == 0:
        return np.zeros(split.n_users, np.float32)
    n_items = split.dl.shape[1]
    counts = np.bincount(dl.col, minlength=n_items)
    item_mean = (np.bincount(dl.col, dl.data, minlength=n_items) + damping * dl.data.mean()) / (counts + damping)
    residual = np.bincount(dl.row, dl.data - item_mean[dl.col], minlength=split.n_users)
    return (residual / (np.bincount(dl.row, minlength=split.n_users) + damping)).astype(np.float32)


def fit_offset_scale(train, offsets: np.ndarray, prior: np.ndarray) -> float:
    """The least-squares ``a`` in ``r_ui - prior_i ≈ a·o_u`` over the O1 training ratings ``train``
    (``prior [I_T]``: the rating each item starts at; ``offsets [U]``); 0 without signal."""
    coo = train.tocoo()
    x = offsets[coo.row].astype(np.float64)
    xx = float((x * x).sum())
    return float((x * (coo.data - prior[coo.col])).sum() / xx) if xx > 0 else 0.0


def _category_prior(split: SplitData, interest: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """``([I_T] int32 CF-side category index of each item, [K] log mean training mix of the warm users)``."""
    item_category = cf_item_categories(split)
    warm = interest.sum(1) > 0
    mix = interest[warm].mean(0) if warm.any() else np.full(interest.shape[1], 1.0 / max(interest.shape[1], 1))
    return jnp.asarray(item_category), jnp.asarray(np.log(np.maximum(mix, 1e-6)), jnp.float32)


def o2_rows(split: SplitData, per_user: bool = False) -> sp.csr_matrix:
    """``[U, I_S]`` float32 binary O2 rows; ``per_user``: each scaled by ``1/|O2(u)|``."""
    X = (split.dl > 0).astype(np.float32).tocsr()
    if per_user:
        X = (sp.diags(1.0 / np.maximum(np.asarray(X.sum(1)).ravel(), 1.0)).astype(np.float32) @ X).tocsr()
    return X


def cross_cooccurrence(split: SplitData, per_user: bool = False) -> sp.csr_matrix:
    """``[I_S, I_T]`` float32 O2 -> O1 item co-occurrence ``C = XᵀY`` of the users' O2 rows ``X``
    (:func:`o2_rows`) and binary O1 *training* rows ``Y`` (cold users' O1 rows are held out, so they
    add nothing).  ``per_user``: each user's O2 row is scaled by ``1/|O2(u)|`` (a long history does not
    outweigh others)."""
    Y = (split.train > 0).astype(np.float32).tocsr()
    return (o2_rows(split, per_user).T @ Y).tocsr().astype(np.float32)


def neighbour_inputs(split: SplitData, kernel: str = "count") -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``model.neighbour_score``'s inputs: ``([U, I_S]`` users' O2 rows scaled by ``1/|O2(u)|``,
    ``[I_S, I_T]`` kernel ``K``).  ``count``: ``K = XᵀY`` (:func:`cross_cooccurrence`); ``conditional``:
    each row ``j`` of it divided by the number of warm users (O1 training history) holding ``j``."""
    rows = o2_rows(split, per_user=True)
    K = cross_cooccurrence(split)
    if kernel == "conditional":
        X = o2_rows(split)
        warm = np.diff(split.train.tocsr().indptr) > 0
        holders = np.asarray(X[warm].sum(0)).ravel()
        K = (sp.diags(1.0 / np.maximum(holders, 1.0)).astype(np.float32) @ K).tocsr()
    elif kernel != "count":
        raise ValueError(f"model.neighbour_kernel: {kernel!r} is not count|conditional")
    return rows, K


def neighbour_term(rows: sp.csr_matrix, kernel: sp.csr_matrix, users: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """``[B, I_T]`` float32 ``log(ε + n_u / max_i n_ui)``, ``n_u = rows[u] @ kernel`` (a user without O2
    history, or whose O2 items no warm user holds, gets the constant ``log ε``)."""
    n = np.asarray((rows[users] @ kernel).todense(), np.float32)
    return np.log(eps + n / (n.max(1, keepdims=True) + 1e-9)).astype(np.float32)


def cooccurrence_factors(split: SplitData, rank: int, seed: int = 0) -> np.ndarray:
    """``[I_S, rank]`` O2-item factors ``U·√s`` of the O2 -> O1 co-occurrence ``C = X̃ᵀ Y``.

    ``X̃`` is the users' binary O2 rows, each scaled by ``1/|O2(u)|`` (so a warm user with a long O2
    history does not outweigh the others), and ``Y`` their binary O1 *training* rows, so only users
    with CF-side training history count (cold users' O1 rows are held out).  ``C`` is
    ``benchmarks/ciao_signal.py``'s co-occurrence ``XᵀY`` with each warm user weighted by ``1/|O2(v)|``.
    An O2 item's factor says which O1 items its holders hold; O2 items no such user holds get 0.
    """
    from jmf.models.cf.svd import randomized_svd

    co = cross_cooccurrence(split, per_user=True)                        # [I_S, I_T]
    rank = min(rank, *co.shape)
    if co.nnz == 0:
        raise ValueError("model.embed_init=cooc: no user holds both O2 and O1 training items")
    u, s, _ = randomized_svd(co, rank, seed=seed)
    return (u * np.sqrt(s)[None, :]).astype(np.float32)


def _cooccurrence_init(encoder, split: SplitData, seed: int) -> None:
    """``model.embed_init=cooc``: the encoder's O2 item embeddings start as :func:`cooccurrence_factors`,
    rescaled to the random start's spread; items without co-occurrence keep their random rows."""
    table = getattr(getattr(encoder, "embed", None), "items", None)
    if not isinstance(table, nnx.Embed):
        raise ValueError(f"model.embed_init=cooc: {type(encoder).__name__} has no O2 item embedding "
                         "(encoder.embed.items, as the cnn/transformer/gru encoders' BehaviorEmbedding)")
    start = np.asarray(table.embedding[...])                              # [I_S + 1, e], row 0 = pad
    factors = cooccurrence_factors(split, start.shape[1], seed)
    width = factors.shape[1]
    held = np.abs(factors).sum(1) > 0
    scale = start[1:, :width].std() / max(float(factors[held].std()), 1e-12)
    rows = start[1:].copy()
    rows[held] = 0.0
    rows[held, :width] = scale * factors[held]
    table.embedding[...] = jnp.asarray(np.concatenate([start[:1], rows]))


def _log_popularity(train) -> np.ndarray:
    """``[I]`` float32 centred ``log(1 + #training interactions)`` of each item."""
    log_pop = np.log1p(np.diff(train.tocsc().indptr).astype(np.float64))
    return (log_pop - log_pop.mean()).astype(np.float32) if len(log_pop) else log_pop.astype(np.float32)


def _pad_rows(table: np.ndarray, n_rows: int) -> np.ndarray:
    return np.pad(table, ((0, n_rows - len(table)), (0, 0))) if n_rows > len(table) else table


@functools.partial(jax.jit, static_argnums=0)
def _user_vectors(graphdef, params, rest, tables, seq, has_cf, users, blend):
    net = nnx.merge(graphdef, params, rest)
    mapped = net.map(seq["items"][users], seq["categories"][users], seq["mask"][users], seq["offset"][users],
                     **encoder_inputs(net, seq, users))
    warm = has_cf[users][:, None]
    has_dl = seq["mask"][users].any(1)[:, None]
    own, own_bias = tables["P"][users], tables["user_bias"][users, 0]
    w = jnp.where(has_dl, blend, 1.0)  # a warm user without O2 history keeps P_u
    vec = jnp.where(warm, w * own + (1 - w) * mapped.p_hat, mapped.p_hat)
    bias = jnp.where(warm[:, 0], w[:, 0] * own_bias + (1 - w[:, 0]) * mapped.bias_hat, mapped.bias_hat)
    return vec, bias, mapped.interest


@functools.partial(jax.jit, static_argnums=0)
def _literal_scores(graphdef, params, rest, interest):
    return nnx.merge(graphdef, params, rest).literal_logits(interest)
