"""Which part of JMF's ranking score carries O2's signal for Ciao's cold users?  Validation only.

    python benchmarks/ciao_rank_parts.py                                  # ciao-0.5 seed 0, the benchmark's JMF-CNN
    python benchmarks/ciao_rank_parts.py --override model.weights.map=0   # the same without L_map
    python benchmarks/ciao_rank_parts.py --beta 0.2 --seed 1 --encoder transformer

JMF ranks a cold user's O1 items by ``r_i + P̂_u·Q_i + λ·(log softmax(I_u)[c_i] − log p̄(c_i))``
(``model.weights.rank > 0``; ``model.interest_score = λ``).  This script trains JMF as
``benchmarks/cold_start.py --tasks ciao-<β>`` does (its Ciao overrides, then ``--override``), but for
every joint epoch (``model.patience=0``, so no epoch is skipped) it scores the cold *validation* users
with each part of that score on its own:

* ``r``: the rank bias alone (started at the centred log popularity);
* ``r+I``: plus the interest term (λ = 1);
* ``r+PQ``: plus the factor term ``P̂_u·Q_i``;
* ``r+PQ+I``: the whole score (what ``interest_score=1`` ranks by);

with ``model=pop`` on the same users as the floor, and the validation RMSE the benchmark selects
epochs on.  No test metric is computed.  Rows go to ``benchmarks/results/<name>.{md,csv,json}``
(default name ``ciao_rank_parts`` plus the overrides).
"""

from __future__ import annotations

import argparse
import re
import time

from common import markdown_table, write_results

# part -> (model.rank_factors, model.interest_score): JMF.score itself, with those two knobs set
PARTS = {"r": (False, 0.0), "r+I": (False, 1.0), "r+PQ": (True, 0.0), "r+PQ+I": (True, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beta", default="0.5", choices=["0.2", "0.5", "0.8"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default="cnn")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides of the JMF run")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cold_start import TASKS, tuned_overrides
    from jmf.config import CONF_DIR, register_configs
    from jmf.evaluate.protocols import evaluate_full, evaluate_ratings, evaluation_users
    from jmf.run import build_split, load_data

    register_configs()
    task = f"ciao-{args.beta}"
    tuned = tuned_overrides(task, "jmf-cnn")   # the JMF overrides, whichever encoder
    common = [*TASKS[task][0], f"seed={args.seed}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*common, "model=jmf", f"model/encoder={args.encoder}", *tuned,
                                          "model.patience=0", *args.override])
        pop_cfg = compose("train", overrides=[*common, "model=pop"])
    data = load_data(cfg.data, args.seed)
    split = build_split(data, cfg.partition, cfg.split, args.seed)
    users, truth = evaluation_users(split, "valid")

    def ranking(score_fn) -> dict[str, float]:
        out = evaluate_full(score_fn, split.train, truth, users, (10, 20))
        return {"ndcg@10": out["ndcg@10"], "recall@20": out["recall@20"]}

    pop = instantiate(pop_cfg.model, _convert_="all")
    pop.fit(split, seed=args.seed)
    rows = [{"epoch": "pop", "valid rmse": evaluate_ratings(pop.predict, truth, users)["rmse"],
             **{f"{p} ndcg@10": ranking(pop.score)["ndcg@10"] for p in PARTS}}]
    model = instantiate(cfg.model, _convert_="all")
    monitored = type(model)._validate

    def validate(split_, rank_metric=None):   # the run's own validation, plus each part of the ranking score
        out = monitored(model, split_, rank_metric)
        row = {"epoch": len(rows) - 1, "valid rmse": evaluate_ratings(model.predict, truth, users)["rmse"]}
        knobs = model.rank_factors, model.interest_score
        for part, (factors, lam) in PARTS.items():
            model.rank_factors, model.interest_score = factors, lam
            m = ranking(model.score)
            row[f"{part} ndcg@10"], row[f"{part} recall@20"] = m["ndcg@10"], m["recall@20"]
        model.rank_factors, model.interest_score = knobs
        rows.append(row)
        return out

    model._validate = validate
    start = time.perf_counter()
    model.fit(split, seed=args.seed)
    name = args.name or "ciao_rank_parts" + "".join("_" + re.sub(r"[^A-Za-z0-9]+", "_", o) for o in args.override)
    columns = ["epoch", "valid rmse", *[f"{p} ndcg@10" for p in PARTS]]
    write_results(name, markdown_table(rows, columns),
                  rows, {"task": task, "seed": args.seed, "encoder": args.encoder, "overrides": args.override,
                         "valid_users": int(len(users)), "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
