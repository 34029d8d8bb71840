"""jmf's DisenCDR beside the DisenCDR authors' figures, under the authors' protocol (issue 19).

    python benchmarks/authors_protocol.py                    # both directions, 10 epochs (~35 min each idle)
    python benchmarks/authors_protocol.py --resume           # reuse finished runs under benchmarks/runs/
    python benchmarks/authors_protocol.py --row disencdr_batch8192 --seeds 0 1 2   # a row of the experiment
    python benchmarks/authors_protocol.py --domains phone --seeds 1 2 --name authors_protocol_disencdr_seeds
    python benchmarks/authors_protocol.py --domains phone --seeds 1 2 --resume --merge-from authors_protocol_disencdr \
        --name authors_protocol_disencdr_seeds    # seeds 1-2 beside seed 0's run, read from its result file

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
import re
import statistics
import subprocess
import sys
from pathlib import Path

from common import RESULTS, ROOT, markdown_table, write_results

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
    parser.add_argument("--merge-from", nargs="+", default=[], metavar="NAME",
                        help="result files (benchmarks/results/NAME.json) whose runs join this table's, for the "
                        "(domain, seed) pairs not run here (a file written before runs were recorded gives its seed 0)")
    parser.add_argument("--name", default=None, help="result file stem (default: authors_protocol_disencdr[_<row>]; "
                        "give another one for a slice of domains or seeds, so the full table is not overwritten)")
    args = parser.parse_args()
    rows, runs = [], []
    earlier: dict[tuple[str, int], dict] = {}
    for r in (r for name in args.merge_from for r in earlier_runs(name, args.row)):
        earlier.setdefault((r["domain"], r["seed"]), r)          # the first file holding a run wins
    for domain in args.domains:
        results = [run(domain, args.epochs, Path(args.out), args.resume, args.row, seed) for seed in args.seeds]
        results += [r for (d, seed), r in earlier.items() if d == domain and seed not in args.seeds]
        results.sort(key=lambda r: r["seed"])
        rows += rows_of(results, args.epochs)
        runs += [{**r, "metrics": {k: v for k, v in r["metrics"].items() if k.split("/")[-1] in ("hr@10", "ndcg@10")}}
                 for r in results]
    note = (f"\n\nThe authors' epoch: {AUTHORS_EPOCH_S:.0f} s (median, idle). `s/epoch` is jmf's fit time over "
            f"{args.epochs} epochs as measured in these runs (it includes the evaluation, and any other load "
            "on the machine at the time). `se`: the binomial standard error of one run's HR@10.")
    name = args.name or "authors_protocol_disencdr" + (f"_{args.row}" if args.row else "")
    write_results(name, markdown_table(rows, digits=4) + note, rows, extra={"runs": runs})


def earlier_runs(name: str, row: str | None) -> list[dict]:
    """The runs recorded in ``results/<name>.json``; a file written before runs were recorded holds one seed's
    rows (``jmf test``, ``jmf valid``, ``se``, ``s/epoch``), rebuilt here as that seed's runs."""
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    theirs = re.search(r"--row (\S+)", payload["command"])
    if (theirs[1] if theirs else None) != row:
        raise SystemExit(f"--merge-from {name}: its runs are of row {theirs[1] if theirs else None}, not {row}")
    if "runs" in payload:
        return payload["runs"]
    seeds = re.search(r"--seeds ((?:\d+ ?)+)", payload["command"])
    if any("seeds" in row for row in payload["rows"]) or (seeds and len(seeds.group(1).split()) > 1):
        raise SystemExit(f"--merge-from {name}: the file holds means over several seeds, not runs")
    seed = int(seeds.group(1)) if seeds else 0
    epochs = int(re.search(r"--epochs (\d+)", payload["command"] + " --epochs 10")[1])
    out: dict[str, dict] = {}
    for row in payload["rows"]:
        r = out.setdefault(row["domain"], {"domain": row["domain"], "seed": seed, "metrics": {},
                                           "seconds": row["s/epoch"] * epochs})
        r["metrics"][f"test/{row['metric']}"] = row["jmf test"]
        r["metrics"][f"valid/{row['metric']}"] = row["jmf valid (other negatives)"]
        if row["metric"] == "hr@10":        # the test users, from the binomial standard error
            r["users"] = round(row["jmf test"] * (1 - row["jmf test"]) / row["se"] ** 2)
    return list(out.values())


if __name__ == "__main__":
    main()
