"""Beyond-accuracy metrics: what the top-``k`` lists of every evaluated user recommend, taken together.

An accurate model can still recommend the same few popular items to everyone.  These metrics read the lists
themselves (:class:`~jmf.evaluate.registry.Lists`), so they exist under the full-ranking protocol only, where every
user's list is ranked over the whole catalogue; each is reported as ``<name>@<k>`` for every ``eval.ks``
(tested against counts by hand, ``tests/evaluate/test_beyond.py``):

* ``coverage@k``: distinct items in any list / items of the catalogue.
* ``gini@k``: the Gini coefficient of the items' exposure (how many lists hold each item, every catalogue item
  counted, unexposed ones at 0): 0 is every item equally often, 1 all exposure on one item.
* ``novelty@k``: the mean self-information of a recommended item, ``log2((U + 1) / (pop_i + 1))`` bits (``U``
  training users, ``pop_i`` the item's training interactions): recommending what few users know scores high.
* ``arp@k``: the average recommendation popularity, the mean ``pop_i`` of the recommended items.
* ``tail@k``: the long-tail share, the fraction of recommended items outside the short head (the most popular
  items that together hold 20 % of the training interactions).
* ``diversity@k``: intra-list category diversity, the mean over lists of the fraction of their item pairs from
  two different categories (0 on a cold-start split, whose CF side is one category).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jmf.evaluate import registry
from jmf.evaluate.registry import Lists

HEAD_SHARE = 0.2      # the short head holds this share of the training interactions


def short_head(popularity: np.ndarray, share: float = HEAD_SHARE) -> np.ndarray:
    """``[I]`` bool: the most popular items whose interactions, taken in order, reach ``share`` of the total (the
    item that crosses the line included; ties in popularity broken by item id)."""
    order = np.argsort(-popularity, kind="stable")
    cum = np.cumsum(popularity[order])
    total = cum[-1] if len(cum) else 0.0
    head = np.zeros(len(popularity), bool)
    if total > 0:
        head[order[:int(np.searchsorted(cum, share * total)) + 1]] = True
    return head


def catalogue(train: sp.csr_matrix, categories: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """``(popularity, n_users, head, categories)`` of a split's CF side, from its training matrix."""
    popularity = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)
    return popularity, train.shape[0], short_head(popularity), np.asarray(categories)


def list_metrics(top: np.ndarray, ks: tuple[int, ...], popularity: np.ndarray, n_users: int, head: np.ndarray,
                 categories: np.ndarray) -> dict[str, float]:
    """Every registered list metric at every cut-off of ``ks``: ``{"<name>@<k>": value}``; ``top`` ``[n, ≥max(ks)]``
    the users' lists, best first."""
    out: dict[str, float] = {}
    if len(top) == 0:
        return out
    for k in ks:
        lists = Lists(np.asarray(top)[:, :k], popularity, n_users, head, categories, k)
        for metric in registry.lists():
            out[f"{metric.name}@{k}"] = float(metric.fn(lists))
    return out


def exposure(lists: Lists) -> np.ndarray:
    """``[I]``: how many lists hold each item."""
    return np.bincount(lists.top.ravel(), minlength=len(lists.popularity)).astype(np.float64)


def coverage(lists: Lists) -> float:
    """Distinct recommended items / catalogue items."""
    return float((exposure(lists) > 0).mean())


def gini(lists: Lists) -> float:
    """Gini coefficient of the items' exposure, every catalogue item counted."""
    x = np.sort(exposure(lists))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * x.sum()))


def novelty(lists: Lists) -> float:
    """Mean self-information ``log2((U + 1) / (pop_i + 1))`` of a recommended item."""
    return float(np.log2((lists.n_users + 1) / (lists.popularity[lists.top] + 1)).mean())


def arp(lists: Lists) -> float:
    """Mean training popularity of a recommended item."""
    return float(lists.popularity[lists.top].mean())


def tail(lists: Lists) -> float:
    """Share of recommended items outside the short head."""
    return float((~lists.head[lists.top]).mean())


def diversity(lists: Lists) -> float:
    """Mean over lists of the share of item pairs from different categories (a list of one item: 0)."""
    if lists.k < 2:
        return 0.0
    cats = lists.categories[lists.top]                                   # [n, k]
    same = np.concatenate([(block[:, :, None] == block[:, None, :]).sum((1, 2)) - lists.k   # ordered pairs, the
                           for block in np.array_split(cats, max(1, len(cats) // 4096))])   # diagonal removed
    return float((1.0 - same / (lists.k * (lists.k - 1))).mean())


registry.register(registry.ListMetric("coverage", coverage, doc="distinct recommended items / catalogue items"))
registry.register(registry.ListMetric("gini", gini, higher_is_better=False,
                                      doc="Gini coefficient of the items' exposure in the lists (0: even, 1: one item)"))
registry.register(registry.ListMetric("novelty", novelty,
                                      doc="mean self-information log2((U + 1) / (pop + 1)) of a recommended item"))
registry.register(registry.ListMetric("arp", arp, higher_is_better=False,
                                      doc="average recommendation popularity (training interactions of an item)"))
registry.register(registry.ListMetric("tail", tail,
                                      doc="share of recommended items outside the short head (20 % of interactions)"))
registry.register(registry.ListMetric("diversity", diversity,
                                      doc="intra-list category diversity: share of a list's item pairs from two categories"))
