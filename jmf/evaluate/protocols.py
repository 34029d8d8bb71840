"""Evaluators over a score function: full ranking, sampled ranking, rating error.

Evaluators never see a model or a trainer (design.md#conventions): they take
``score_fn(users: jax.Array[B]) -> jax.Array[B, I_CF]`` (scores over CF-side items) or
``predict_fn(users, items) -> [N]`` (ratings), and host-side CSR matrices.  Users are fed
in fixed-size padded batches so the scoring function compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jmf.evaluate import metrics as M
from jmf.evaluate.beyond import catalogue, list_metrics
from jmf.errors import ConfigError

SCORE_BLOCK_ELEMENTS = 1 << 23  # elements of one [B, I] score block in evaluate_full (32 MB)

ScoreFn = Callable[[jax.Array], jax.Array]
PredictFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvalConfig:
    """Knobs of the ``eval`` group.

    Attributes:
      protocol: ``full`` (rank all CF-side items, training items masked) or ``sampled``
        (each held-out item among ``negatives`` sampled negatives, or a fixed ``candidates`` file).
      ks: cut-offs.
      negatives: number of sampled negatives (``sampled``).
      candidates: path of a fixed candidate file (Bi-TGCF ``test_neg.txt``); test only.
      sampling_seed: seed of the negative sampler (independent of the training seed).
      batch_size: users per device batch.
      ratings: also compute RMSE/MAE when the data is explicit.
      test_sampling_seeds: more negative-sampler seeds for the test fold of ``sampled``
        (:func:`evaluate_test_extras`: ``s<seed>/<metric>`` beside the main ``sampling_seed``).
      test_full: also rank every CF-side item on the test fold of ``sampled`` (``full/<metric>``;
        sampled metrics flatter models and can reorder them, Krichene & Rendle 2020).
      valid_protocol: how models validate while they fit (epoch selection, early stopping):
        ``full`` (rank every CF-side item) or ``test`` (the test fold's main ``protocol``: with
        ``sampled``, ``negatives`` drawn negatives per held-out item, since ``candidates`` is test only).
        Models validate through :class:`jmf.evaluate.validator.Validator`, which reads this.
      plugins: modules imported at the start of a run that register a project's own metrics
        (:func:`jmf.evaluate.registry.register`).
      select_on_test: also report the test fold's figures at the validation epoch whose *test* figure of the
        monitor is best (``test_selected/<metric>``, ``test_selected/epoch``): the selection the DisenCDR
        authors' code reports, beside jmf's selection on validation in the same run (optimistic; the gap
        between the two is what selecting on test buys).  Models that validate on the engine (graph models).
    """

    protocol: str = "full"
    ks: tuple[int, ...] = (10, 20)
    negatives: int = 999
    candidates: str | None = None
    sampling_seed: int = 0
    batch_size: int = 512
    ratings: bool = True
    test_sampling_seeds: tuple[int, ...] = ()
    test_full: bool = False
    valid_protocol: str = "full"
    plugins: tuple[str, ...] = ()
    select_on_test: bool = False

    def __post_init__(self):
        if self.protocol not in ("full", "sampled"):
            raise ConfigError(f"eval.protocol: {self.protocol!r} is not full|sampled")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ConfigError(f"eval.ks: {list(self.ks)} must be positive cut-offs")
        if self.negatives < 1:
            raise ConfigError(f"eval.negatives: {self.negatives} must be >= 1")
        if self.valid_protocol not in ("full", "test"):
            raise ConfigError(f"eval.valid_protocol: {self.valid_protocol!r} is not full|test")

    def for_validation(self, ks: tuple[int, ...], batch_size: int, ratings: bool) -> "EvalConfig":
        """The config a model validates with: ``ks``, ``batch_size`` and ``ratings`` are the model's,
        the ranking protocol follows ``valid_protocol``."""
        same = self.valid_protocol == "test"
        return EvalConfig(protocol=self.protocol if same else "full", ks=ks, negatives=self.negatives,
                          sampling_seed=self.sampling_seed, batch_size=batch_size, ratings=ratings,
                          plugins=self.plugins)


@runtime_checkable
class DotScores(Protocol):
    """A model whose ``score(users)`` is ``users_table[users] @ items_table.T`` (``+ item_bias``): the
    full-ranking evaluator then scores, masks and ranks a batch in one compiled program
    (:func:`evaluate_full`), never handing a ``[B, I]`` score block between two."""

    def score_tables(self) -> tuple[Any, Any, Any]:
        """``(users_table [U, d], items_table [I_CF, d], item_bias [I_CF] or None)`` of the fitted model."""
        ...


@runtime_checkable
class ScoresCandidates(Protocol):
    """A model that scores a few given items a user for less than every item (the joint model with item-level
    transfer: its attention over the user's DL-side history costs ``O(L·d)`` an item): the sampled evaluator
    then scores each pair's candidates (the positive and its negatives) only."""

    def score_candidates(self, users: Any, items: Any) -> Any:
        """``[B]`` users, ``[B, n]`` CF-side items -> ``[B, n]``: the values ``score(users)`` has at those items."""
        ...


def _padded_indices(mat: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """CSR rows of ``users`` -> ``[B, L]`` int32 column indices, padded with -1, L a power of 2."""
    sub = mat[users]
    lengths = np.diff(sub.indptr)
    width = 1 << int(max(1, lengths.max(initial=1)) - 1).bit_length()
    out = np.full((len(users), width), -1, np.int32)
    rows = np.repeat(np.arange(len(users)), lengths)
    cols = np.arange(sub.nnz) - np.repeat(sub.indptr[:-1], lengths)
    out[rows, cols] = sub.indices
    return out


def _full_batch(scores: jax.Array, rel_idx: jax.Array, excl_idx: jax.Array, weight: jax.Array,
                ks: tuple[int, ...]) -> tuple[dict[str, jax.Array], dict[str, jax.Array], jax.Array]:
    """The batch's sums of every ranking metric, its per-user values and its top-``max(ks)`` lists."""
    per_user, top = M.ranking_metrics_and_lists(scores, rel_idx, ks, exclude_idx=excl_idx)
    return {k: (v * weight).sum() for k, v in per_user.items()}, per_user, top


_full_batch_jit = jax.jit(_full_batch, static_argnames="ks")


@functools.partial(jax.jit, static_argnames="ks")
def _full_batch_dot(users_table: jax.Array, items_table: jax.Array, item_bias: jax.Array | None, users: jax.Array,
                    rel_idx: jax.Array, excl_idx: jax.Array, weight: jax.Array,
                    ks: tuple[int, ...]) -> tuple[dict[str, jax.Array], dict[str, jax.Array], jax.Array]:
    """:func:`_full_batch` of a :class:`~jmf.models.base.DotScores` model's scores, in one program: the
    ``[B, I]`` block is written once by the product and masked in place (1.4-1.7x the users/s of scoring
    and ranking as two programs at 10^5 items, d = 64, ``benchmarks/roofline.py``)."""
    scores = users_table[users] @ items_table.T
    if item_bias is not None:
        scores = scores + item_bias[None, :]
    return _full_batch(scores, rel_idx, excl_idx, weight, ks)


def _set_total(progress, total: int) -> None:
    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(total)


def _user_batches(users: np.ndarray, batch_size: int):
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        weight = np.zeros(batch_size, np.float32)
        weight[:len(chunk)] = 1.0
        padded = np.zeros(batch_size, np.int32)
        padded[:len(chunk)] = chunk
        yield chunk, padded, weight


def evaluate_full(score_fn: ScoreFn, exclude: sp.csr_matrix, truth: sp.csr_matrix, users: np.ndarray | None = None,
                  ks: tuple[int, ...] = (10, 20), batch_size: int = 512, progress=None,
                  tables: tuple | None = None, detail: dict | None = None) -> dict[str, float]:
    """Full-ranking metrics averaged over ``users`` (default: every user with a held-out item).

    ``progress``: optional ``advance(n)`` called per batch with its user count (and
    ``progress.set_total(n_users)`` once, when it has that attribute), e.g. a progress bar's.
    ``tables``: a :class:`~jmf.models.base.DotScores` model's ``score_tables()``, which ``score_fn`` computes
    from: a batch is then scored, masked and ranked in one program, its users sharded over this process's
    devices (the tables replicated).  ``detail``: a dict filled with ``users`` (those evaluated, in order),
    ``per_user`` (``{metric: [n_users]}``) and ``top`` (``[n_users, max(ks)]``, each user's list, best first).
    """
    if users is None:
        users = np.flatnonzero(np.diff(truth.indptr) > 0)
    users = users[np.diff(truth.indptr)[users] > 0]
    if len(users) == 0:
        return {}
    # a [B, I] score block of at most ~32 MB stays cache/memory friendly on a CPU (B=64 at 10^5 items); in one
    # program with the product, 64 MB (B=128) ranked the most users/s
    block = SCORE_BLOCK_ELEMENTS * (2 if tables is not None else 1)
    cap = 1 << max(4, int(block // max(exclude.shape[1], 1)).bit_length() - 1)
    batch_size = min(batch_size, cap, 1 << int(len(users) - 1).bit_length())
    mesh = _eval_mesh() if tables is not None else None
    if mesh is not None:      # every device ranks its share of each batch: the batch a multiple of the devices
        batch_size = -(-max(batch_size, mesh.size) // mesh.size) * mesh.size
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("users"))
        tables = jax.device_put(tables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    _set_total(progress, len(users))
    sums: dict[str, float] = {}
    parts: list[tuple[int, dict, jax.Array]] = []
    for i, (chunk, padded, weight) in enumerate(_user_batches(users, batch_size)):
        rel = _padded_indices(truth, padded)
        excl = _padded_indices(exclude, padded)
        rel[len(chunk):] = -1
        if mesh is not None and i % 8 == 7:
            jax.block_until_ready(sums)   # at most 8 sharded batches in flight (XLA CPU's cross-device sums)
        if tables is not None:
            batch = (padded, rel, excl, weight) if mesh is None else jax.device_put((padded, rel, excl, weight), rows)
            out, per_user, top = _full_batch_dot(*tables, *batch, tuple(ks))
        else:
            out, per_user, top = _full_batch_jit(score_fn(jnp.asarray(padded)), jnp.asarray(rel), jnp.asarray(excl),
                                                 jnp.asarray(weight), tuple(ks))
        for k, v in out.items():  # summed on the device: no sync per batch, host prep overlaps compute
            sums[k] = sums[k] + v if k in sums else v
        if detail is not None:
            parts.append((len(chunk), per_user, top))
        if progress is not None:
            progress(len(chunk))
    if detail is not None:
        detail["users"] = users
        detail["per_user"] = {k: np.concatenate([np.asarray(p[k])[:n] for n, p, _ in parts]) for k in sums}
        detail["top"] = np.concatenate([np.asarray(t)[:n] for n, _, t in parts])
    return {k: float(v) / len(users) for k, v in sums.items()}


def _eval_mesh() -> jax.sharding.Mesh | None:
    """This process's devices as one ``users`` axis, or ``None`` with a single device."""
    devices = jax.local_devices()
    return None if len(devices) == 1 else jax.sharding.Mesh(np.array(devices), ("users",))


def sample_negatives(exclude: sp.csr_matrix, users: np.ndarray, positives: np.ndarray, n: int,
                     pool: np.ndarray, seed: int) -> np.ndarray:
    """``n`` negatives per (user, positive) pair, uniform over ``pool`` without the user's excluded items.

    Sampling is without replacement within a pair, as in the DisenCDR evaluator.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((len(users), n), np.int32)
    pool_set = set(pool.tolist())
    for row, (u, p) in enumerate(zip(users, positives)):
        banned = set(exclude.indices[exclude.indptr[u]:exclude.indptr[u + 1]].tolist())
        banned.add(int(p))
        n_allowed = len(pool_set) - len(banned & pool_set)
        if n_allowed < n:
            raise ConfigError(f"eval.negatives: {n} negatives requested but user {u} has only {n_allowed} candidates")
        picked: list[int] = []
        seen = set()
        while len(picked) < n:
            draw = pool[rng.integers(0, len(pool), size=2 * (n - len(picked)) + 8)]
            for item in draw.tolist():
                if item not in banned and item not in seen:
                    seen.add(item)
                    picked.append(item)
                    if len(picked) == n:
                        break
        out[row] = picked
    return out


def evaluate_sampled(score_fn: ScoreFn, users: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                     ks: tuple[int, ...] = (10, 20), batch_size: int = 512, progress=None,
                     detail: dict | None = None, candidate_fn=None) -> dict[str, float]:
    """Each (user, positive) ranked among its row of ``negatives`` ``[P, N]``; averaged over pairs.

    ``progress``: as in :func:`evaluate_full`, counting pairs.  ``detail``: a dict filled with the pairs' ``users``
    and ``items`` and their values, ``per_user`` (``{metric: [P]}``: one value per pair).  ``candidate_fn(users,
    items [B, 1 + N]) -> [B, 1 + N]`` (:class:`ScoresCandidates`): scores the pairs' candidates only, in place of
    ``score_fn``'s every item.
    """
    if len(users) == 0:
        return {}
    _set_total(progress, len(users))
    batch_size = min(batch_size, 1 << int(len(users) - 1).bit_length())
    sums: dict[str, float] = {}

    @jax.jit
    def batch_metrics(scores, pos, neg, weight):
        if candidate_fn is not None:                  # the candidates' own scores: [B, 1 + N], the positive first
            pos_s, neg_s = scores[:, 0], scores[:, 1:]
        else:
            pos_s = jnp.take_along_axis(scores, pos[:, None], 1)[:, 0]
            neg_s = jnp.take_along_axis(scores, neg, 1)
        per = M.sampled_ranking_metrics(pos_s, neg_s, tuple(ks), neg_mask=neg != pos[:, None])
        return {k: (v * weight).sum() for k, v in per.items()}, per

    def scores_of(u: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> jax.Array:
        if candidate_fn is None:
            return score_fn(jnp.asarray(u))
        return candidate_fn(jnp.asarray(u), jnp.asarray(np.concatenate([pos[:, None], neg], 1)))

    order = np.arange(len(users))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(users), batch_size):
        sel = order[start:start + batch_size]
        pad = batch_size - len(sel)
        u = np.concatenate([users[sel], np.zeros(pad, users.dtype)]).astype(np.int32)
        pos = np.concatenate([positives[sel], np.zeros(pad, np.int32)]).astype(np.int32)
        neg = np.concatenate([negatives[sel], np.zeros((pad, negatives.shape[1]), np.int32)]).astype(np.int32)
        weight = np.concatenate([np.ones(len(sel)), np.zeros(pad)]).astype(np.float32)
        out, per = batch_metrics(scores_of(u, pos, neg), jnp.asarray(pos), jnp.asarray(neg), jnp.asarray(weight))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if detail is not None:
            parts.append({k: np.asarray(v)[:len(sel)] for k, v in per.items()})
        if progress is not None:
            progress(len(sel))
    if detail is not None:
        detail.update(users=np.asarray(users), items=np.asarray(positives),
                      per_user={k: np.concatenate([p[k] for p in parts]) for k in sums})
    return {k: v / len(users) for k, v in sums.items()}


def evaluate_ratings(predict_fn: PredictFn, truth: sp.csr_matrix, users: np.ndarray | None = None) -> dict[str, float]:
    """RMSE / MAE over the stored entries of ``truth`` (optionally only ``users``' rows)."""
    coo = truth.tocoo()
    rows, cols, vals = coo.row, coo.col, coo.data
    if users is not None:
        keep = np.isin(rows, users)
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    if len(vals) == 0:
        return {}
    return M.rating_errors(np.asarray(predict_fn(rows.astype(np.int32), cols.astype(np.int32))), vals)


def evaluation_users(split, fold: str) -> tuple[np.ndarray, sp.csr_matrix]:
    """The users evaluated on ``fold`` and the truth matrix: cold users in a cold-start split."""
    truth = split.valid if fold == "valid" else split.test
    cold = split.cold_valid_users if fold == "valid" else split.cold_test_users
    has_truth = np.flatnonzero(np.diff(truth.indptr) > 0)
    users = np.intersect1d(cold, has_truth) if len(cold) else has_truth
    return users, truth


def evaluate_split(model, split, fold: str, cfg: EvalConfig, progress=None, detail: dict | None = None
                   ) -> dict[str, float]:
    """Evaluate ``model`` (a :class:`~jmf.models.base.Model`) on ``split``'s ``fold``.

    Items a user interacted with in training are never ranked; on ``test`` the user's
    validation items are excluded too.  Under the full protocol the beyond-accuracy metrics of the lists
    (:mod:`jmf.evaluate.beyond`) come with the ranking metrics.  ``progress``: see :func:`evaluate_full`;
    ``detail``: filled with the per-user (per-pair) values, :func:`evaluate_full` / :func:`evaluate_sampled`.
    """
    users, truth = evaluation_users(split, fold)
    if len(users) == 0:
        return {}
    exclude = split.train if fold == "valid" else (split.train + split.valid).tocsr()
    out: dict[str, float] = {}
    ks = tuple(cfg.ks)
    if cfg.protocol == "full":
        tables = model.score_tables() if isinstance(model, DotScores) else None
        detail = {} if detail is None else detail
        out.update(evaluate_full(model.score, exclude, truth, users, ks, cfg.batch_size, progress, tables, detail))
        out.update(list_metrics(detail["top"], ks, *catalogue(split.train, split.data.item_category[split.cf_items])))
    elif cfg.protocol == "sampled":
        if cfg.candidates and fold == "test":
            from jmf.data.candidates import load_candidates

            pair_users, positives, negatives = load_candidates(cfg.candidates, split)
        else:
            sub = truth[users].tocoo()
            pair_users, positives = users[sub.row], sub.col.astype(np.int32)
            pool = np.flatnonzero(np.diff(split.train.tocsc().indptr) > 0).astype(np.int32)
            negatives = sample_negatives(exclude, pair_users, positives, cfg.negatives, pool,
                                         cfg.sampling_seed + (0 if fold == "valid" else 1))
        out.update(evaluate_sampled(model.score, pair_users, positives, negatives, ks, cfg.batch_size, progress,
                                    detail, model.score_candidates if isinstance(model, ScoresCandidates) else None))
    else:
        raise ConfigError(f"eval.protocol: {cfg.protocol!r} is not full|sampled")
    if cfg.ratings and not split.implicit and getattr(model, "rates", True):   # ranking-only models: rates = False
        out.update(evaluate_ratings(model.predict, truth, users))
    return out


def evaluate_test_extras(model, split, cfg: EvalConfig, progress=None,
                         main: dict[str, float] | None = None) -> dict[str, float]:
    """The test fold again under the extra protocols of ``cfg`` (the model is scored, not refitted).

    ``s<seed>/<metric>`` for each of ``test_sampling_seeds`` (sampled protocol with drawn negatives;
    a fixed candidate file has no seed), ``full/<metric>`` when ``test_full`` and the main protocol
    is ``sampled``.  Rating errors are not repeated.  ``main``: the test metrics of ``cfg`` itself,
    reused for the seed equal to ``cfg.sampling_seed`` instead of evaluating it again.
    """
    out: dict[str, float] = {}
    base = dataclasses.replace(cfg, ratings=False, test_sampling_seeds=(), test_full=False)
    if cfg.protocol == "sampled" and not cfg.candidates:
        for seed in cfg.test_sampling_seeds:
            if main is not None and int(seed) == cfg.sampling_seed:
                part = {k: v for k, v in main.items() if k not in ("rmse", "mae")}
            else:
                part = evaluate_split(model, split, "test", dataclasses.replace(base, sampling_seed=int(seed)),
                                      progress)
            out.update({f"s{seed}/{k}": v for k, v in part.items()})
    if cfg.test_full and cfg.protocol != "full":
        part = evaluate_split(model, split, "test", dataclasses.replace(base, protocol="full", candidates=None),
                              progress)
        out.update({f"full/{k}": v for k, v in part.items()})
    return out
