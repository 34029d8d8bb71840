"""``model=jmf_map``: one joint model over every target category of ``split=category_holdout``.

For a user and a target category ``t``, the input is the user's behaviour outside ``t`` (the encoder's sequence
with ``t``'s items hidden) and the target their behaviour in ``t``; one JMF -- shared encoder, CF tables over
every target's items, the interest vector over every target, a target embedding added to ``h_u`` before the
mapping head, and per target the single-target model's CF side (``P`` and ``b_u`` have a row per user and
target, started from the target's own SVD) -- is trained on all (user, target) pairs, each batch one target's users with negatives from that
target's items (:func:`~jmf.models.joint.plan.target_batches`).  Everything else is JMF's (losses, schedule, score
terms); the DL-side rating offset is off (it would read the target's own ratings).

Evaluation goes target by target: :meth:`TransferJMF.target_view` is the model seen as a single-target model on
:func:`jmf.data.holdout.target_view`'s split, so every protocol and metric of a cold-start run applies, with
the same cold users a single-target run of that split has.  With ``hide_source`` the view also hides a source
category from the input: the occlusion :mod:`jmf.transfer_map` measures.
"""

from __future__ import annotations

import copy
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx

from jmf.data.holdout import view_at
from jmf.data.split import SplitData
from jmf.errors import ConfigError
from jmf.evaluate.validator import Validator
from jmf.models.base import RunContext, TrainPlan
from jmf.models.joint.model import JMF
from jmf.models.joint.vectors import blended
from jmf.models.joint.net import encoder_inputs
from jmf.models.joint.plan import target_batches
from jmf.models.joint.infer import map_new_users, new_user_inputs
from jmf.models.joint.terms import UserVectors, binary_rows, o2_rows
from jmf.train.engine import Engine

log = logging.getLogger(__name__)


