"""Seeded synthetic interactions with planted cross-category structure.

Each user ``u`` has a *shared* factor ``s_u`` (drives taste in every category) and one
*category-specific* factor ``t_{u,c}`` per category.  Item ``i`` in category ``c`` has
``a_i`` (shared space) and ``b_i`` (its category's space).  The planted affinity is

    a(u, i) = s_u . a_i + t_{u,c(i)} . b_i

so the user x item affinity matrix has rank ``shared_dim + C * specific_dim`` and, on the
items of K categories, ``shared_dim + K * specific_dim``.  What a user does on one side of a
category partition tells about the other side only through ``s_u``: with
``shared_dim=0`` there is nothing to transfer (the control of the cold-start tests).

Sampling one interaction: a category from ``softmax(s_u . g_c)`` (users' category
interests are planted too), ``candidates`` items from the category's power-law popularity,
and the candidate with the largest ``a(u, i) / temperature + Gumbel`` noise.  This costs
``O(N * candidates * d)`` and scales to 10^6 users x 3*10^7 interactions in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jmf.data.interactions import Interactions
from jmf.errors import DataError


@dataclass(frozen=True)
class SyntheticTruth:
    """The planted parameters, for oracle models and tests."""

    shared: np.ndarray          # [U, shared_dim]  s_u
    specific: np.ndarray        # [U, C, specific_dim]  t_{u,c}
    item_shared: np.ndarray     # [I, shared_dim]  a_i
    item_specific: np.ndarray   # [I, specific_dim]  b_i
    item_category: np.ndarray   # [I]
    category_embedding: np.ndarray  # [C, shared_dim]  g_c

    def affinity(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Planted ``a(u, i)`` for ``users`` x ``items`` -> ``[len(users), len(items)]``."""
        items = np.arange(len(self.item_category)) if items is None else items
        out = self.shared[users] @ self.item_shared[items].T
        cats = self.item_category[items]
        spec = self.specific[users][:, cats, :]  # [B, n, d_c]
        return out + np.einsum("bnd,nd->bn", spec, self.item_specific[items])


def make_truth(n_users: int, n_items: int, n_categories: int, shared_dim: int, specific_dim: int,
               shared_weight: float, popularity_exponent: float, rng: np.random.Generator):
    scale_s = np.sqrt(shared_weight)
    scale_t = np.sqrt(max(1.0 - shared_weight, 0.0))
    shared = rng.normal(size=(n_users, shared_dim)).astype(np.float32) * scale_s
    specific = rng.normal(size=(n_users, n_categories, specific_dim)).astype(np.float32) * scale_t
    # categories of different sizes (a Zipf law over categories), every category non-empty
    weights = 1.0 / np.arange(1, n_categories + 1) ** 0.7
    sizes = np.maximum(1, np.floor(weights / weights.sum() * n_items)).astype(int)
    sizes[0] += n_items - sizes.sum()
    item_category = np.repeat(np.arange(n_categories), sizes).astype(np.int32)
    item_shared = (rng.normal(size=(n_items, shared_dim)) / np.sqrt(max(shared_dim, 1))).astype(np.float32)
    item_specific = (rng.normal(size=(n_items, specific_dim)) / np.sqrt(max(specific_dim, 1))).astype(np.float32)
    category_embedding = rng.normal(size=(n_categories, shared_dim)).astype(np.float32) / np.sqrt(max(shared_dim, 1))
    truth = SyntheticTruth(shared, specific, item_shared * 3.0, item_specific * 3.0, item_category, category_embedding)
    # power-law popularity inside each category: p ∝ rank^-exponent, ranks shuffled
    popularity = np.empty(n_items)
    for c in range(n_categories):
        idx = np.flatnonzero(item_category == c)
        ranks = rng.permutation(len(idx)) + 1
        popularity[idx] = ranks ** -popularity_exponent
        popularity[idx] /= popularity[idx].sum()
    return truth, popularity


