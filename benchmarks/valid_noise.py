"""Can the validation slice tell epochs apart?  Validation noise of the Amazon tasks, read on validation only.

    python benchmarks/valid_noise.py                                   # the 5 Amazon tasks; ratios 0.1 and 1.0
    python benchmarks/valid_noise.py --tasks amazon-cloth --ratios 0.1 --seeds 0

The Amazon folds (DisenCDR's) ship no validation rows, so ``split=predefined`` carves one training
item from ``split.valid_ratio`` of the users, and ``model=jmf`` keeps the epoch with the best
validation NDCG@10 over every item of the domain.  For each task, ratio and seed this script trains
JMF-CNN (the benchmark's ``jmf-cnn`` overrides) and records the per-user validation NDCG@10 of
every epoch, then reports:

* ``users``: validation users; ``pop ndcg@10 ± se``: ``model=pop`` on the same slice, with the
  standard error of a mean over those users (``std / sqrt(n)``);
* ``best``: the epoch JMF keeps and its validation NDCG@10; ``range``: max - min over the epochs;
* ``paired se``: the median over epochs of the standard error of the per-user difference between
  that epoch and the best one (paired, so the users' shared difficulty cancels);
* ``tied``: how many other epochs are within 2 paired standard errors of the best -- epochs the
  slice cannot tell from the chosen one.

No test metric is computed.  Rows go to ``benchmarks/results/valid_noise.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax.numpy as jnp
import numpy as np

from common import markdown_table, write_results

TASKS = ["amazon-phone-bitgcf", "amazon-phone", "amazon-elec", "amazon-cloth", "amazon-sport"]


def per_user_ndcg(score_fn, split, k: int = 10, batch: int = 256) -> np.ndarray:
    """``[n]`` full-ranking NDCG@k of each validation user (training items excluded), as JMF validates."""
    from jmf.evaluate.metrics import ranking_metrics_indexed
    from jmf.evaluate.protocols import _padded_indices, evaluation_users

    users, truth = evaluation_users(split, "valid")
    out = []
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        scores = score_fn(jnp.asarray(chunk))
        rel, excl = _padded_indices(truth, chunk), _padded_indices(split.train, chunk)
        out.append(np.asarray(ranking_metrics_indexed(scores, jnp.asarray(rel), (k,), jnp.asarray(excl))[f"ndcg@{k}"]))
    return np.concatenate(out)


def se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def one(task: str, ratio: float, seed: int) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cold_start import overrides_of
    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.models.base import RunContext
    from jmf.pipeline import build_split, load_data

    register_configs()
    extra = [f"split.valid_ratio={ratio}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides_of(task, "jmf-cnn", seed), *extra])
        pop_cfg = compose("train", overrides=[*overrides_of(task, "pop", seed), *extra])
    data = load_data(cfg.data, seed)
    split = build_split(data, cfg.partition, cfg.split, seed)

    pop = instantiate(pop_cfg.model, _convert_="all")
    pop.fit(split, RunContext(seed=seed))
    pop_ndcg = per_user_ndcg(pop.score, split)

    model = instantiate(cfg.model, _convert_="all")
    curves: list[np.ndarray] = []

    if model.rank_monitor is not None or model.monitor not in ("auto", "ndcg@10"):
        raise ValueError(f"{task}: valid_noise.py follows a JMF selected on validation NDCG@10 alone")

    def validate(split_, rank_metric=None):   # the model's own validation, keeping each user's value
        curves.append(per_user_ndcg(model.score, split_))
        return {"ndcg@10": float(curves[-1].mean())}

    model._validate = validate
    start = time.perf_counter()
    model.fit(split, RunContext(seed=seed))
    means = np.array([c.mean() for c in curves])
    best = int(means.argmax())
    paired = [se(c - curves[best]) for i, c in enumerate(curves) if i != best]
    tied = sum(means[best] - means[i] <= 2 * se(curves[i] - curves[best]) for i in range(len(curves)) if i != best)
    return {"task": task, "valid_ratio": str(ratio), "seed": seed, "users": len(pop_ndcg),
            "pop ndcg@10": float(pop_ndcg.mean()), "pop se": se(pop_ndcg),
            "epochs": len(curves), "best epoch": best, "best ndcg@10": float(means[best]),
            "range": float(means.max() - means.min()), "paired se": float(np.median(paired)) if paired else 0.0,
            "tied": int(tied), "curve": [round(float(m), 5) for m in means],
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--name", default="valid_noise")
    args = parser.parse_args()
    rows = [one(t, r, s) for t in args.tasks for r in args.ratios for s in args.seeds]
    for row in rows:
        print(row, file=sys.stderr)
    columns = ["task", "valid_ratio", "seed", "users", "pop ndcg@10", "pop se", "epochs", "best epoch",
               "best ndcg@10", "range", "paired se", "tied"]
    write_results(args.name, markdown_table(rows, columns), rows)


if __name__ == "__main__":
    main()
