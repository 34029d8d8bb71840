"""A synthetic catalogue with a planted category graph: the transfer map's known answer.

Categories come in groups.  User ``u``'s taste in category ``c`` of group ``g`` is

    t_{u,c} = sqrt(w_g) z_{u,g} + sqrt(1 - w_g) e_{u,c}

with ``z_{u,g}`` the user's taste shared by the group and ``e_{u,c}`` the category's own (all standard normal,
``dim`` wide), so the tastes of two categories of group ``g`` correlate by ``w_g`` (the group's shared-taste
weight) and those of two groups not at all: what a user does in a category tells about another category exactly
as much as the planted weight ``W[t, s]`` says (``w_g`` within a group, 0 across).

Each user is active in ``active`` categories drawn uniformly (no category predicts *whether* a user is active in
another: the map is about taste alone), with ``per_category`` interactions (Poisson, at least 2) in each; an
interaction draws ``candidates`` items from the category's power-law popularity and keeps the one with the largest
``t_{u,c}·v_i / temperature + Gumbel`` noise.  :func:`planted_map` returns the interactions with ``planted`` set:
the ``[C, C]`` matrix ``W`` (NaN on the diagonal: a category is not its own source).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jmf.data.interactions import Interactions
from jmf.data.synthetic import _one_row_per_pair
from jmf.errors import DataError


def planted_weights(groups: Sequence[int], weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``([C] group of each category, [C, C] planted shared-taste weights W, NaN diagonal)``."""
    group = np.repeat(np.arange(len(groups)), groups)
    w = np.asarray(weights, np.float64)[group]
    W = np.where(group[:, None] == group[None, :], w[:, None] * np.ones(len(group)), 0.0)
    np.fill_diagonal(W, np.nan)
    return group, W


def planted_map(n_users: int = 6000, groups: Sequence[int] = (6, 6), weights: Sequence[float] = (0.9, 0.5),
                items_per_category: int = 150, active: int = 4, per_category: float = 12.0, dim: int = 4,
                candidates: int = 32, temperature: float = 0.25, popularity_exponent: float = 0.3,
                seed: int = 0) -> Interactions:
    """Implicit interactions with a planted category graph (module docstring).

    Args:
      groups: the number of categories in each group; weights: each group's shared-taste weight ``w_g`` in [0, 1]
        (0: a group whose categories share nothing).
      items_per_category: items of every category; active: categories each user is active in.
      per_category: mean interactions per active category; dim: taste width.
      candidates, temperature: how sharply an interaction follows taste; popularity_exponent: Zipf exponent.
    """
    groups, weights = [int(g) for g in groups], [float(w) for w in weights]
    if len(groups) != len(weights) or not groups or min(groups) < 1:
        raise DataError(f"data.groups / data.weights: one weight per group of at least one category "
                        f"(groups {groups}, weights {weights})")
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise DataError(f"data.weights: {weights} must be in [0, 1]")
    C = sum(groups)
    if not 2 <= active <= C:
        raise DataError(f"data.active: {active} must be in 2..{C} (the number of categories)")
    rng = np.random.default_rng(seed)
    group, W = planted_weights(groups, weights)
    shared = rng.normal(size=(n_users, len(groups), dim))
    own = rng.normal(size=(n_users, C, dim))
    w = np.asarray(weights)[group]
    taste = np.sqrt(w)[None, :, None] * shared[:, group] + np.sqrt(1 - w)[None, :, None] * own    # [U, C, dim]
    n_items = C * items_per_category
    item_category = np.repeat(np.arange(C), items_per_category).astype(np.int32)
    item_vec = rng.normal(size=(n_items, dim)) / np.sqrt(dim) * 3.0
    ranks = np.concatenate([rng.permutation(items_per_category) + 1 for _ in range(C)])
    pop = ranks ** -popularity_exponent
    cum = np.concatenate([np.cumsum(pop[c * items_per_category:(c + 1) * items_per_category])
                          / pop[c * items_per_category:(c + 1) * items_per_category].sum() for c in range(C)])
    picks = np.argsort(rng.random((n_users, C)), 1)[:, :active]            # each user's active categories
    counts = np.maximum(2, rng.poisson(per_category, (n_users, active)))
    user = np.repeat(np.repeat(np.arange(n_users), active), counts.ravel())
    cat = np.repeat(picks.ravel(), counts.ravel())
    r = rng.random((len(user), candidates))
    cand = np.empty_like(r, dtype=np.int64)
    for c in range(C):                                   # inverse CDF of each category's popularity
        rows = cat == c
        cand[rows] = c * items_per_category + np.minimum(
            np.searchsorted(cum[c * items_per_category:(c + 1) * items_per_category], r[rows]), items_per_category - 1)
    aff = np.einsum("nd,nkd->nk", taste[user, cat], item_vec[cand])
    gumbel = -np.log(-np.log(rng.random(aff.shape) + 1e-12) + 1e-12)
    item = cand[np.arange(len(user)), np.argmax(aff / temperature + gumbel, 1)]
    user, item, timestamp = _one_row_per_pair(user, item, n_items)   # repeats merged, increasing times per user
    return Interactions(
        user=user.astype(np.int32), item=item.astype(np.int32), value=np.ones(len(user), np.float32),
        timestamp=timestamp, item_category=item_category, user_ids=np.arange(n_users), item_ids=np.arange(n_items),
        category_names=tuple(f"g{group[c]}c{c:02d}" for c in range(C)), name="planted", implicit=True, planted=W)


def main(argv: list[str] | None = None) -> int:
    """``python -m jmf.data.planted OUT.csv``: a behaviour table with a planted category graph, for ``data=csv``."""
    import argparse

    from jmf.data.synthetic import write_table

    parser = argparse.ArgumentParser(prog="python -m jmf.data.planted",
                                     description="Write a seeded behaviour table (user,item,ts,genre) whose categories "
                                                 "come in groups of shared taste (jmf/data/planted.py), for data=csv.")
    parser.add_argument("out", help="file to write (.csv or .tsv)")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--groups", type=int, nargs="+", default=[3, 3], help="categories in each group")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.9, 0.0],
                        help="each group's shared-taste weight (0: its categories share nothing)")
    parser.add_argument("--items", type=int, default=100, help="items per category")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = planted_map(n_users=args.users, groups=args.groups, weights=args.weights,
                       items_per_category=args.items, seed=args.seed)
    rows = write_table(args.out, data)
    print(f"wrote {args.out}: {rows} rows, {args.users} users, categories {', '.join(data.category_names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