def synthetic(
    n_users: int = 2000,
    n_items: int = 1000,
    n_categories: int = 8,
    interactions_per_user: float = 40.0,
    shared_dim: int = 8,
    specific_dim: int = 4,
    shared_weight: float = 0.7,
    popularity_exponent: float = 1.0,
    candidates: int = 16,
    temperature: float = 0.5,
    implicit: bool = True,
    seed: int = 0,
    chunk_users: int = 50_000,
    return_truth: bool = False,
) -> Interactions | tuple[Interactions, SyntheticTruth]:
    """Generate a seeded synthetic dataset (see module docstring).

    Args:
      n_users, n_items, n_categories: sizes (every category gets at least one item).
      interactions_per_user: mean user activity (log-normal, at least 3, at most n_items/2).
      shared_dim, specific_dim: planted factor sizes; ``shared_dim=0`` plants no shared structure.
      shared_weight: variance share of the shared factor in the affinity (0..1).
      popularity_exponent: Zipf exponent of item popularity within a category.
      candidates, temperature: sampling sharpness (more candidates / lower temperature = less noise).
      implicit: values are 1.0; else ratings 1..5 from the affinity quantiles.
      seed: everything is a function of the seed.
      return_truth: also return :class:`SyntheticTruth`.
    """
    if n_categories < 1 or n_items < n_categories or n_users < 1:
        raise DataError("data: synthetic needs n_users >= 1 and n_items >= n_categories >= 1")
    if not 0.0 <= shared_weight <= 1.0:
        raise DataError(f"data.shared_weight: {shared_weight} is not in [0, 1]")
    rng = np.random.default_rng(seed)
    truth, popularity = make_truth(n_users, n_items, n_categories, shared_dim, specific_dim,
                                   shared_weight if shared_dim else 0.0, popularity_exponent, rng)
    cat_start = np.searchsorted(truth.item_category, np.arange(n_categories))
    cum_pop = np.cumsum(popularity)
    cat_base = np.concatenate([[0.0], cum_pop])[cat_start]  # cumulative mass before each category

    activity = rng.lognormal(mean=np.log(interactions_per_user) - 0.5, sigma=1.0, size=n_users)
    activity = np.clip(np.round(activity), 3, max(3, n_items // 2)).astype(np.int64)

    users_out, items_out = [], []
    for start in range(0, n_users, chunk_users):
        users = np.arange(start, min(start + chunk_users, n_users))
        u, picked = _sample_chunk(truth, users, activity[users], cum_pop, cat_start, cat_base, candidates,
                                  temperature, rng)
        users_out.append(u)
        items_out.append(picked)
    user, item, timestamp = _one_row_per_pair(np.concatenate(users_out), np.concatenate(items_out), n_items)
    value = np.ones(len(user), np.float32) if implicit else _ratings(truth, user, item)
    data = Interactions(
        user=user.astype(np.int32), item=item.astype(np.int32), value=value, timestamp=timestamp,
        item_category=truth.item_category, user_ids=np.arange(n_users), item_ids=np.arange(n_items),
        category_names=tuple(f"cat{c:02d}" for c in range(n_categories)), name="synthetic", implicit=implicit,
    )
    return (data, truth) if return_truth else data


def _sample_chunk(truth: SyntheticTruth, users: np.ndarray, counts: np.ndarray, cum_pop: np.ndarray,
                  cat_start: np.ndarray, cat_base: np.ndarray, candidates: int, temperature: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``counts[k]`` draws for each of ``users``: a category from the user's interest, ``candidates`` items
    from its popularity, one kept by a Gumbel choice on the planted affinity.  Returns (users, items)."""
    n_items = len(cum_pop)
    u = np.repeat(users, counts)
    # category interest: softmax(s_u . g_c) (uniform when shared_dim == 0)
    logits = truth.shared[users] @ truth.category_embedding.T * 2.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    cum = np.cumsum(probs, 1)
    cum[:, -1] = 1.0
    local = np.repeat(np.arange(len(users)), counts)
    cat = (rng.random(len(u))[:, None] > cum[local]).sum(1)
    # candidates from the category's popularity (inverse CDF inside the category)
    r = rng.random((len(u), candidates))
    target = cat_base[cat][:, None] + r  # mass inside a category sums to 1
    cand = np.searchsorted(cum_pop, target)
    cand = np.clip(cand, cat_start[cat][:, None], np.append(cat_start[1:], n_items)[cat][:, None] - 1)
    aff = np.einsum("nd,nkd->nk", truth.shared[u], truth.item_shared[cand])
    aff += np.einsum("nd,nkd->nk", truth.specific[u, cat], truth.item_specific[cand])
    gumbel = -np.log(-np.log(rng.random(aff.shape) + 1e-12) + 1e-12)
    pick = np.argmax(aff / temperature + gumbel, 1)
    return u, cand[np.arange(len(u)), pick]


def _one_row_per_pair(user: np.ndarray, item: np.ndarray, n_items: int) -> tuple[np.ndarray, ...]:
    """Merge the generator's repeats (they are not data) and give each user increasing timestamps,
    in sampling order.  Returns (user, item, timestamp)."""
    key = user * n_items + item
    _, first = np.unique(key, return_index=True)
    first.sort()
    user, item = user[first], item[first]
    starts = np.searchsorted(user, user)  # users are generated in blocks, sorted
    timestamp = 1_600_000_000 + (np.arange(len(user)) - starts) * 3600 + user.astype(np.int64) % 3600
    return user, item, timestamp.astype(np.int64)


def _ratings(truth: SyntheticTruth, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Ratings 1..5 from the quantiles (10/30/60/85 %) of the pairs' planted affinity."""
    aff = _pair_affinity(truth, user, item)
    edges = np.quantile(aff, [0.1, 0.3, 0.6, 0.85])
    return (1 + np.searchsorted(edges, aff)).astype(np.float32)


def _pair_affinity(truth: SyntheticTruth, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    cat = truth.item_category[item]
    return (np.einsum("nd,nd->n", truth.shared[user], truth.item_shared[item])
            + np.einsum("nd,nd->n", truth.specific[user, cat], truth.item_specific[item]))


def write_table(path: str, data: Interactions) -> int:
    """Write ``data`` as a behaviour table ``user,item[,rating],ts,genre`` (CSV; TSV for ``.tsv``), the shape
    ``data=csv`` reads; returns the number of rows."""
    sep = "\t" if str(path).endswith(".tsv") else ","
    names = np.asarray(data.category_names)[data.item_category[data.item]]
    fields = [("user", data.user_ids[data.user].astype(str)), ("item", np.char.add("i", data.item_ids[data.item]
                                                                                    .astype(str)))]
    if not data.implicit:
        fields.append(("rating", data.value.astype(np.int64).astype(str)))
    fields += [("ts", data.timestamp.astype(np.int64).astype(str)), ("genre", names.astype(str))]
    with open(path, "w") as out:
        out.write(sep.join(name for name, _ in fields) + "\n")
        out.writelines(sep.join(row) + "\n" for row in zip(*(col for _, col in fields)))
    return len(data.user)


def main(argv: list[str] | None = None) -> int:
    """``python -m jmf.data.synthetic OUT.csv``: a synthetic behaviour table to try ``data=csv`` on."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jmf.data.synthetic",
                                     description="Write a seeded synthetic behaviour table (user,item[,rating],ts,genre) "
                                                 "with planted cross-category taste, for data=csv.")
    parser.add_argument("out", help="file to write (.csv or .tsv)")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--categories", type=int, default=4, help="genres cat00, cat01, ...")
    parser.add_argument("--per-user", type=float, default=40.0, help="mean interactions per user")
    parser.add_argument("--ratings", action="store_true", help="ratings 1-5 instead of implicit rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = synthetic(n_users=args.users, n_items=args.items, n_categories=args.categories,
                     interactions_per_user=args.per_user, shared_dim=3, specific_dim=0, shared_weight=1.0,
                     temperature=0.25, implicit=not args.ratings, seed=args.seed)
    rows = write_table(args.out, data)
    print(f"wrote {args.out}: {rows} rows, {args.users} users, {args.items} items, genres "
          f"{', '.join(data.category_names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
