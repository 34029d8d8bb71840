"""How much can O2 tell about a Ciao cold user's O1 behaviour?  Closed-form references beside JMF.

    python benchmarks/ciao_signal.py                          # β 0.2/0.5/0.8 x seeds 0-2 (~3 min)
    python benchmarks/ciao_signal.py --betas 0.5 --seeds 0    # one split

On the exact splits of ``benchmarks/cold_start.py --tasks ciao-*`` (``experiment=ciao_cold_start``),
every predictor here is a fixed formula of the training data, with nothing learned by gradient:

* ``pop``: ``model=pop`` (damped item mean; ranking by training count), the floor.
* ``pop + O2 offset``: the damped item mean plus ``a·o_u``, the user's damped mean O2 residual
  (:func:`jmf.models.joint.o2_user_offsets`), ``a`` the least-squares fit on the warm users' O1
  training ratings -- the user-bias transfer JMF's ``b̂_u`` starts from (``model.user_offset``),
  computed here by its own code.  Ranks as ``pop``.
* ``co-occurrence``: ``s_ui = Σ_{j ∈ O2(u)} #{warm v: j ∈ O2(v), i ∈ O1(v)} / |O2(u)|`` (O2 -> O1
  item co-occurrence over the warm users, a cross-category user-kNN), popularity breaking ties.
* ``co-occurrence, rank 64``: the same with ``co`` replaced by its rank-64 truncated SVD ``U s Vᵀ``
  (64 = JMF's ``model.dim``): a linear map of the O2 bag through a 64-dim user vector can express it.
* ``category, from O2``: popularity re-weighted by the user's O1 category mix predicted from their O2
  category mix (softmax regression fit on the warm users), ``log(1+n_i) + log p̂_u(c_i)/p(c_i)``.
* ``category oracle``: the same with the user's *test* O1 category mix (reads test labels: an upper
  bound on what any category-level transfer could give, not a model).

Means ± std over the seeds go to ``benchmarks/results/ciao_signal.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from common import markdown_table, mean_std, write_results

METRICS = ["rmse", "mae", "ndcg@10", "recall@20"]


class _Fixed:
    """A scorer from a ``users -> [B, I]`` function and an optional rating predictor."""

    def __init__(self, score_fn, predict_fn=None):
        self._score, self._predict = score_fn, predict_fn

    def score(self, users):
        return jnp.asarray(self._score(np.asarray(users)), jnp.float32)

    def predict(self, users, items):
        return self._predict(np.asarray(users), np.asarray(items))


def _split(beta: str, seed: int):
    from hydra import compose, initialize_config_dir

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.pipeline import build_split, load_data

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ciao_cold_start/pop", f"split.beta={beta}",
                                          f"seed={seed}"])   # conf/data/ciao.yaml reads $JMF_DATA_DIR
    data = load_data(cfg.data, seed)
    return data, build_split(data, cfg.partition, cfg.split, seed), cfg


def _onehot(index: np.ndarray, n: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(index), np.float32), (np.arange(len(index)), index)), shape=(len(index), n))


def _category_fit(X: np.ndarray, Y: np.ndarray, steps: int = 3000, lr: float = 0.5, l2: float = 1e-4) -> np.ndarray:
    """Softmax regression ``Y ≈ softmax(X W)`` (rows of ``Y`` are distributions), full-batch gradient."""
    W = np.zeros((X.shape[1], Y.shape[1]))
    for _ in range(steps):
        Z = X @ W
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        W -= lr * (X.T @ (P - Y)) / len(X) + l2 * W
    return W


def predictors(data, split) -> dict[str, _Fixed]:
    from jmf.data.batches import cf_category_distribution, cf_item_categories
    from jmf.models.cf.popularity import Popularity
    from jmf.models.joint import fit_offset_scale, neighbour_inputs, o2_rows, o2_user_offsets

    pop = Popularity(damping=5.0)
    pop.fit(split)
    counts = np.asarray(pop.item_counts)
    log_pop = np.log1p(counts)
    offsets = o2_user_offsets(split, 5.0)
    a = fit_offset_scale(split.train, offsets, pop.item_mean)
    out = {"pop": pop,
           "pop + O2 offset": _Fixed(lambda u: np.broadcast_to(counts, (len(u), len(counts))),
                                     lambda u, i: pop.item_mean[i] + a * offsets[u])}

    X = o2_rows(split)
    rows, co = neighbour_inputs(split)     # [U, I_S] rows / |O2(u)|, [I_S, I_T] XᵀY: model.neighbour_score's n_u

    def co_score(u):
        s = np.asarray((rows[u] @ co).todense())
        return s / (s.max(1, keepdims=True) + 1e-9) + 1e-3 * log_pop[None, :]
    out["co-occurrence"] = _Fixed(co_score)

    # its rank-64 truncation (64 = JMF's dim): what a d=64 linear map from the O2 bag can express
    from jmf.models.cf.svd import randomized_svd

    u_, s_, vt_ = randomized_svd(co, 64, seed=0)
    left, right = rows @ (u_ * s_[None, :]), vt_

    def co_low_rank(u):
        s = np.asarray(left[u]) @ right
        return s / (np.abs(s).max(1, keepdims=True) + 1e-9) + 1e-3 * log_pop[None, :]
    out["co-occurrence, rank 64"] = _Fixed(co_low_rank)

    cf_idx = cf_item_categories(split)                                           # [I_T] -> 0..K-1
    _, dl_idx = np.unique(data.item_category[split.dl_items], return_inverse=True)
    feats = np.asarray((X @ _onehot(dl_idx, dl_idx.max() + 1)).todense())
    feats = np.hstack([feats / np.maximum(feats.sum(1, keepdims=True), 1), np.ones((len(feats), 1))])
    mix = cf_category_distribution(split)                                        # [U, K], rows sum to 1 or 0
    warm = mix.sum(1) > 0
    target = mix[warm]
    marginal = target.mean(0)
    W = _category_fit(feats[warm], target)

    def category(dist_fn):
        def score(u):
            return log_pop[None, :] + np.log(dist_fn(u)[:, cf_idx] / marginal[cf_idx][None, :])
        return _Fixed(score)

    def predicted(u):
        z = feats[u] @ W
        p = np.exp(z - z.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)
    test_mix = np.asarray(((split.test > 0).astype(np.float32) @ _onehot(cf_idx, mix.shape[1])).todense()) + 0.1
    out["category, from O2"] = category(predicted)
    out["category oracle (test labels)"] = category(lambda u: test_mix[u] / test_mix[u].sum(1, keepdims=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--betas", nargs="+", default=["0.2", "0.5", "0.8"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--name", default="ciao_signal")
    args = parser.parse_args()
    from jmf.evaluate.protocols import EvalConfig, evaluate_split

    raw = []
    for beta in args.betas:
        for seed in args.seeds:
            start = time.perf_counter()
            data, split, cfg = _split(beta, seed)
            for name, model in predictors(data, split).items():
                ratings = name in ("pop", "pop + O2 offset")
                metrics = evaluate_split(model, split, "test", EvalConfig(ks=tuple(cfg.eval.ks), ratings=ratings))
                raw.append({"beta": beta, "model": name, "seed": seed, **{k: metrics.get(k) for k in METRICS}})
                print(f"[ciao-{beta}] {name} seed {seed}: " + ", ".join(
                    f"{k} {metrics[k]:.4f}" for k in METRICS if k in metrics), flush=True)
            print(f"  ({time.perf_counter() - start:.0f}s)", flush=True)
    rows = []
    for beta in args.betas:
        for name in dict.fromkeys(r["model"] for r in raw):
            runs = [r for r in raw if r["beta"] == beta and r["model"] == name]
            row = {"beta": beta, "model": name, "seeds": len(runs)}
            for k in METRICS:
                values = [r[k] for r in runs if r[k] is not None]
                if values:
                    mean, std = mean_std(values)
                    row[k] = f"{mean:.4f} ± {std:.4f}"
            rows.append(row)
    write_results(args.name, markdown_table(rows, ["beta", "model", "seeds", *METRICS]), raw,
                  {"table": rows})


if __name__ == "__main__":
    sys.exit(main())
