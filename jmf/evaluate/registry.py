"""The metric registry: every metric jmf reports is one function plus one entry here.

A **ranking** metric is a per-user function of the top-``k`` list (:class:`TopK`: hits, the number of
relevant items, the rank discounts) and is reported as ``<name>@<k>`` for every cut-off of
``eval.ks``, under both protocols; under the sampled protocol it sees the one held-out item's rank as a
one-hot top-``k`` row, unless the entry gives a faster ``sampled`` form of the rank.  A **rating**
metric is a function of the prediction errors (``pred - truth``) and is reported as ``<name>`` on
explicit data.  Everything that names metrics reads this table: the evaluators
(:mod:`jmf.evaluate.metrics`), the validation monitors (:func:`check_monitor`, the validator), the
direction of a selection (:func:`lower_is_better`: early stopping, ``jmf-report``), and the docs' metric
list (``docs/pages/guide/splits.md``, checked by a test).

The built-in metrics are registered by :mod:`jmf.evaluate.metrics` (``jmf.evaluate`` imports it); a
project adds its own with one call, in a module it names in ``eval.plugins``::

    register(RankingMetric("hits_share", my_function, doc="..."))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np

from jmf.errors import ConfigError


class TopK(NamedTuple):
    """What a ranking metric sees of a batch of users' top-``k`` lists (``B`` users)."""

    hits: jax.Array          # [B, k] float32: 1 where the item at that rank is relevant
    n_relevant: jax.Array    # [B] float32: relevant (held-out) items of the user
    discounts: jax.Array     # [k] float32: 1 / log2(rank + 1)
    k: int


@dataclass(frozen=True)
class RankingMetric:
    """``name@k`` of a top-``k`` list.

    Attributes:
      name: the reported name (``ndcg`` -> ``valid/ndcg@10``).
      fn: ``TopK -> [B]`` per-user values (averaged over users by the evaluator).
      sampled: optional ``(rank [B] int, k) -> [B]`` from the held-out item's 1-based rank among sampled
        negatives (the same values as ``fn`` on a one-hot top-``k`` row, computed directly).
      whole_list: also reported without a cut-off under the sampled protocol (``mrr``: ``1 / rank``);
        as a validation monitor under the full protocol it is ``<name>@<number of CF-side items>``.
      higher_is_better: the direction of selection.
      doc: one line for the docs' metric list.
    """

    name: str
    fn: Callable[[TopK], jax.Array]
    sampled: Callable[[jax.Array, int | None], jax.Array] | None = None
    whole_list: bool = False
    higher_is_better: bool = True
    doc: str = ""


@dataclass(frozen=True)
class RatingMetric:
    """``name`` of the rating errors ``pred - truth`` (float64 NumPy) -> a float; lower is better."""

    name: str
    fn: Callable
    higher_is_better: bool = False
    doc: str = ""


class Lists(NamedTuple):
    """What a list metric sees: every evaluated user's top-``k`` list and the catalogue it was drawn from."""

    top: "np.ndarray"          # [n_users, k] int: CF-side item ids, best first
    popularity: "np.ndarray"   # [I] float: each item's training interactions
    n_users: int               # users of the training matrix (the denominator of an item's popularity share)
    head: "np.ndarray"         # [I] bool: the short head (the most popular items holding 20 % of the training rows)
    categories: "np.ndarray"   # [I] int: each item's category
    k: int


@dataclass(frozen=True)
class ListMetric:
    """``name@k`` of every user's top-``k`` list at once (catalogue coverage, exposure concentration, novelty):
    a beyond-accuracy metric, reported under the full-ranking protocol, where the lists exist.

    Attributes:
      name: the reported name (``coverage`` -> ``test/coverage@10``).
      fn: ``Lists -> float`` (NumPy, on the host).
      higher_is_better: the direction a table reads it in (``gini``: less concentrated exposure is better).
      doc: one line for the docs' metric list.
    """

    name: str
    fn: Callable
    higher_is_better: bool = True
    doc: str = ""


METRICS: dict[str, RankingMetric | RatingMetric | ListMetric] = {}
# names that are not metrics but are minimised when selected on (training curves)
_LOWER_OTHERS = ("loss", "kl")


def register(metric: RankingMetric | RatingMetric | ListMetric) -> RankingMetric | RatingMetric | ListMetric:
    """Add ``metric`` to the registry (a name already taken by another function is an error)."""
    if "@" in metric.name or "/" in metric.name or not metric.name:
        raise ConfigError(f"metric name {metric.name!r}: a plain name without '@' or '/'")
    old = METRICS.get(metric.name)
    if old is not None and old != metric:
        raise ConfigError(f"metric {metric.name!r} is registered twice ({old.fn} and {metric.fn})")
    METRICS[metric.name] = metric
    return metric


def ranking() -> list[RankingMetric]:
    return [m for m in METRICS.values() if isinstance(m, RankingMetric)]


def rating() -> list[RatingMetric]:
    return [m for m in METRICS.values() if isinstance(m, RatingMetric)]


def lists() -> list[ListMetric]:
    return [m for m in METRICS.values() if isinstance(m, ListMetric)]


def load_plugins(modules: Sequence[str], key: str = "eval.plugins") -> None:
    """Import the modules that register a project's own metrics (``eval.plugins``)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"{key}: cannot import {name!r} ({err}); is its folder on PYTHONPATH?") from None


def base_name(metric: str) -> str:
    """``valid/full/ndcg@10`` -> ``ndcg``."""
    return metric.split("/")[-1].split("@")[0]


def lower_is_better(metric: str) -> bool:
    """Whether a selection on ``metric`` (``rmse``, ``valid/ndcg@10``, ``train/loss``) minimises it."""
    name = base_name(metric)
    entry = METRICS.get(name)
    return (not entry.higher_is_better) if entry is not None else name in _LOWER_OTHERS


def is_rating(metric: str) -> bool:
    return isinstance(METRICS.get(base_name(metric)), RatingMetric)


def monitor_forms(ratings: bool = True) -> str:
    """The valid monitor names, for messages: ``rmse|mae|<ndcg|...>@<k>|mrr`` (``ratings``: with rating metrics)."""
    whole = [m.name for m in ranking() if m.whole_list]
    rated = [m.name for m in rating()] if ratings else []
    return "|".join(rated + ["<" + "|".join(m.name for m in ranking()) + ">@<k>"] + whole)


def check_monitor(metric: str, key: str = "model.monitor", *, auto: bool = False, ratings: bool = True) -> None:
    """Refuse a validation metric the registry does not know, naming ``key`` and the valid forms.

    ``auto``: also accept ``auto`` (``rmse`` on ratings, ``ndcg@10`` else: :func:`resolve_monitor`);
    ``ratings``: accept rating metrics (a ranking-only model does not).
    """
    metric = str(metric)
    if auto and metric == "auto":
        return
    name, at, k = metric.partition("@")
    entry = METRICS.get(name)
    ok = (isinstance(entry, RankingMetric) and ((at and k.isdigit() and int(k) >= 1) or (not at and entry.whole_list))
          ) or (ratings and isinstance(entry, RatingMetric) and not at)
    if not ok:
        raise ConfigError(f"{key}: {metric!r} is not {'auto|' if auto else ''}{monitor_forms(ratings)} "
                          "(metrics: jmf.evaluate.registry)")


def resolve_monitor(monitor: str, kind: str) -> str:
    """``monitor: auto`` -> ``rmse`` for a model trained on ratings (``kind`` ``mse``), ``ndcg@10`` else."""
    return monitor if monitor != "auto" else ("rmse" if kind == "mse" else "ndcg@10")
