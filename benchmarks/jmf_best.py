"""The row ``jmf_best`` of each task family: the JMF variant with the best validation NDCG@10 on the family's search task.

    python benchmarks/jmf_best.py --family amazon --results cold_start_amazon_audited
    python benchmarks/jmf_best.py --family ciao --results cold_start_ciao_audited

Reads the per-run rows of a ``benchmarks/cold_start.py`` results file, keeps the JMF rows (table names starting
with ``jmf``) run on the family's search task (``benchmarks/search.py``'s: amazon-phone, cdrib-sport, ciao-0.5),
averages each one's ``valid/ndcg@10`` over its seeds, and writes ``experiments/<experiment>/jmf_best.yaml``
(``defaults: [<row>]``) for every experiment of the family, with the validation figures of every candidate in
its comment.  Test metrics are not read, so ``jmf-train experiment=<experiment>/jmf_best`` is chosen on
validation only.  A candidate needs ``--min-seeds`` seeds; a row missing from one of the family's experiments
is refused by name.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from cold_start import MODELS
from common import RESULTS, ROOT
from search import FAMILIES, narrower

EXPERIMENTS = ROOT / "experiments"


def candidates(rows: list[dict], task: str, min_seeds: int) -> dict[str, tuple[float, int]]:
    """JMF table rows of ``task`` -> (mean ``valid/ndcg@10`` over its seeds, seeds), those with ``min_seeds``."""
    values: dict[str, list[float]] = {}
    for r in rows:
        value = r.get("valid/ndcg@10")
        value = math.nan if value is None else float(value)       # rows of older files may lack it
        if r["task"] == task and r["model"].startswith("jmf") and r["model"] != "jmf (best)" and not math.isnan(value):
            values.setdefault(r["model"], []).append(value)
    return {m: (sum(v) / len(v), len(v)) for m, v in values.items() if len(v) >= min_seeds}


def write_best(family: str, results: str, min_seeds: int = 3) -> str:
    """Write the family's ``jmf_best.yaml`` files; returns the chosen table row."""
    task, experiments = FAMILIES[family]
    # a task with its own family (benchmarks/search.py's PARENTS) gets its jmf_best from that family's task
    experiments = [e for e in experiments if e not in narrower(family)]
    rows = json.loads((RESULTS / f"{results}.json").read_text())["rows"]
    found = candidates(rows, task, min_seeds)
    if not found:
        raise SystemExit(f"{results}: no JMF row of {task} with {min_seeds} seeds and valid/ndcg@10")
    best = max(found, key=lambda m: found[m][0])
    row = MODELS[best]
    missing = [e for e in experiments if not (EXPERIMENTS / e / f"{row}.yaml").exists()]
    if missing:
        raise SystemExit(f"jmf_best: the chosen row {row} is missing from experiments {missing} of family {family}")
    listing = "\n".join(f"#   {m}: {v:.4f} ({n} seeds)" for m, (v, n) in sorted(found.items(), key=lambda x: -x[1][0]))
    for experiment in experiments:
        (EXPERIMENTS / experiment / "jmf_best.yaml").write_text(
            f"# @package _global_\n# jmf_best: the JMF variant with the best validation NDCG@10 on {task} (mean over "
            f"seeds, benchmarks/results/{results}.json), chosen\n# from these candidates (test metrics not read):\n"
            f"{listing}\n# written by `python benchmarks/jmf_best.py --family {family} --results {results}`\n"
            f"#   jmf-train experiment={experiment}/jmf_best\ndefaults:\n  - {row}\n")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--results", required=True, help="a benchmarks/cold_start.py results file (stem)")
    parser.add_argument("--min-seeds", type=int, default=3)
    args = parser.parse_args()
    best = write_best(args.family, args.results, args.min_seeds)
    print(f"jmf_best ({args.family}): {best} -> experiments/*/jmf_best.yaml", file=sys.stderr)


if __name__ == "__main__":
    main()
