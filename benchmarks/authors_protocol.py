"""jmf's DisenCDR beside the DisenCDR authors' figures, under the authors' protocol (issue 19).

    python benchmarks/authors_protocol.py                    # both directions, 10 epochs (~35 min each idle)
    python benchmarks/authors_protocol.py --resume           # reuse finished runs under benchmarks/runs/

Each direction is one ``jmf-train experiment=amazon_phone_electronic_authors partition.cf_categories=[<d>]
model.epochs=<E>`` (settings: ``experiments/amazon_phone_electronic_authors.yaml``): train on all of
train.txt, rank each test item among 999 sampled negatives, evaluate every 10 epochs on the test fold.
The authors' figures (their PyTorch code on 2 CPU cores, after 10 of 50 epochs) are in ``AUTHORS``.
``valid`` is the same test fold ranked among another draw of 999 negatives, so ``valid`` vs ``test``
shows how much the negative draw alone moves a figure; ``se`` is the binomial standard error of HR@10.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from common import ROOT, markdown_table, write_results

AUTHORS = {"phone": {"hr@10": 0.2224, "ndcg@10": 0.1201}, "electronic": {"hr@10": 0.0570, "ndcg@10": 0.0242}}
AUTHORS_EPOCH_S = 3.9 * 60      # their median epoch on the same 2 cores, otherwise idle


def run(domain: str, epochs: int, out: Path, resume: bool) -> dict:
    run_dir = out / domain
    if not (resume and (run_dir / "metrics.json").exists()):
        cmd = [sys.executable, "-m", "jmf", "experiment=amazon_phone_electronic_authors",
               f"partition.cf_categories=[{domain}]", f"model.epochs={epochs}", "trainer.progress=false",
               f"hydra.run.dir={run_dir}"]
        subprocess.run(cmd, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    return {"domain": domain, "metrics": metrics, "seconds": timing["train/fit_seconds"],
            "users": metrics["rows/test"]}          # one held-out item per test user


def rows_of(result: dict, epochs: int) -> list[dict]:
    m, domain = result["metrics"], result["domain"]
    rows = []
    for metric in ("hr@10", "ndcg@10"):
        ours, theirs = m[f"test/{metric}"], AUTHORS[domain][metric]
        row = {"domain": domain, "metric": metric, "authors (epoch 10)": theirs, "jmf test": ours,
               "jmf valid (other negatives)": m[f"valid/{metric}"], "relative": f"{(ours - theirs) / theirs:+.1%}"}
        if metric == "hr@10":
            row["se"] = math.sqrt(ours * (1 - ours) / result["users"])
        row["s/epoch"] = result["seconds"] / epochs
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", nargs="+", default=list(AUTHORS), choices=list(AUTHORS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "authors_protocol"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    rows = []
    for domain in args.domains:
        rows += rows_of(run(domain, args.epochs, Path(args.out), args.resume), args.epochs)
    note = (f"\n\nThe authors' epoch: {AUTHORS_EPOCH_S:.0f} s (median, idle). `s/epoch` is jmf's fit time over "
            f"{args.epochs} epochs as measured in these runs (it includes the evaluation, and any other load "
            "on the machine at the time).")
    write_results("authors_protocol_disencdr", markdown_table(rows, digits=4) + note, rows)


if __name__ == "__main__":
    main()
