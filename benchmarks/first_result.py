"""Time to the first result: ``jmf-train``'s MF fit on MovieLens-100k beside Surprise's SVD on the same split.

    python benchmarks/first_result.py                    # 3 rounds, ~3 min on 2 idle cores
    python benchmarks/first_result.py --ref c4b81ea      # also the same command at an older commit, interleaved

The command is the one a new user runs first on ratings, at the conf defaults::

    jmf-train data=ml100k model=mf split=ratio split.by=global split.valid_ratio=0 seed=0

Every ``jmf-train`` run is a fresh process.  Each revision gets its own ``JAX_COMPILATION_CACHE_DIR``, empty
at the start: its first run is the cold one, the later ones are warm.  The figure is ``train/fit_seconds`` of
``timing.json`` (``model.fit``'s wall clock, compilation and cache loads included) and ``test/rmse`` of
``metrics.json``.  Surprise's ``SVD`` at its defaults (100 factors, 20 epochs, lr 0.005, reg 0.02,
``random_state=0``) fits the same training rows in this process, timed around ``fit``; its RMSE is on the
same test rows.  Rounds alternate the programs, so load that comes and goes moves them alike; the table
gives each one's median over the warm rounds.

Goal (issue 31): the warm fit within 2x Surprise's fit, at the same or a lower test RMSE.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, data_dir, markdown_table, write_results  # noqa: E402
from same_metrics import CLI, tree  # noqa: E402

COMMAND = ["data=ml100k", "model=mf", "split=ratio", "split.by=global", "split.valid_ratio=0", "seed=0"]


def surprise_fit() -> tuple[float, float]:
    """Surprise SVD at its defaults on the split of :data:`COMMAND`: ``(fit seconds, test RMSE)``."""
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    from mf_ml100k import load_data
    from jmf.data.split import make_split, partition_categories

    data = load_data()
    split = make_split(data, partition_categories(data), "ratio", by="global", test_ratio=0.2, valid_ratio=0.0,
                       seed=0)
    train, test = split.train.tocoo(), split.test.tocoo()
    frame = pd.DataFrame({"user": train.row, "item": train.col, "rating": train.data})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    algo = SVD(random_state=0)
    start = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - start
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.row, test.col)])
    return seconds, float(np.sqrt(np.mean((pred - test.data) ** 2)))


def jmf_fit(source: Path, cache: Path, out: Path, overrides: list[str]) -> dict[str, float]:
    """One ``jmf-train`` process of the code in ``source``: fit and compile seconds, test RMSE, process wall."""
    env = {**os.environ, "PYTHONPATH": str(source), "JMF_DATA_DIR": str(data_dir()),
           "JAX_COMPILATION_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CLI, *COMMAND, *overrides, "trainer.progress=false",
                          f"hydra.run.dir={out}"], cwd=source, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"jmf-train in {source} failed:\n{res.stderr[-3000:]}")
    timing = json.loads((out / "timing.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {"fit s": timing["train/fit_seconds"], "compile s": timing.get("train/compile_seconds", float("nan")),
            "process s": wall, "test RMSE": metrics["test/rmse"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds (after one cold run per revision)")
    parser.add_argument("--ref", default=None, help="also time the command at this commit (a git worktree)")
    parser.add_argument("--override", nargs="*", default=[], help="more jmf-train overrides for every run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jmf-first-result-"))
    sources = {"jmf": ROOT}
    if args.ref:
        short = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
        sources[f"jmf @{short}"] = tree(short, work)
    rows = []
    for round_ in range(args.rounds + 1):           # round 0: each revision's cold run
        for name, source in sources.items():
            key = name.replace(" ", "_").replace("@", "")
            row = {"round": round_, "program": name, "cache": "cold" if round_ == 0 else "warm",
                   **jmf_fit(source, work / f"xla_{key}", work / f"run_{key}_{round_}", args.override)}
            rows.append(row)
            print(row, flush=True)
        seconds, rmse = surprise_fit()
        rows.append({"round": round_, "program": "Surprise SVD", "cache": "", "fit s": seconds, "test RMSE": rmse})
        print(rows[-1], flush=True)

    summary = []
    for name in [*sources, "Surprise SVD"]:
        for cache in ("cold", "warm") if name != "Surprise SVD" else ("",):
            mine = [r for r in rows if r["program"] == name and r["cache"] == cache and (cache or r["round"] > 0)]
            if mine:
                summary.append({"program": name, "cache": cache or "-", "runs": len(mine),
                                **{c: statistics.median(m[c] for m in mine) for c in ("fit s", "compile s", "process s", "test RMSE")
                                   if c in mine[0]}})
    surprise = next(r for r in summary if r["program"] == "Surprise SVD")
    for r in summary:
        r["fit ÷ Surprise"] = r["fit s"] / surprise["fit s"]
    warm = next(r for r in summary if r["program"] == "jmf" and r["cache"] == "warm")
    ratio_met = warm["fit ÷ Surprise"] <= 2.0
    rmse_met = warm["test RMSE"] <= surprise["test RMSE"]
    text = ["## Time to the first result: MF on ML-100k, jmf-train against Surprise SVD", "",
            f"`jmf-train {' '.join(COMMAND + args.override)}` (conf defaults), a fresh process per run; medians of "
            f"{args.rounds} warm rounds, programs alternating; the cold row is each revision's first run into an "
            "empty `JAX_COMPILATION_CACHE_DIR`. `fit s` is `train/fit_seconds` (model.fit, compilation "
            "included); Surprise's SVD (defaults, `random_state=0`) fits the same training rows in the "
            "benchmark's process.", "",
            markdown_table(summary, ["program", "cache", "runs", "fit s", "compile s", "process s", "test RMSE",
                                     "fit ÷ Surprise"]), "",
            f"Goal: warm fit ≤ 2× Surprise's — {'met' if ratio_met else 'NOT met'} "
            f"({warm['fit ÷ Surprise']:.2f}×); test RMSE ≤ Surprise's — {'met' if rmse_met else 'NOT met'} "
            f"({warm['test RMSE']:.4f} vs {surprise['test RMSE']:.4f})."]
    write_results("first_result", "\n".join(text), rows, {"summary": summary, "command": COMMAND + args.override})
    print(f"first_result_vs_surprise={warm['fit ÷ Surprise']:.2f}")


if __name__ == "__main__":
    main()