class TransferJMF(JMF):
    """JMF over every target category in one run (module docstring); the arguments are :class:`JMF`'s, and

    Args:
      source_weights: learn, per target, each input category's weight in the encoder's pooling (``true``: the
        encoder must pool by a weighted mean, ``model/encoder=bag``; ``null``: where the encoder can).  Off by
        default: whether it helps depends on the data (choose it on validation).
    """

    name = "jmf_map"

    def __init__(self, *args, source_weights: bool | None = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.source_weights = source_weights

    def net_options(self, split: SplitData) -> dict:
        return {"n_targets": len(split.holdout.targets), "source_weights": self.source_weights}

    def user_rows(self, split: SplitData) -> int:
        return split.n_users * len(split.holdout.targets)

    def start_factors(self, split: SplitData, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Each target's own start (``model/init`` on its :func:`~jmf.data.holdout.target_view`): ``P`` stacks the
        targets' user factors (row ``k·U + u``), ``Q`` their item factors (the targets' item ranges in order);
        a target with fewer items than ``dim`` gets factors zero-padded to ``dim``."""
        Ps, Qs = [], []
        for k, view in enumerate(self.views):
            dim = max(1, min(self.dim, min(view.train.shape) - 1))
            P, Q = self.init(view, dim, self.kind == "mse", seed + k)
            Ps.append(np.pad(np.asarray(P, np.float32), ((0, 0), (0, self.dim - dim))))
            Qs.append(np.pad(np.asarray(Q, np.float32), ((0, 0), (0, self.dim - dim))))
        return np.concatenate(Ps), np.concatenate(Qs)

    def setup(self, split: SplitData, ctx: RunContext | None = None) -> TrainPlan:
        h = split.holdout
        if any(getattr(t, "train_weight", 0.0) for t in self.terms.values()):
            raise ConfigError("model.terms.<term>.train_weight: model=jmf_map scores one target at a time and does "
                              "not put score terms inside its fit yet; set train_weight=0")
        if self.item_transfer:
            raise ConfigError("model/item_transfer: model=jmf_map scores one target at a time and does not read it yet; "
                              "leave model/item_transfer out")
        if self.cf.dense:
            raise ConfigError("model/cf=graph: model=jmf_map keeps one user row per target, which one joint graph "
                              "does not give; use model/cf=mf")
        if h is None:
            raise ConfigError("model=jmf_map trains every target category in one run: it needs split=category_holdout "
                              "(split.target=<name> is one target's cold-start split, for model=jmf)")
        if self.user_offset:
            log.info("model=jmf_map: the DL-side rating offset is off (it would read the target's own ratings)")
            self.user_offset = False
        self.holdout, self.item_start = h, h.item_start
        self.holdout_names = [str(split.data.category_names[t]) for t in h.targets]
        self.views = [view_at(split, k) for k in range(len(h.targets))]
        terms, self.terms = self.terms, {}
        try:
            plan = super().setup(split, ctx)
        finally:
            self.terms = terms
        if self.literal:
            raise ConfigError("model.head: the literal head scores every CF-side item from I_u; model=jmf_map "
                              "scores one target at a time (model/head=linear|mlp|bridge|sigmoid)")
        csr = split.train.tocsr()
        self.blocks = [csr[:, lo:hi].tocsr() for lo, hi in zip(h.item_start[:-1], h.item_start[1:])]
        self.warm = jnp.asarray(np.stack([np.diff(b.indptr) > 0 for b in self.blocks], 1))      # [U, T]
        for term in terms.values():
            term.weight = term.weights[0]
        self.target_terms: dict[str, np.ndarray] = {}       # per target, each term's weight chosen on its validation
        self.view_terms = [self._prepared(terms, view) for view in self.views]
        self.view_o2 = [o2_rows(view, per_user=True) if terms else None for view in self.views]
        self.validator = PerTargetValidator([Validator.of(ctx, view, self.eval_batch_size) for view in self.views])
        return plan

    @staticmethod
    def _prepared(terms: dict, view: SplitData) -> dict:
        out = {}
        for name, term in terms.items():
            out[name] = copy.copy(term)
            out[name].prepare(view)
        return out

    def _epoch_plan(self, engine: Engine, csr, dl_users: np.ndarray, rng: np.random.Generator):
        seq_ids = self.holdout.targets + 1        # the sequences' category ids: every category, id + 1
        return target_batches(engine, self.blocks, self.item_start, seq_ids, dl_users, rng, self.batch_size,
                              self.items_per_user)

    # ------------------------------------------------------------------ score terms, per target
    def choose_term_weight(self, split: SplitData, name: str) -> dict[str, float]:
        """Each target's weight of term ``name`` chosen on that target's validation fold (the choice a single-target
        run of it makes; the first weight where a target has no validation users); ``term.weight`` is the weight
        best on the targets' mean, what one shared weight would be."""
        term, metric, key = self.terms[name], self._term_metric, f"model.terms.{name}.weight"
        self.target_terms.pop(name, None)
        values = np.full((len(self.views), len(term.weights)), -np.inf)
        for i, weight in enumerate(term.weights):
            term.weight = weight
            for k, validator in enumerate(self.validator.validators):
                if validator.has_data:
                    values[k, i] = validator(self.target_view(k), metric, key)
        self.target_terms[name] = np.asarray(term.weights, np.float32)[np.argmax(values, 1)]
        seen = np.isfinite(values).all(1)
        mean = values[seen].mean(0) if seen.any() else np.zeros(len(term.weights))
        term.weight = term.weights[int(np.argmax(mean))]
        log.info("model.terms.%s.weight per target (validation %s): %s", name, metric,
                 ", ".join(f"{n} {w:g}" for n, w in zip(self.holdout_names, self.target_terms[name])))
        return {f"train/{name}_score": float(self.target_terms[name].mean()),
                **{f"train/targets/{n}/{name}_score": float(w)
                   for n, w in zip(self.holdout_names, self.target_terms[name])},
                **{f"train/valid_{metric}@{name}_score={w:g}": float(v) for w, v in zip(term.weights, mean)}}

    def term_weight(self, name: str, k: int) -> float:
        """Term ``name``'s weight for target ``k``: its own once chosen, else the shared one."""
        chosen = self.target_terms.get(name)
        return self.terms[name].weight if chosen is None else float(chosen[k])

    def fitted_state(self) -> dict:
        return {**super().fitted_state(), "target_terms": dict(self.target_terms)}

    def load_fitted(self, split: SplitData, saved: dict) -> None:
        super().load_fitted(split, saved)
        for name in self.terms:
            chosen = saved["arrays"].get(f"['target_terms']['{name}']")
            if chosen is not None:
                self.target_terms[name] = np.asarray(chosen, np.float32)

    # ------------------------------------------------------------------ per target
    def target_view(self, k: int, hide_source: int | None = None) -> TargetView:
        """Target ``k`` (a position in ``split.holdout.targets``) as a single-target model; ``hide_source``: a
        category id also hidden from every user's input."""
        return TargetView(self, k, hide_source)

    def score(self, users: jax.Array) -> jax.Array:
        """``[B, I_CF]``: each target's items scored from the input outside that target."""
        return jnp.concatenate([self.target_view(k).score(users) for k in range(len(self.views))], axis=1)

    def score_candidates(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """:meth:`score` at ``items [B, n]`` (picked: the joint model's candidate path does not see the targets)."""
        return jnp.take_along_axis(self.score(users), items, 1)

    def score_new(self, hist) -> tuple[jax.Array, np.ndarray]:
        """Users outside training (:class:`jmf.recommend.History`): each target's items scored from their history
        outside that target, as :meth:`score` scores a training user's."""
        inputs = new_user_inputs(self, hist)
        state = self.state if self.rank_state is None else self.rank_state
        blocks = []
        for k, t in enumerate(self.holdout.targets):
            vec, bias, interest = map_new_users(self, inputs, inputs["mask"] & (inputs["cats"] != t + 1), k)
            o2 = (binary_rows(hist.dl[:, self.views[k].dl_items], per_user=True)
                  if self.view_o2[k] is not None else None)
            blocks.append(self.target_view(k).rank(UserVectors(vec, bias, interest, o2), np.arange(len(hist.users)),
                                                   state))
        return jnp.concatenate(blocks, axis=1), inputs["mask"].any(1)

    def predict(self, users: np.ndarray, items: np.ndarray, vectors=None) -> np.ndarray:
        users, items = np.asarray(users), np.asarray(items)
        out = np.zeros(len(users), np.float32)
        which = np.searchsorted(self.item_start, items, side="right") - 1
        for k in np.unique(which):
            rows = which == k
            out[rows] = self.target_view(int(k)).predict(users[rows], items[rows] - self.item_start[k])
        return out


class TargetView:
    """:class:`TransferJMF` on one target ``k``: ``score`` over the target's items, ``predict`` with the target's
    local item indices (the columns of :func:`jmf.data.holdout.target_view`'s split)."""

    def __init__(self, model: TransferJMF, k: int, hide_source: int | None = None):
        self.model, self.k, self.hide_source = model, int(k), hide_source
        self.lo, self.hi = int(model.item_start[k]), int(model.item_start[k + 1])
        t = int(model.holdout.targets[k])
        if hide_source == t:
            raise ValueError(f"hide_source: category {t} is the target itself")
        self.hide = jnp.asarray([t + 1, 0 if hide_source is None else hide_source + 1], jnp.int32)
        self.rates = model.kind == "mse"
        view = model.views[self.k]                   # the term inputs' columns of the hidden source, zeroed
        self.keep = (None if hide_source is None else
                     sp.diags((view.data.item_category[view.dl_items] != hide_source).astype(np.float32)))

    def user_vectors(self, users, state=None) -> UserVectors:
        m = self.model
        state = m.state if state is None else state
        vec, bias, interest = _target_vectors(m.graphdef, state.params, state.rest, state.tables, m.seq,
                                              m.warm[:, self.k], jnp.asarray(users), m.blend, self.hide, self.k)
        o2 = None
        if m.view_o2[self.k] is not None:
            o2 = m.view_o2[self.k][np.asarray(users)]
            if self.keep is not None:
                o2 = (o2 @ self.keep).tocsr()
        return UserVectors(vec, bias, interest, o2)

    def score(self, users: jax.Array) -> jax.Array:
        m = self.model
        state = m.state if m.rank_state is None else m.rank_state
        return self.rank(self.user_vectors(users, state), users, state)

    def rank(self, user: UserVectors, users, state) -> jax.Array:
        """``[B, I_t]`` scores of the target's items for users with these vectors (``users``: what terms index)."""
        m = self.model
        t, sl = state.tables, slice(self.lo, self.hi)
        if m.ranks_by_rank_bias:
            scores = user.vec @ t["Q"][sl].T + t["rank_bias"][sl, 0][None, :]
        else:
            scores = user.vec @ t["Q"][sl].T + t["item_bias"][sl, 0][None, :] + user.bias[:, None]
        for name, term in m.view_terms[self.k].items():
            weight = m.term_weight(name, self.k)
            if weight:
                scores = scores + weight * term(users, user)
        return scores

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return JMF.predict(self.model, users, np.asarray(items) + self.lo, self.user_vectors)


class PerTargetValidator:
    """The validator of ``model=jmf_map``: a metric is the mean over targets of each target's validation figure."""

    mode = staticmethod(Validator.mode)

    def __init__(self, validators: list[Validator]):
        self.validators = validators

    @property
    def has_data(self) -> bool:
        return any(v.has_data for v in self.validators)

    def metrics(self, model: TransferJMF, names, keys=None) -> dict[str, float]:
        per = [v.metrics(model.target_view(k), names, keys) for k, v in enumerate(self.validators) if v.has_data]
        per = [p for p in per if p]
        return {n: float(np.mean([p[n] for p in per])) for n in names} if per else {}

    def __call__(self, model: TransferJMF, metric: str, key: str = "model.monitor") -> float | None:
        return self.metrics(model, [metric], [key]).get(metric)


@functools.partial(jax.jit, static_argnums=0)
def _target_vectors(graphdef, params, rest, tables, seq, warm, users, blend, hide, k):
    """:func:`jmf.models.joint.model._user_vectors` for target ``k``: the categories in ``hide`` (sequence ids,
    0 = none) hidden from the input, warm = the user has training rows in the target."""
    net = nnx.merge(graphdef, params, rest)
    cats = seq["categories"][users]
    mask = seq["mask"][users] & ~(cats[:, :, None] == hide[None, None, :]).any(-1)
    mapped = net.map(seq["items"][users], cats, mask, seq["offset"][users], target=jnp.full(users.shape, k),
                     **encoder_inputs(net, seq, users))
    rows = users + k * warm.shape[0]                    # (user, target k)'s row of P and b_u
    vec, bias = blended(mapped, warm[users], mask.any(1), tables["P"][rows], tables["user_bias"][rows, 0], blend)
    return vec, bias, mapped.interest
