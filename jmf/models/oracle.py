"""``model=oracle``: the planted generator of the synthetic data, as a scorer (an upper reference).

The synthetic generator (``jmf.data.synthetic``) draws an interaction of user ``u`` by picking
a category ``c`` with ``P(c|u) = softmax_c(2 s_u·g_c)``, then ``K`` candidates from the
category's popularity ``π`` and keeping one with probability ``softmax_k(a(u, i_k)/T)``.
The oracle ranks CF-side items by ``log P(i|u) = log P(c_i|u) + log q_c(i|u)`` where

    q_c(i|u) = E_{candidates ~ π^K} [ Σ_k 1{i_k = i} softmax_k(a(u, i_k)/T) ]

is estimated with ``samples`` candidate sets per category (exact in the Gumbel choice,
Monte Carlo over the candidate sets; a closed form ``π_i exp(a/T) / Z`` is only the
``K → ∞`` limit and ranks visibly worse at ``K = 16``).  Ranking by ``P(i|u)`` is
Bayes-optimal for recall/NDCG of the held-out set, since the chance that ``i`` is among a
user's draws grows with ``P(i|u)``.  The oracle knows *all* planted factors, including the
category-specific ``t_{u,c}`` that no transfer method can infer from the other side; on
data made with ``shared_weight=1`` every planted factor is shared, and the oracle is the
ceiling of cross-category transfer.

The oracle regenerates the truth from the data config (the truth is drawn first from the
seed, :func:`jmf.data.synthetic.make_truth`), and maps split rows/columns back to the
generator's ids through ``split.data.user_ids`` / ``item_ids``.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from jmf.data import synthetic as synth
from jmf.data.split import SplitData
from jmf.models.base import ClosedFormModel, RunContext
from jmf.errors import ConfigError


class PlantedOracle(ClosedFormModel):
    """Scores with the planted factors of ``jmf.data.synthetic.synthetic(**data)``.

    Args:
      data: the synthetic data config (the keyword arguments of ``synthetic``; other keys ignored).
      samples: candidate sets drawn per category to estimate ``q_c(i|u)``.
    """

    fitted = ("_cands", "_s", "_t", "_g", "_a_all", "_b_all", "_cat_all", "_items", "_T")

    def __init__(self, data: dict, samples: int = 2048):
        self.samples = samples
        params = inspect.signature(synth.synthetic).parameters
        unknown_target = data.get("_target_", "jmf.data.synthetic.synthetic")
        if not str(unknown_target).endswith("synthetic.synthetic"):
            raise ConfigError(f"model=oracle needs data=synthetic (data._target_ is {unknown_target})")
        kw = {k: data[k] for k in params if k in data}
        self.kw = {k: kw.get(k, p.default) for k, p in params.items() if k not in ("chunk_users", "return_truth")}

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        seed = ctx.seed if ctx is not None else 0
        kw = self.kw
        shared_weight = kw["shared_weight"] if kw["shared_dim"] else 0.0
        truth, popularity = synth.make_truth(kw["n_users"], kw["n_items"], kw["n_categories"], kw["shared_dim"],
                                             kw["specific_dim"], shared_weight, kw["popularity_exponent"],
                                             np.random.default_rng(kw["seed"]))
        users = np.asarray(split.data.user_ids, np.int64)            # split row -> generator user
        items = np.asarray(split.data.item_ids, np.int64)[split.cf_items]  # CF column -> generator item
        if users.max(initial=0) >= kw["n_users"] or items.max(initial=0) >= kw["n_items"]:
            raise ConfigError("model=oracle: the split's ids do not come from this synthetic config")
        T, C, K = float(kw["temperature"]), int(kw["n_categories"]), int(kw["candidates"])
        cat = truth.item_category
        # candidate sets [C, S, K], drawn as the generator does (inverse CDF inside a category)
        rng = np.random.default_rng(seed)
        cat_start = np.searchsorted(cat, np.arange(C))
        cat_end = np.append(cat_start[1:], len(cat)) - 1
        cum_pop = np.cumsum(popularity)
        base = np.concatenate([[0.0], cum_pop])[cat_start]
        draws = base[:, None, None] + rng.random((C, self.samples, K))
        cands = np.clip(np.searchsorted(cum_pop, draws), cat_start[:, None, None], cat_end[:, None, None])
        self._cands = jnp.asarray(cands, jnp.int32)
        self._s = jnp.asarray(truth.shared[users])                                   # [U, ds]
        self._t = jnp.asarray(truth.specific[users])                                 # [U, C, dt]
        self._g = jnp.asarray(truth.category_embedding)                              # [C, ds]
        self._a_all = jnp.asarray(truth.item_shared)
        self._b_all = jnp.asarray(truth.item_specific)
        self._cat_all = jnp.asarray(cat)
        self._items = jnp.asarray(items)
        self._T = T
        return {}

    def score(self, users: jax.Array) -> jax.Array:
        return _oracle_scores(self._s[users], self._t[users], self._g, self._a_all, self._b_all, self._cat_all,
                              self._cands, self._items, self._T)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise ConfigError("model=oracle ranks items; it has no rating scale (use implicit synthetic data)")


@functools.partial(jax.jit, static_argnums=(8,))
def _oracle_scores(s, t, g, a, b, cat, cands, items, T: float):
    """``[B]`` users' planted factors -> ``[B, I_CF]`` ``log P(i|u)`` over the CF-side ``items``."""
    aff = s @ a.T + jnp.einsum("bid,id->bi", t[:, cat, :], b)                  # [B, I] over all items
    B, n_items = aff.shape
    C, S, K = cands.shape
    q = jnp.zeros((B, n_items), aff.dtype)
    for c in range(C):                                                           # static, small
        w = jax.nn.softmax(aff[:, cands[c]] / T, axis=-1)                        # [B, S, K]
        q = q.at[:, cands[c].reshape(-1)].add(w.reshape(B, -1) / S)
    log_pc = jax.nn.log_softmax(2.0 * s @ g.T, axis=-1)                         # [B, C]
    full = log_pc[:, cat] + jnp.log(q + 1e-12) + 1e-6 * aff                    # aff breaks ties of unseen items
    return full[:, items]
