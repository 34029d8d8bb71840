"""Which part of JMF's ranking score carries O2's signal for Ciao's cold users?  Validation only.

    python benchmarks/ciao_rank_parts.py                                  # ciao-0.5 seed 0, the benchmark's JMF-CNN
    python benchmarks/ciao_rank_parts.py --override model.weights.map=0   # the same without L_map
    python benchmarks/ciao_rank_parts.py --beta 0.2 --seed 1 --encoder transformer

JMF ranks a cold user's O1 items by ``r_i + P̂_u·Q_i + λ·(log softmax(I_u)[c_i] − log p̄(c_i))``
(``model.weights.rank > 0``; the ``interest`` score term at weight λ).  This script trains JMF as
``jmf-train experiment=ciao_cold_start split.beta=<β>`` does (then ``--override``), but for
every joint epoch (``model.patience=0``, so no epoch is skipped) it scores the cold *validation* users
with each part of that score on its own:

* ``r``: the rank bias alone (started at the centred log popularity);
* ``r+I``: plus the interest term (λ = 1);
* ``r+PQ``: plus the factor term ``P̂_u·Q_i``;
* ``r+PQ+I``: the whole score (what the interest term at weight 1 ranks by);

with ``model=pop`` on the same users as the floor, and the validation RMSE the benchmark selects
epochs on.  No test metric is computed.  Rows go to ``benchmarks/results/<name>.{md,csv,json}``
(default name ``ciao_rank_parts`` plus the overrides).
"""

from __future__ import annotations

import argparse
import re
import time

from common import markdown_table, write_results

# part -> (with the factor term P̂_u·Q_i, with the interest term): the parts of JMF's ranking score
PARTS = {"r": (False, False), "r+I": (False, True), "r+PQ": (True, False), "r+PQ+I": (True, True)}


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

    from cold_start import overrides_of
    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.evaluate.protocols import evaluate_full, evaluate_ratings, evaluation_users
    from jmf.models.base import RunContext
    from jmf.pipeline import build_split, load_data

    register_configs()
    task = f"ciao-{args.beta}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides_of(task, "jmf-cnn", args.seed), f"model/encoder={args.encoder}",
                                          "model.patience=0", *args.override])
        pop_cfg = compose("train", overrides=overrides_of(task, "pop", args.seed))
    data = load_data(cfg.data, args.seed)
    split = build_split(data, cfg.partition, cfg.split, args.seed)
    users, truth = evaluation_users(split, "valid")

    def ranking(score_fn) -> dict[str, float]:
        out = evaluate_full(score_fn, split.train, truth, users, (10, 20))
        return {"ndcg@10": out["ndcg@10"], "recall@20": out["recall@20"]}

    pop = instantiate(pop_cfg.model, _convert_="all")
    pop.fit(split, RunContext(seed=args.seed))
    rows = [{"epoch": "pop", "valid rmse": evaluate_ratings(pop.predict, truth, users)["rmse"],
             **{f"{p} ndcg@10": ranking(pop.score)["ndcg@10"] for p in PARTS}}]
    model = instantiate(cfg.model, _convert_="all")
    monitored = type(model)._validate

    def part_scores(factors: bool, interest: bool):
        def score(users):   # r_i (+ P̂_u·Q_i) (+ the interest term) of the state being validated
            user = model.user_vectors(users)
            t, n = model.state.tables, model.n_items
            out = t["rank_bias"][:n, 0][None, :] + (user.vec @ t["Q"][:n].T if factors else 0.0)
            return out + model.terms["interest"](users, user) if interest else out
        return score

    def validate(split_, rank_metric=None):   # the run's own validation, plus each part of the ranking score
        out = monitored(model, split_, rank_metric)
        row = {"epoch": len(rows) - 1, "valid rmse": evaluate_ratings(model.predict, truth, users)["rmse"]}
        for part, (factors, interest) in PARTS.items():
            m = ranking(part_scores(factors, interest))
            row[f"{part} ndcg@10"], row[f"{part} recall@20"] = m["ndcg@10"], m["recall@20"]
        rows.append(row)
        return out

    model._validate = validate
    start = time.perf_counter()
    model.fit(split, RunContext(seed=args.seed))
    name = args.name or "ciao_rank_parts" + "".join("_" + re.sub(r"[^A-Za-z0-9]+", "_", o) for o in args.override)
    columns = ["epoch", "valid rmse", *[f"{p} ndcg@10" for p in PARTS]]
    write_results(name, markdown_table(rows, columns),
                  rows, {"task": task, "seed": args.seed, "encoder": args.encoder, "overrides": args.override,
                         "valid_users": int(len(users)), "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
