"""Recommend with a saved model: known users, new users from their other-category history, interest,
and explanations.  ``jmf.load(run_dir)`` returns a :class:`Recommender`; ``jmf-recommend`` is its CLI.

Ids in and out are the dataset's raw ids (strings).  A *history* is a DataFrame of behaviours with
columns ``user, item`` and optionally ``rating`` and ``timestamp``; each item is mapped to the CF side
or the DL side of the saved partition.  Items the model never saw are dropped and counted
(``DataFrame.attrs["unknown_items"]``).  New users are scored by the model's own inference for users
outside training (``score_new``: JMF encodes the DL-side history and maps it, factor models fold the user
in by least squares on their item factors, the CDR baselines go through their own mapping); a user
the model cannot score from what they have -- no usable behaviour, or only DL-side history for a model
without a cross-category path -- gets the training popularity ranking and ``fallback = True``.

Explanations (:meth:`Recommender.explain`) are occlusion attributions: the contribution of a DL-side
category (or item) of the user's history to an item's score is the score with the whole history
minus the score with that category's (item's) behaviours left out -- exact for the model, cheap
(one batched ``score_new`` per user), and needing no gradient.  Scores are centred per user first
(minus their mean over the CF-side items), so a term that shifts every item alike, such as the
user bias ``b̂_u``, which changes no ranking, is not credited to any behaviour.  Only a model whose
new-user scores move with the DL-side history has explanations (:data:`EXPLAINED`; for the others, which
fold in CF-side rows only or rank by popularity, every contribution would be zero): ``explain`` refuses
the others by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.sparse as sp

from jmf.artifact import read
from jmf.data.split import SplitData
from jmf.errors import JmfError
from jmf.models.base import FoldsIn, NewUserInterest
from jmf.pipeline import eval_config, evaluate

log = logging.getLogger("jmf")
COLUMNS = ["user", "rank", "item", "score"]
# The configs whose new-user scores move with the DL-side history, i.e. that have explanations
# (tests/test_artifact.py measures it on every conf/model; a model from outside is probed the same way).
EXPLAINED = ("jmf", "jmf_map", "cooc", "cmf", "emcdr", "ptupcdr", "lightgcn_merged")


class RecommendError(JmfError, ValueError):
    """Bad input to the recommender (ids, columns, files); the message names the culprit."""


@dataclass
class History:
    """New users' behaviour mapped onto the saved split (row ``b`` is ``users[b]``).

    ``cf [B, I_CF]`` and ``dl [B, I_DL]`` hold the values (ratings, or 1 on implicit data); ``dl_order[b]``
    is user ``b``'s DL-side local item ids oldest first, ``dl_values[b]`` their values.
    """

    users: list[str]
    cf: sp.csr_matrix
    dl: sp.csr_matrix
    dl_order: list[np.ndarray]
    dl_values: list[np.ndarray]

    def without(self, b: int, keep: np.ndarray) -> "History":
        """User ``b`` alone, with only the DL-side behaviours where ``keep`` (over ``dl_order[b]``) is true."""
        items, values = self.dl_order[b][keep], self.dl_values[b][keep]
        dl = sp.csr_matrix((values, (np.zeros(len(items), np.int64), items)), shape=(1, self.dl.shape[1]))
        return History([self.users[b]], self.cf[b], dl, [items], [values])

    @staticmethod
    def stack(parts: list["History"]) -> "History":
        return History([u for p in parts for u in p.users], sp.vstack([p.cf for p in parts]).tocsr(),
                       sp.vstack([p.dl for p in parts]).tocsr(), [o for p in parts for o in p.dl_order],
                       [v for p in parts for v in p.dl_values])


class Recommender:
    """A fitted model with its id maps (see the module docstring); from :func:`jmf.load`."""

    def __init__(self, model, split: SplitData, cfg, meta: dict):
        self.model, self.split, self.cfg, self.meta = model, split, cfg, meta
        data = split.data
        self.user_ids = np.asarray(data.user_ids).astype(str)
        self._user = {u: i for i, u in enumerate(self.user_ids)}
        item_ids = np.asarray(data.item_ids).astype(str)
        self.cf_item_ids, self.dl_item_ids = item_ids[split.cf_items], item_ids[split.dl_items]
        self._cf = {it: j for j, it in enumerate(self.cf_item_ids)}
        self._dl = {it: j for j, it in enumerate(self.dl_item_ids)}
        self.cf_categories = [str(data.category_names[c]) for c in split.partition.cf_categories]
        self.dl_categories = [str(data.category_names[c]) for c in split.partition.dl_categories]
        pos = {c: k for k, c in enumerate(split.partition.dl_categories)}
        self.dl_item_category = np.array([pos[c] for c in data.item_category[split.dl_items]], np.int64)
        self.popularity = np.diff(split.train.tocsc().indptr).astype(np.float32)
        self._explains: bool | None = None             # see explains(): probed on first use

    # ------------------------------------------------------------------ known users
    def recommend(self, users, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` CF-side items for users in training (raw ids); ``exclude_seen`` drops their training items."""
        users, index = self._known(users, "recommend_new")
        scores = self._score_known(index)
        seen = self.split.train[index] if exclude_seen else None
        return self._top(users, scores, seen, self._check_k(k))

    def _known(self, users, instead: str) -> tuple[list[str], np.ndarray]:
        """Raw user ids (one or a list) -> ``(ids as text, their indices)``; unknown ids are refused naming ``instead``."""
        users = [str(u) for u in (users if isinstance(users, (list, tuple, np.ndarray, pd.Series)) else [users])]
        unknown = [u for u in users if u not in self._user]
        if unknown:
            raise RecommendError(f"users not in the saved run: {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                                 f"({len(unknown)} of {len(users)}); use {instead} for new users")
        return users, np.array([self._user[u] for u in users], np.int64)

    def _score_known(self, index: np.ndarray, batch: int = 512) -> np.ndarray:
        out = []
        for start in range(0, len(index), batch):
            chunk = index[start:start + batch]
            padded = np.zeros(batch if len(index) > batch else max(len(chunk), 1), np.int32)
            padded[:len(chunk)] = chunk
            out.append(np.asarray(self.model.score(jnp.asarray(padded)))[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, len(self.cf_item_ids)), np.float32)

    def evaluate(self) -> dict[str, float]:
        """The run's ``valid/...`` and ``test/...`` metrics (its slices too), recomputed from the loaded model."""
        return evaluate(self.model, self.split, eval_config(self.cfg.get("eval")), details={})

    # ------------------------------------------------------------------ new users
    def history(self, frame: pd.DataFrame, source: str = "history") -> History:
        """Map a behaviour DataFrame onto the saved split (see :class:`History`)."""
        frame = _check_frame(frame, source)
        items = frame["item"].to_numpy(object)
        cf_index = np.array([self._cf.get(i, -1) for i in items], np.int64)      # dict lookups: O(rows)
        dl_index = np.array([self._dl.get(i, -1) for i in items], np.int64)
        known = (cf_index >= 0) | (dl_index >= 0)
        unknown = int((~known).sum())
        users = list(dict.fromkeys(frame["user"]))          # a user with only unknown items stays (fallback)
        frame, cf_index, dl_index = frame[known], cf_index[known], dl_index[known]
        row = {u: b for b, u in enumerate(users)}
        value = frame["rating"].to_numpy(np.float32) if "rating" in frame else np.ones(len(frame), np.float32)
        if self.split.implicit:
            value = np.ones(len(frame), np.float32)
        rows = np.array([row[u] for u in frame["user"].to_numpy(object)], np.int64)
        is_cf = cf_index >= 0
        cf = _matrix(rows[is_cf], cf_index[is_cf], value[is_cf], (len(users), len(self._cf)))
        # the DL side: the behaviours outside the CF side; split=category_holdout: every behaviour (each target
        # is predicted from the others, so a target's items are also another target's input)
        is_dl = (dl_index >= 0) if self.split.holdout is not None else ~is_cf
        dl_items = dl_index[is_dl]
        dl = _matrix(rows[is_dl], dl_items, value[is_dl], (len(users), len(self._dl)))
        order = _time_order(frame[is_dl], rows[is_dl])
        dl_rows, dl_vals = rows[is_dl][order], value[is_dl][order]
        seq_items, seq_vals = dl_items[order], dl_vals
        splits = np.searchsorted(dl_rows, np.arange(1, len(users)))
        hist = History(users, cf, dl, np.split(seq_items, splits), np.split(seq_vals, splits))
        hist.unknown_items = unknown
        if unknown:
            log.info("%s: %d behaviour(s) with items the model never saw were dropped", source, unknown)
        return hist

    def score_new(self, hist: History) -> tuple[np.ndarray, np.ndarray]:
        """``([B, I_CF] scores, [B] fallback)``: the model's scores of new users, popularity where it has none."""
        B = len(hist.users)
        scores = np.broadcast_to(self.popularity, (B, len(self.popularity))).copy()
        fallback = np.ones(B, bool)
        if B and isinstance(self.model, FoldsIn):
            got, usable = self.model.score_new(hist)
            got = np.asarray(got)
            scores[usable], fallback = got[usable], ~np.asarray(usable)
        return scores, fallback

    def recommend_new(self, history: pd.DataFrame, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` CF-side items for users outside training, from their behaviour DataFrame (no retraining).

        Columns ``user, rank, item, score, fallback`` (``fallback``: scored by popularity, see the module
        docstring); ``attrs["unknown_items"]`` counts the dropped behaviours.
        """
        hist = self.history(history)
        scores, fallback = self.score_new(hist)
        out = self._top(hist.users, scores, hist.cf if exclude_seen else None, self._check_k(k))
        out["fallback"] = np.repeat(fallback, self._check_k(k))[:len(out)] if len(out) else []
        out.attrs["unknown_items"] = hist.unknown_items
        out.attrs["fallback_users"] = int(fallback.sum())
        return out

    def interest(self, who) -> pd.DataFrame:
        """The interest distribution ``softmax(I_u)`` over the CF-side categories (``model=jmf_map``: every target
        category) of new users, from their behaviour DataFrame, or of users in training, from a list of their ids:
        one row per user, one column per category."""
        if not isinstance(self.model, NewUserInterest):
            raise RecommendError(f"interest: {type(self.model).__name__} has no interest vector (model=jmf has)")
        if isinstance(who, pd.DataFrame):
            hist = self.history(who)
            users = hist.users
            values = np.asarray(self.model.interest_new(hist)) if users else np.zeros((0, len(self.cf_categories)))
        else:
            users, index = self._known(who, "interest(<behaviour DataFrame>)")
            values = np.asarray(self.model.interest(jnp.asarray(index, jnp.int32)))
        frame = pd.DataFrame(values, columns=self.cf_categories)
        frame.insert(0, "user", users)
        return frame

    def explain(self, history: pd.DataFrame, items=None, k: int = 10, top_items: int = 3) -> pd.DataFrame:
        """How much each DL-side category, and the ``top_items`` DL-side items, of each user's history contributed to
        the score of each of ``items`` (default: the user's top ``k``).  Rows ``user, item, kind
        (category|item), source, contribution``; occlusion attribution (module docstring).  Refused for a
        model without explanations (:meth:`check_explains`)."""
        self.check_explains()
        hist = self.history(history)
        base, fallback = self.score_new(hist)
        rows = []
        for b, user in enumerate(hist.users):
            targets = self._explained_items(b, base, hist, items, k)
            rows += self._occlusions(hist, b, user, base[b], targets, top_items, bool(fallback[b]))
        return pd.DataFrame(rows, columns=["user", "item", "kind", "source", "contribution"])

    def explains(self) -> bool:
        """Whether :meth:`explain` has anything to attribute: the model's scores of a new user move with their
        DL-side history.  Probed once: the training user with the most DL-side rows against an empty history
        (a model that folds in CF-side rows only, or ranks by popularity, scores the two alike)."""
        if self._explains is None:
            self._explains = isinstance(self.model, FoldsIn) and self._moves_with_dl_history()
        return self._explains

    def _moves_with_dl_history(self) -> bool:
        dl = self.split.dl.tocsr()
        if dl.nnz == 0:
            return False
        u = int(np.argmax(np.diff(dl.indptr)))
        row = dl[u].astype(np.float32)
        full = History(["probe"], sp.csr_matrix((1, len(self.cf_item_ids)), dtype=np.float32), row,
                       [row.indices.astype(np.int64)], [row.data])
        scores, fallback = self.score_new(History.stack([full, full.without(0, np.zeros(row.nnz, bool))]))
        return bool(fallback[0] != fallback[1] or not np.allclose(scores[0], scores[1]))

    def check_explains(self, source: str = "explain") -> None:
        """Raise :class:`RecommendError` naming the model and the models with explanations, unless :meth:`explains`."""
        if self.explains():
            return
        model = type(self.model)
        target = self.meta.get("target") or f"{model.__module__}.{model.__qualname__}"
        why = ("its scores of a new user do not move with their DL-side history" if isinstance(self.model, FoldsIn)
               else "it cannot score users outside training")
        raise RecommendError(f"{source}: the saved model {model.__name__} ({target}) has no explanations: {why}, "
                             "and an explanation is the share of each DL-side category and item of that history in "
                             "a score; explanations work with the models that score new users from their DL-side "
                             f"history: {', '.join(f'model={m}' for m in EXPLAINED)}")

    def _explained_items(self, b: int, base: np.ndarray, hist: History, items, k: int) -> np.ndarray:
        if items is None:
            return self._top([hist.users[b]], base[b:b + 1], hist.cf[b], self._check_k(k))["item"].map(
                self._cf).to_numpy(np.int64)
        unknown = [i for i in items if str(i) not in self._cf]
        if unknown:
            raise RecommendError(f"explain: items {unknown[:5]} are not CF-side items of the saved model")
        return np.array([self._cf[str(i)] for i in items], np.int64)

    def _occlusions(self, hist: History, b: int, user: str, base: np.ndarray, targets: np.ndarray, top_items: int,
                    fallback: bool) -> list:
        order = hist.dl_order[b]
        if fallback or len(order) == 0:
            return []
        cats = self.dl_item_category[order]
        present = np.unique(cats)
        variants = [hist.without(b, cats != c) for c in present]
        recent = np.arange(max(0, len(order) - 50), len(order))        # the 50 latest DL-side behaviours
        variants += [hist.without(b, np.arange(len(order)) != j) for j in recent]
        scores, _ = self.score_new(History.stack(variants))
        # scores centred per user: a shift of every item alike (a user bias) changes no ranking
        centred = scores - scores.mean(1, keepdims=True)
        delta = (base[targets] - base.mean())[None, :] - centred[:, targets]     # [variants, items]
        rows = []
        for t, item in enumerate(targets):
            for v, c in enumerate(present):
                rows.append((user, self.cf_item_ids[item], "category", self.dl_categories[c], float(delta[v, t])))
            per_item = delta[len(present):, t]
            for j in np.argsort(-per_item)[:top_items]:
                rows.append((user, self.cf_item_ids[item], "item", self.dl_item_ids[order[recent[j]]],
                             float(per_item[j])))
        return rows

    # ------------------------------------------------------------------ helpers
    def _check_k(self, k: int) -> int:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise RecommendError(f"k: {k!r} must be a positive integer")
        return int(min(k, len(self.cf_item_ids)))

    def _top(self, users: list[str], scores: np.ndarray, seen, k: int) -> pd.DataFrame:
        scores = np.array(scores, np.float64)
        if seen is not None and seen.nnz:
            coo = sp.csr_matrix(seen).tocoo()
            scores[coo.row, coo.col] = -np.inf
        if len(users) == 0:
            return pd.DataFrame(columns=COLUMNS)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
            np.arange(scores.shape[1]), (len(users), 1))
        picked = np.take_along_axis(scores, top, 1)
        order = np.argsort(-picked, axis=1, kind="stable")
        top, picked = np.take_along_axis(top, order, 1), np.take_along_axis(picked, order, 1)
        return pd.DataFrame({"user": np.repeat(users, top.shape[1]), "rank": np.tile(np.arange(1, top.shape[1] + 1),
                                                                                    len(users)),
                             "item": self.cf_item_ids[top.ravel()], "score": picked.ravel()})


def _check_frame(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise RecommendError(f"{source}: expected a DataFrame with columns user, item[, rating, timestamp]")
    missing = [c for c in ("user", "item") if c not in frame.columns]
    if missing:
        raise RecommendError(f"{source}: missing column(s) {missing} (has {list(frame.columns)}; needs user, item"
                             "[, rating, timestamp])")
    frame = frame.copy()
    frame["user"], frame["item"] = frame["user"].astype(str), frame["item"].astype(str)
    if "rating" in frame:
        rating = pd.to_numeric(frame["rating"], errors="coerce")
        if rating.isna().any():
            bad = int(np.flatnonzero(rating.isna().to_numpy())[0])
            raise RecommendError(f"{source}: column 'rating' is not numeric at row {bad} ({frame['rating'].iloc[bad]!r})")
        frame["rating"] = rating
    return frame


def _time_order(frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Order by (user row, time, file order); the time column may be numbers or date strings."""
    position = np.arange(len(frame))
    if "timestamp" not in frame:
        return np.lexsort((position, rows))
    time = pd.to_numeric(frame["timestamp"], errors="coerce")
    if time.isna().any():
        time = pd.to_datetime(frame["timestamp"], errors="coerce")
        if time.isna().any():
            raise RecommendError("history: column 'timestamp' has values that are neither numbers nor dates")
        time = time.astype("int64")
    return np.lexsort((position, time.to_numpy(), rows))


def _matrix(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR of the (row, col) entries; a repeated behaviour keeps its last value."""
    if len(rows) == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    key = rows * shape[1] + cols
    _, last = np.unique(key[::-1], return_index=True)
    keep = len(key) - 1 - last
    return sp.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=shape, dtype=np.float32)


def load(run_dir: str | Path, strict: bool = True) -> Recommender:
    """The model saved in ``run_dir/model/`` as a :class:`Recommender` (``strict``: refuse other versions)."""
    model, split, cfg, meta, _ = read(run_dir, strict)
    return Recommender(model, split, cfg, meta)
