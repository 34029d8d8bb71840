"""``model=jmf``: the core joint model -- CF tables, DL-side encoder, mapping head, ``L_JMF`` -- on the engine.

The CF side (``model/cf``, :mod:`~jmf.models.joint.cf_side`) is free factor tables or LightGCN over both sides.
Schedule (design.md#the-objective): the start-up variants set ``P, Q`` (SVD by default) and the item biases
(:mod:`~jmf.models.joint.start`) -> ``pretrain_epochs`` of ``L_DL`` alone on the DL side -> ``epochs`` of the
joint objective (:mod:`~jmf.models.joint.losses`), with early stopping on a validation metric (the
best epoch's parameters are kept).  Cold-start users (no CF-side history) are scored from their DL-side history
alone, ``s_ui = P̂_u·Q_i + b_i``; warm users use ``blend·P_u + (1-blend)·P̂_u``.  Score terms
(:mod:`~jmf.models.joint.terms`) add to the ranking after the fit.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jmf.data.batches import cf_category_distribution, dl_sequences
from jmf.data.split import SplitData, dl_side_missing
from jmf.models.joint.infer import NewUserInputs, new_user_vectors
from jmf.models.joint.losses import LossWeights
from jmf.models.joint.net import JMFNet, centred_values
from jmf.models.joint.plan import user_batches
from jmf.models.joint.start import (AutoBias, SVDFactors, check_start, fit_offset_scale, log_popularity,
                                    o2_user_offsets, pad_rows)
from jmf.models.joint.step import TrainState, init_state, make_train_step
from jmf.models.joint.vectors import ranked, trained_vectors
from jmf.models.joint.cf_side import check_cf, propagated
from jmf.models.joint.terms import UserVectors, fit_terms, named_terms, o2_rows
from jmf.models.base import EngineModel, Phase, RunContext, TrainPlan
from jmf.optim import build_optimizer, part_optimizer
from jmf.train import parallel
from jmf.train.engine import Engine, FitResult, copy_state
from jmf.errors import ConfigError
from jmf.evaluate import registry
from jmf.evaluate.validator import Validator

log = logging.getLogger(__name__)


class JMF(EngineModel):
    """The joint model.

    Args:
      encoder: ``encoder(n_items, n_categories, max_len, rngs=...)`` (a Hydra ``_partial_``, ``model/encoder``).
      cf: the CF side (``model/cf=mf|graph``, :mod:`~jmf.models.joint.cf_side`): free factor tables (default) or
        LightGCN propagation over the joint training graph of both sides.
      item_transfer: item-level transfer (``model/item_transfer=attention``, a Hydra ``_partial_``,
        :mod:`~jmf.models.joint.item_transfer`): CF-side items attend over the user's DL-side items; none by default.
      head: ``head(d_in, d_out, rngs=...)`` (a Hydra ``_partial_``, ``model/head``).
      dim: CF factor size ``d``.
      loss: CF loss: ``auto`` (mse on ratings, softmax on implicit), ``mse``, ``bpr``, ``softmax``.
      weights: loss weights ``{cf, dl (α), map (β), transfer (γ), interest (δ), rank (ρ)}``.  ``rank``
        (ratings only) adds ``L_rank`` (:func:`~jmf.models.joint.losses.rank_term`); with ``rank > 0``,
        ``score`` ranks by its logits ``p_u·Q_i + r_i`` and ``predict`` rates ``μ + b_u + b_i + p_u·Q_i``.
      epochs, pretrain_epochs: joint and DL-side-only epochs (an epoch = as many pairs as the CF side has training
        rows).
      batch_size: users per global batch (divided over the devices of the ``data`` mesh axis).
      items_per_user: CF-side items drawn per user and step (``m``): the loss is a mean over a user's
        items, then over users (design.md#the-cf-side), and the encoder runs once per user.
      optimizer, lr: dense optax optimiser of the encoder/head; table_optimizer, table_lr: the
        row-sparse optimiser of ``P, Q, b``.
      reg: L2 weight on the touched CF rows.
      negatives: uniform negatives per positive (ranking losses; also the literal head).
      max_len: DL-side sequence length ``L``.
      init: the factor start (``model/init``: :class:`~jmf.models.joint.start.SVDFactors` by default).
      bias_init: the item-bias start (``model/bias_init``: :class:`~jmf.models.joint.start.AutoBias`).
      bias_damping: the shrinkage of the rating prior (``model=pop``'s ``damping``) and of the DL-side offsets.
      user_offset: on ratings, ``b̂_u`` adds ``a·o_u``, ``o_u`` the user's damped mean DL-side residual
        (:func:`~jmf.models.joint.start.o2_user_offsets`) and ``a`` learned, started at its least-squares
        fit on the warm users' CF-side ratings.
      blend: weight of ``P_u`` against ``P̂_u`` for warm users at inference.
      terms: score terms added to ``score`` (``model/terms``; name -> :class:`~jmf.models.joint.terms.ScoreTerm`).
      patience: epochs without validation improvement before stopping (0 = never stop early).
      monitor: validation metric for early stopping (``auto``: rmse on ratings, ndcg@10 else).
      rank_monitor: ``null`` or a ranking metric (e.g. ``ndcg@10``) for a model that both rates and
        ranks: each epoch also validates it, and ``score`` uses the state of the epoch where it was
        best, while ``predict`` keeps ``monitor``'s (early stopping follows ``monitor``).
      max_inflight: steps dispatched before blocking on one (0: ``trainer.max_inflight``).
      eval_batch_size: users per validation batch.
    """

    name = "jmf"

    def __init__(self, encoder: Callable, head: Callable, dim: int = 64, loss: str = "auto",
                 weights: dict | None = None, epochs: int = 20, pretrain_epochs: int = 1, batch_size: int = 256,
                 items_per_user: int = 8, optimizer: str = "adam", lr: float = 1e-3, table_optimizer: str = "adagrad",
                 table_lr: float = 0.05, reg: float = 1e-4, negatives: int = 32, max_len: int = 50,
                 init: Callable | None = None, bias_init: Callable | None = None, bias_damping: float = 5.0,
                 user_offset: bool = True, blend: float = 0.5, terms: dict | list | None = None, patience: int = 3,
                 monitor: str = "auto", rank_monitor: str | None = None, max_inflight: int = 0,
                 eval_batch_size: int = 512, cf=None, item_transfer: Callable | None = None):
        if loss not in ("auto", "mse", "bpr", "softmax"):
            raise ConfigError(f"model.loss: {loss!r} is not auto|mse|bpr|softmax")
        unknown = set(weights or {}) - set(LossWeights._fields)
        if unknown:
            raise ConfigError(f"model.weights: unknown term(s) {sorted(unknown)} (known: {LossWeights._fields})")
        registry.check_monitor(monitor, auto=True)
        if rank_monitor is not None:
            registry.check_monitor(rank_monitor, "model.rank_monitor", ratings=False)
        self.encoder_fn, self.head_fn, self.cf, self.item_transfer = encoder, head, check_cf(cf), item_transfer
        self.dim, self.loss, self.weights = dim, loss, LossWeights(**(weights or {}))
        self.epochs, self.pretrain_epochs, self.batch_size = epochs, pretrain_epochs, batch_size
        self.items_per_user = items_per_user
        self.optimizer, self.lr, self.table_optimizer, self.table_lr = optimizer, lr, table_optimizer, table_lr
        self.reg, self.negatives, self.max_len = reg, negatives, max_len
        self.init = check_start(init, "init", SVDFactors())
        self.bias_init = check_start(bias_init, "bias_init", AutoBias())
        self.bias_damping, self.user_offset, self.blend = bias_damping, bool(user_offset), blend
        self.terms = named_terms(terms)
        self.patience, self.monitor, self.rank_monitor = patience, monitor, rank_monitor
        self.max_inflight, self.eval_batch_size = max_inflight, eval_batch_size
        self.rank_state, self.rank_history, self._rank_best = None, [], None   # _rank_best: a state

    # ------------------------------------------------------------------ set-up
    def setup(self, split: SplitData, ctx: RunContext | None = None) -> TrainPlan:
        """The engine, the placed initial state, and the two phases (``pretrain``: ``L_DL`` only;
        ``joint``: validated).  ``fit`` runs them; benchmarks time their steps."""
        if len(split.dl_items) == 0:
            raise ConfigError(dl_side_missing(split.data, split.partition, "model=jmf"))
        ctx = ctx or RunContext()
        self.validator = Validator.of(ctx, split, self.eval_batch_size)
        self.kind = self.loss if self.loss != "auto" else ("softmax" if split.implicit else "mse")
        self.mean = float(split.train.data.mean()) if self.kind == "mse" else 0.0
        self.monitor_name = registry.resolve_monitor(self.monitor, self.kind)
        if self.item_transfer and self.kind == "mse":
            raise ConfigError("model/item_transfer ranks implicit feedback (its scores join the ranking losses); "
                              "on ratings set model.loss=softmax or leave it out")
        self._check_term_metric()
        if self.max_inflight and not ctx.max_inflight:
            ctx = dataclasses.replace(ctx, max_inflight=self.max_inflight)
        engine = self.engine = Engine(ctx, name="jmf")
        parallel.check_batch_size(self.batch_size, engine.mesh, "model.batch_size")
        self.n_items = split.train.shape[1]
        rows = {"users": self.user_rows(split), "items": self.n_items}
        if self.cf.dense and engine.ctx.shard_tables:
            raise ConfigError("model/cf=graph propagates whole tables in every step: set trainer.shard_tables=false")
        if engine.ctx.shard_tables:  # even shards: pad table rows (never sampled, sliced off in score)
            rows = {k: parallel.padded_rows(v, engine.mesh) for k, v in rows.items()}
        net, tables = self._build(split, ctx.seed, rows["users"], rows["items"])
        tx = build_optimizer(self.optimizer, self.lr)
        if getattr(net.encoder, "lr", None):  # a pretrained encoder's own (smaller) learning rate
            tx = part_optimizer(tx, build_optimizer(self.optimizer, net.encoder.lr), "encoder")
        table_tx = build_optimizer(self.table_optimizer, self.table_lr)
        dense_tx = build_optimizer(self.cf.optimizer, self.cf.lr) if self.cf.dense else None
        self.graphdef, state = init_state(net, tables, tx, table_tx, ctx.seed, dense_tx)
        table_rows = set(rows.values())
        sharding = engine.state_shardings(
            state, lambda path, leaf: path[0].name in ("tables", "table_opt") and leaf.shape[0] in table_rows)
        state = engine.put_state(state, sharding)
        self.seq, dl_users = self._sequences(split, net, engine)
        self.has_cf = jnp.asarray(np.diff(split.train.indptr) > 0)
        self.has_factors = jnp.asarray(self.cf.has_factors(split))     # whose P_u blends in at inference
        self._factors = (None, None)                                   # (tables, their propagation), cached
        self.o2 = o2_rows(split, per_user=True)          # [U, I_DL] what the score terms read of a user
        for term in self.terms.values():
            term.weight = term.weights[0]
            term.prepare(split)
        self.fit_terms = fit_terms(self.terms, self.kind)    # terms inside the ranking losses (train_weight > 0)
        step = make_train_step(self.graphdef, tx, table_tx, self.kind, self.mean, self.reg, self.negatives,
                               n_items=self.n_items, cf=self.cf, dense_tx=dense_tx)
        self.rank_state, self.rank_history, self._rank_best = None, [], None
        self.state = state
        return TrainPlan(engine, state, self._phases(split, engine, engine.jit_step(step, sharding), dl_users))

    def _build(self, split: SplitData, seed: int, n_user_rows: int, n_item_rows: int) -> tuple[JMFNet, dict]:
        """The dense net and the CF tables ``P, Q, b_u, b_i, r`` at their start."""
        rngs = nnx.Rngs(seed)
        n_dl_items, n_dl_cats = len(split.dl_items), len(split.partition.dl_categories)
        encoder = self.encoder_fn(n_items=n_dl_items, n_categories=n_dl_cats, max_len=self.max_len, rngs=rngs)
        net = JMFNet(encoder, self.head_fn, self.dim, len(split.partition.cf_categories), split.train.shape[1],
                     n_dl_items, n_dl_cats, rngs=rngs, item_transfer=self.item_transfer, **self.net_options(split))
        self.literal = net.literal
        self.encoder_keys = tuple(getattr(net.encoder, "input_keys", ()))     # per-user inputs
        self.shared_keys = tuple(getattr(net.encoder, "shared_keys", ()))     # whole-graph inputs
        factors = self.cf.start(split, self.dim, seed) if self.cf.dense else dict(zip("PQ", self.start_factors(split, seed)))
        P, Q = pad_rows(np.asarray(factors.pop("P"), np.float32), n_user_rows), pad_rows(
            np.asarray(factors.pop("Q"), np.float32), n_item_rows)
        prior = np.asarray(self.bias_init(split, self.kind == "mse", self.bias_damping), np.float32)
        self.offsets = (o2_user_offsets(split, self.bias_damping) if self.user_offset and self.kind == "mse"
                        else np.zeros(split.n_users, np.float32))
        net.offset_scale[...] = jnp.float32(fit_offset_scale(split.train, self.offsets, self.mean + prior))
        tables = {"P": jnp.asarray(P), "Q": jnp.asarray(Q), "user_bias": jnp.zeros((n_user_rows, 1)),
                  "item_bias": jnp.asarray(pad_rows(prior[:, None], n_item_rows)),
                  "rank_bias": jnp.asarray(pad_rows(log_popularity(split.train)[:, None], n_item_rows)),
                  **{k: jnp.asarray(v) for k, v in factors.items()}}      # model/cf=graph: E_dl
        return net, tables

    def user_rows(self, split: SplitData) -> int:
        """Rows of the user tables ``P``, ``b_u``: one per user (``model=jmf_map``: one per user and target)."""
        return split.train.shape[0]

    def start_factors(self, split: SplitData, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``P, Q`` at their start (``model/init``)."""
        return self.init(split, self.dim, self.kind == "mse", seed)

    def net_options(self, split: SplitData) -> dict:
        """:class:`JMFNet`'s options beyond the sizes (``model=jmf_map``: its targets); none for one fixed target."""
        return {}

    def _sequences(self, split: SplitData, net: JMFNet, engine: Engine) -> tuple[dict, np.ndarray]:
        """The device-resident per-user arrays the step and inference read (replicated), and the users
        ``L_DL`` draws from (those with at least two DL-side behaviours)."""
        seqs = dl_sequences(split, self.max_len)
        dl_users = np.flatnonzero(seqs.mask.sum(1) >= 2).astype(np.int32)
        self.new_inputs = NewUserInputs(split, seqs.values, seqs.mask, self.bias_damping,
                                        self.user_offset and self.kind == "mse")
        return parallel.put_replicated(
            {"items": seqs.items, "categories": seqs.categories, "mask": seqs.mask,
             "values": centred_values(seqs, split.implicit), "offset": self.offsets,
             **(net.encoder.user_inputs(split, seqs) if hasattr(net.encoder, "user_inputs") else {}),
             **self.cf.prepare(split),
             "interest": cf_category_distribution(split)}, engine.mesh), dl_users

    def _phases(self, split: SplitData, engine: Engine, jitted, dl_users: np.ndarray) -> list[Phase]:
        csr = split.train.tocsr()

        def phase(index: int, name: str, epochs: int, weights: LossWeights, validate=None) -> Phase:
            weights = jax.tree.map(jnp.float32, weights)
            return Phase(name, epochs, lambda epoch: self._epoch_plan(engine, csr, dl_users, engine.epoch_rng(index, epoch)),
                         lambda s, b: jitted(s, b, self.seq, weights), validate=validate,
                         mode=self.validator.mode(self.monitor_name), patience=self.patience,
                         metric=self.monitor_name)

        zero = LossWeights(cf=0.0, dl=1.0, map=0.0, transfer=0.0, interest=0.0)
        return [phase(0, "pretrain", self.pretrain_epochs, zero),
                phase(1, "joint", self.epochs, self.weights, functools.partial(self._validate_epoch, split))]

    def _epoch_plan(self, engine: Engine, csr, dl_users: np.ndarray, rng: np.random.Generator):
        """One epoch's batches (:func:`~jmf.models.joint.plan.user_batches`)."""
        return user_batches(engine, csr, dl_users, rng, self.batch_size, self.items_per_user, self.fit_terms,
                            self.negatives)

    def _validate_epoch(self, split: SplitData, state: TrainState) -> float:
        """``monitor`` on the validation fold after an epoch; with ``rank_monitor``, also keeps the
        state of the best epoch on it for ``score``."""
        self.state = state
        if self.rank_monitor is None:
            return self._validate(split)[self.monitor_name]
        out = self._validate(split, self.rank_monitor)   # one pass gives both metrics
        if not self.rank_history or out[self.rank_monitor] > max(self.rank_history):
            self._rank_best = copy_state(state)          # the ranking state, kept apart from predict's
        self.rank_history.append(out[self.rank_monitor])
        return out[self.monitor_name]

    def _validate(self, split: SplitData, rank_metric: str | None = None) -> dict[str, float]:
        """The validation metrics of the current state, in one evaluation: ``monitor``'s, and
        ``rank_metric`` (``model.rank_monitor``'s) when given."""
        names, keys = [self.monitor_name], ["model.monitor"]
        if rank_metric:
            names, keys = names + [rank_metric], keys + ["model.rank_monitor"]
        out = self.validator.metrics(self, names, keys)
        if not out:
            raise ConfigError("model.monitor: the validation fold is empty, so no epoch can be selected "
                              "(raise split.valid_ratio / split.cold_valid_fraction)")
        return out

    # ------------------------------------------------------------------ after the fit
    def finish(self, split: SplitData, result: FitResult) -> dict[str, float]:
        self.state = result.best_state if result.best_state is not None else result.state
        joint = result.phases["joint"]
        info = {"train/epochs": float(len(joint.history)), "train/steps": float(result.global_step),
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
        for name, term in self.terms.items():
            if len(term.weights) > 1:
                info.update(self.choose_term_weight(split, name))
        return info

    def _check_term_metric(self) -> None:
        """A term with a list of weights is chosen on a validation ranking metric: there must be one."""
        self._term_metric = self.rank_monitor or self.monitor_name
        for name, term in self.terms.items():
            if len(term.weights) > 1 and "@" not in self._term_metric:
                raise ConfigError(f"model.terms.{name}.weight: a list of weights is chosen on a validation ranking "
                                 f"metric, but model.monitor is {self.monitor_name} and model.rank_monitor is unset "
                                 "(set model.rank_monitor=ndcg@10)")

    def choose_term_weight(self, split: SplitData, name: str) -> dict[str, float]:
        """Score every weight of term ``name`` on the validation fold (the fitted states fixed) by the
        ranking metric; keep the best (the first on ties).  Returns the ``train/`` entries to log."""
        term, metric = self.terms[name], self._term_metric
        values = []
        for weight in term.weights:
            term.weight = weight
            values.append(self.validator(self, metric, f"model.terms.{name}.weight"))
        term.weight = term.weights[int(np.argmax(values))]
        log.info("model.terms.%s.weight: validation %s %s -> %g", name, metric,
                 ", ".join(f"{w:g}: {v:.4f}" for w, v in zip(term.weights, values)), term.weight)
        return {f"train/{name}_score": term.weight,
                **{f"train/valid_{metric}@{name}_score={w:g}": v for w, v in zip(term.weights, values)}}

    # ------------------------------------------------------------------ artifact (jmf.artifact)
    def fitted_state(self) -> dict:
        """The inference part of the kept states (parameters and tables, not the optimiser) and the
        score terms' chosen weights."""
        def part(state):
            return None if state is None else {"params": state.params, "rest": state.rest, "tables": state.tables}
        return {"state": part(self.state), "rank_state": part(self.rank_state),
                "terms": {name: term.weight for name, term in self.terms.items()}}

    def load_fitted(self, split: SplitData, saved: dict) -> None:
        from jmf.pytrees import fill

        self.setup(split)                 # the net, sequences, graphs and score terms from the split
        arrays, scalars = saved["arrays"], saved["scalars"]

        def restore(prefix: str) -> TrainState:
            s = self.state
            return s._replace(params=fill(s.params, arrays, prefix=prefix + "['params']"),
                              rest=fill(s.rest, arrays, prefix=prefix + "['rest']"),
                              tables=fill(s.tables, arrays, prefix=prefix + "['tables']"))
        self.state = restore("['state']")
        if any(key.startswith("['rank_state']") for key in arrays):
            self.rank_state = restore("['rank_state']")
        for name, term in self.terms.items():
            term.weight = float(scalars[f"['terms']['{name}']"])

    # ------------------------------------------------------------------ inference
    def user_vectors(self, users: jax.Array, state: TrainState | None = None) -> UserVectors:
        """``[B]`` users -> (user factors ``[B, d]``, user bias ``[B]``, interest logits ``[B, K]``) of
        ``state`` (default: the fitted state ``predict`` uses)."""
        state = self.state if state is None else state
        vec, bias, interest = trained_vectors(self.graphdef, state.params, state.rest, self.factors(state), self.seq,
                                              self.has_cf, self.has_factors, users, self.blend)
        seq = (self.seq["items"][users], self.seq["mask"][users]) if self.item_transfer else (None, None)
        return UserVectors(vec, bias, interest, self.o2[np.asarray(users)] if self.terms else None, *seq)

    def score(self, users: jax.Array) -> jax.Array:
        """``[B, I_CF]`` ranking scores (from ``rank_state`` when ``rank_monitor`` chose one), plus the terms."""
        state = self.state if self.rank_state is None else self.rank_state
        return ranked(self, self.user_vectors(users, state), users, state)

    def score_candidates(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """:meth:`score` of each user's ``items [B, n]`` only (the sampled protocols): ``[B, n]``."""
        state = self.state if self.rank_state is None else self.rank_state
        return ranked(self, self.user_vectors(users, state), users, state, candidates=items)

    def score_new(self, hist) -> tuple[jax.Array, np.ndarray]:
        """Users outside training (:class:`jmf.recommend.History`): ``([B, I_CF] scores, [B] has DL-side history)``."""
        user, usable = new_user_vectors(self, hist)
        return ranked(self, user, np.arange(len(hist.users)), self.state if self.rank_state is None
                      else self.rank_state), usable

    def interest_new(self, hist) -> jax.Array:
        """``[B, K]`` interest distribution of users outside training, from their DL-side history."""
        return jax.nn.softmax(new_user_vectors(self, hist)[0].interest, axis=-1)

    def factors(self, state: TrainState) -> dict:
        """``state``'s tables with ``P, Q`` as inference reads them: the tables themselves, or (``model/cf=graph``)
        their propagation over the joint graph, computed once per state."""
        if not self.cf.dense:
            return state.tables
        if self._factors[0] is not state.tables:
            P, Q, _ = propagated(self.cf, state.tables, self.seq["cf_graph"])
            self._factors = (state.tables, {**state.tables, "P": P, "Q": Q})
        return self._factors[1]

    @property
    def ranks_by_rank_bias(self) -> bool:
        """Whether ``score`` ranks with the ``L_rank`` logits (ratings and ``weights.rank > 0``)."""
        return self.kind == "mse" and self.weights.rank > 0

    def predict(self, users: np.ndarray, items: np.ndarray, vectors=None) -> np.ndarray:
        """``μ + b_u + b_i + p_u·Q_i`` for paired users and items (the encoder runs once per distinct user);
        ``vectors``: the users' :class:`UserVectors` (default :meth:`user_vectors`)."""
        vectors = vectors or self.user_vectors
        if len(users) == 0:
            return np.zeros(0, np.float32)
        uniq, inverse = np.unique(np.asarray(users), return_inverse=True)
        B = self.eval_batch_size
        padded = np.zeros(-(-len(uniq) // B) * B, np.int32)
        padded[:len(uniq)] = uniq
        parts = [vectors(jnp.asarray(padded[s:s + B])) for s in range(0, len(padded), B)]
        vec = np.concatenate([np.asarray(p.vec) for p in parts])[inverse]
        bias = np.concatenate([np.asarray(p.bias) for p in parts])[inverse]
        t = self.factors(self.state)
        q, b_i = np.asarray(t["Q"])[items], np.asarray(t["item_bias"])[items, 0]
        return (self.mean + bias + b_i + (vec * q).sum(-1)).astype(np.float32)

    def interest(self, users: jax.Array) -> jax.Array:
        """``[B, K]`` interest distribution ``softmax(I_u)`` over the CF-side categories (of the state
        ``score`` ranks with)."""
        return jax.nn.softmax(self.user_vectors(users, self.rank_state).interest, axis=-1)
