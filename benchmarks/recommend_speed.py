"""Inference throughput of saved models: ``recommend_new`` users/s and single-user latency, beside the
in-run evaluation's users/s, measured in the same process on the same 2 CPU cores.

    python benchmarks/recommend_speed.py                          # ~10^4 and ~5x10^4 CF-side items
    python benchmarks/recommend_speed.py --experiments throughput --models jmf-cnn

For each experiment (``experiments/throughput*.yaml``) and model, the script trains it briefly with
``jmf.run.run`` (one epoch: speed, not accuracy, is measured), loads the run with ``jmf.load``, and times

* ``recommend_new`` on 1 000 new users (the cold test users' O2 history as raw behaviour; iALS, which has
  no O2 path, folds users in from their CF-side rows), end to end from the DataFrame to the top-10 table;
* the same for one user at a time, 200 calls: latency p50 / p99;
* the evaluator's full ranking of the test users with ``model.score`` (what a run's evaluation does).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import ROOT, markdown_table, write_results

MODELS = {"jmf-cnn": "jmf_cnn", "jmf-transformer": "jmf_transformer", "ials": "ials"}   # experiments/throughput/


def _history(rec, users: np.ndarray, side: str):
    import pandas as pd

    split, data = rec.split, rec.split.data
    rows = split.dl_rows if side == "dl" else split.train_rows
    if side == "cf":   # warm users' CF rows (iALS folds users in from O1)
        users = np.flatnonzero(np.diff(split.train.indptr) > 0)[:len(users)]
    rows = rows[np.isin(data.user[rows], users)]
    return pd.DataFrame({"user": ["new-" + str(u) for u in data.user_ids[data.user[rows]]],
                         "item": data.item_ids[data.item[rows]], "timestamp": data.timestamp[rows]})


def one(experiment: str, model: str, out_root: Path) -> dict:
    import jax.numpy as jnp
    from hydra import compose, initialize_config_dir

    import jmf
    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.evaluate.protocols import evaluate_full
    from jmf.run import run

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}/{MODELS[model]}", "seed=0",
                                          "trainer.resume=false"])
    out = out_root / experiment / model
    start = time.perf_counter()
    run(cfg, out)
    fit = time.perf_counter() - start
    rec = jmf.load(out)
    split = rec.split
    cold = split.cold_test_users[:1000]
    history = _history(rec, cold, "cf" if model == "ials" else "dl")
    rec.recommend_new(history.head(200), k=10)                       # compile
    start = time.perf_counter()
    table = rec.recommend_new(history, k=10)
    batch_s = time.perf_counter() - start
    n_new = table["user"].nunique()
    singles = [history[history["user"] == u] for u in history["user"].unique()[:200]]
    latency = []
    for frame in singles:
        start = time.perf_counter()
        rec.recommend_new(frame, k=10)
        latency.append(time.perf_counter() - start)
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    evaluate_full(rec.model.score, split.train, split.test, users[:2048], (10,))   # compile
    start = time.perf_counter()
    evaluate_full(rec.model.score, split.train, split.test, users, (10,))
    eval_s = time.perf_counter() - start
    del jnp
    return {"experiment": experiment, "model": model, "cf items": split.train.shape[1], "new users": n_new,
            "recommend_new users/s": n_new / batch_s, "p50 ms": 1e3 * float(np.percentile(latency, 50)),
            "p99 ms": 1e3 * float(np.percentile(latency, 99)),
            "evaluation users/s": len(users) / eval_s, "fallback users": int(table.attrs["fallback_users"]),
            "fit s": fit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["throughput", "throughput_large"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "recommend_speed"))
    parser.add_argument("--name", default="recommend_speed")
    args = parser.parse_args()
    rows = []
    for experiment in args.experiments:
        for model in args.models:
            rows.append(one(experiment, model, Path(args.out)))
            print(rows[-1], flush=True)
    columns = ["experiment", "model", "cf items", "new users", "recommend_new users/s", "p50 ms", "p99 ms",
               "evaluation users/s", "fallback users"]
    write_results(args.name, markdown_table(rows, columns, digits=1), rows)


if __name__ == "__main__":
    main()
