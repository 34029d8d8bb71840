"""jmf's DisenCDR beside the DisenCDR authors' figures, under the authors' protocol (issue 19).

    python benchmarks/authors_protocol.py                    # both directions, 10 epochs (~35 min each idle)
    python benchmarks/authors_protocol.py --resume           # reuse finished runs under benchmarks/runs/
    python benchmarks/authors_protocol.py --row disencdr_batch8192 --seeds 0 1 2   # a row of the experiment
    python benchmarks/authors_protocol.py --domains phone --seeds 1 2 --name authors_protocol_disencdr_seeds

Each direction is one ``jmf-train experiment=amazon_phone_electronic_authors[/<row>] partition.cf_categories=[<d>]
model.epochs=<E> seed=<s>`` (settings: ``experiments/amazon_phone_electronic_authors.yaml`` and its rows,
``experiments/amazon_phone_electronic_authors/<row>.yaml``): train on all of
train.txt, rank each test item among 999 sampled negatives, evaluate every 10 epochs on the test fold.
The authors' figures (their PyTorch code on 2 CPU cores, after 10 of 50 epochs) are in ``AUTHORS``.
``valid`` is the same test fold ranked among another draw of 999 negatives, so ``valid`` vs ``test``
shows how much the negative draw alone moves a figure; ``se`` is the binomial standard error of HR@10.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, markdown_table, write_results

AUTHORS = {"phone": {"hr@10": 0.2224, "ndcg@10": 0.1201}, "electronic": {"hr@10": 0.0570, "ndcg@10": 0.0242}}
AUTHORS_EPOCH_S = 3.9 * 60      # their median epoch on the same 2 cores, otherwise idle


EXPERIMENT = "amazon_phone_electronic_authors"


def run(domain: str, epochs: int, out: Path, resume: bool, row: str | None = None, seed: int = 0) -> dict:
    """One direction's run (``row``: ``experiments/<EXPERIMENT>/<row>.yaml``; ``None``: the default, DisenCDR
    at the authors' settings).  The default row at seed 0 keeps its original folder, ``<out>/<domain>``."""
    run_dir = out / domain if row is None and seed == 0 else out / (row or "default") / f"{domain}_seed{seed}"
    if not (resume and (run_dir / "metrics.json").exists()):
        cmd = [sys.executable, "-m", "jmf", "experiment=" + EXPERIMENT + (f"/{row}" if row else ""),
               f"partition.cf_categories=[{domain}]", f"model.epochs={epochs}", f"seed={seed}",
               "trainer.progress=false", f"hydra.run.dir={run_dir}"]
        subprocess.run(cmd, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    return {"domain": domain, "seed": seed, "metrics": metrics, "seconds": timing["train/fit_seconds"],
            "users": metrics["rows/test"]}          # one held-out item per test user


def rows_of(results: list[dict], epochs: int) -> list[dict]:
    """One domain's rows: each metric's mean over ``results`` (one run per seed) beside the authors'."""
    domain, rows = results[0]["domain"], []
    for metric in ("hr@10", "ndcg@10"):
        tests = [r["metrics"][f"test/{metric}"] for r in results]
        ours, theirs = statistics.fmean(tests), AUTHORS[domain][metric]
        row = {"domain": domain, "metric": metric, "authors (epoch 10)": theirs, "jmf test": ours}
        if len(results) > 1:
            row["std over seeds"] = statistics.stdev(tests)
            row["seeds"] = " ".join(f"{t:.4f}" for t in tests)
        else:
            row["jmf valid (other negatives)"] = results[0]["metrics"][f"valid/{metric}"]
        row["relative"] = f"{(ours - theirs) / theirs:+.1%}"
        if metric == "hr@10":
            row["se"] = math.sqrt(ours * (1 - ours) / results[0]["users"])
        row["s/epoch"] = statistics.fmean(r["seconds"] for r in results) / epochs
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", nargs="+", default=list(AUTHORS), choices=list(AUTHORS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--row", default=None, help=f"a row of experiments/{EXPERIMENT}/ (default: the experiment's "
                        "own, DisenCDR at the authors' settings)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "authors_protocol"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--name", default=None, help="result file stem (default: authors_protocol_disencdr[_<row>]; "
                        "give another one for a slice of domains or seeds, so the full table is not overwritten)")
    args = parser.parse_args()
    rows = []
    for domain in args.domains:
        results = [run(domain, args.epochs, Path(args.out), args.resume, args.row, seed) for seed in args.seeds]
        rows += rows_of(results, args.epochs)
    note = (f"\n\nThe authors' epoch: {AUTHORS_EPOCH_S:.0f} s (median, idle). `s/epoch` is jmf's fit time over "
            f"{args.epochs} epochs as measured in these runs (it includes the evaluation, and any other load "
            "on the machine at the time). `se`: the binomial standard error of one run's HR@10.")
    name = args.name or "authors_protocol_disencdr" + (f"_{args.row}" if args.row else "")
    write_results(name, markdown_table(rows, digits=4) + note, rows)


if __name__ == "__main__":
    main()
