"""Which new part of JMF earns what: the graph CF side and item-level transfer, each on and off (issue 35).

    python benchmarks/ablation.py --results cold_start_amazon_audited

The four rows of the 2 x 2 design are experiment rows run by ``benchmarks/cold_start.py`` (3 seeds each, in the
results file named): ``jmf_nb`` (neither part: tuned JMF-CNN with the item-neighbourhood term), ``jmf_items``
(+ item-level transfer), ``jmf_graph_nb`` (+ the graph CF side), ``jmf_graph_items`` (both).  Per task, a table
of the four rows (mean ± std over seeds of the task's metrics) and each part's main effect -- the mean over the
other part's two settings of (on - off), with the spread over seeds -- go to
``benchmarks/results/ablation_<results>.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from cold_start import TASKS
from common import RESULTS, markdown_table, mean_std, write_results

# table row -> (graph CF side, item-level transfer)
DESIGN = {"jmf-nb": (False, False), "jmf-items": (False, True), "jmf-graph-nb": (True, False),
          "jmf-graph-items": (True, True)}
PARTS = ("graph CF side", "item-level transfer")


def per_seed(rows: list[dict], task: str, metric: str) -> dict[str, dict[int, float]]:
    """Design row -> seed -> the metric."""
    out: dict[str, dict[int, float]] = {m: {} for m in DESIGN}
    for r in rows:
        if r.get("task") == task and r.get("model") in DESIGN and not math.isnan(r.get(metric, math.nan)):
            out[r["model"]][int(r["seed"])] = float(r[metric])
    return out


def main_effects(values: dict[str, dict[int, float]]) -> dict[str, tuple[float, float, int]]:
    """Part -> (mean effect, std over seeds, seeds): per seed, ``mean(on) - mean(off)`` over the other part's two
    settings; only seeds where all four rows ran."""
    seeds = sorted(set.intersection(*(set(v) for v in values.values()))) if values else []
    out = {}
    for k, part in enumerate(PARTS):
        effects = [np.mean([values[m][s] for m, d in DESIGN.items() if d[k]])
                   - np.mean([values[m][s] for m, d in DESIGN.items() if not d[k]]) for s in seeds]
        out[part] = (*mean_std(effects), len(seeds)) if effects else (math.nan, math.nan, 0)
    return out


def tables(rows: list[dict]) -> tuple[str, list[dict]]:
    """The markdown (one table per task with the design's rows, then the main effects) and the flat rows."""
    parts, flat = [], []
    for task in TASKS:
        metrics = TASKS[task][2]
        table, effects_rows = [], []
        for metric in metrics:
            values = per_seed(rows, task, metric)
            if not any(values.values()):
                continue
            for part, (mean, std, n) in main_effects(values).items():
                effects_rows.append({"metric": metric.removeprefix("test/"), "part": part,
                                     "main effect": f"{mean:+.4f} ± {std:.4f}" if n else "", "seeds": n})
                flat.append({"task": task, "metric": metric, "part": part, "effect": mean, "std": std, "seeds": n})
        if not effects_rows:
            continue
        for model, (graph, items) in DESIGN.items():
            cells = {}
            for metric in metrics:
                v = list(per_seed(rows, task, metric)[model].values())
                cells[metric.removeprefix("test/")] = "{:.4f} ± {:.4f}".format(*mean_std(v)) if v else ""
            table.append({"row": model, "graph CF": "on" if graph else "off", "item transfer": "on" if items else "off",
                          "seeds": len(per_seed(rows, task, metrics[0])[model]), **cells})
        parts.append(f"### {task}\n\n{markdown_table(table)}\n\nMain effect of each part (on minus off, averaged "
                     f"over the other part; mean ± std over seeds):\n\n{markdown_table(effects_rows)}\n")
    return "\n".join(parts) or "No task has the design's rows yet.\n", flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", required=True, help="a benchmarks/cold_start.py results file (stem)")
    args = parser.parse_args()
    rows = json.loads((RESULTS / f"{args.results}.json").read_text())["rows"]
    markdown, flat = tables(rows)
    write_results(f"ablation_{args.results.removeprefix('cold_start_')}", markdown, flat)


if __name__ == "__main__":
    main()
