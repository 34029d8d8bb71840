"""The category transfer map (issue 33): the planted graph recovered, one run against per-target runs, the maps.

    python benchmarks/transfer_map.py --task planted --seeds 0 1 2 --resume     # experiment=synthetic_transfer_map
    python benchmarks/transfer_map.py --task ciao --resume                      # one jmf_map run vs 10 single runs
    python benchmarks/transfer_map.py --task maps --resume                      # Ciao's 28 and ML-100k's 19 maps

* ``planted``: per seed, how well the map recovers the planted category graph (``map/within``, ``map/across``:
  the mean entry within and across the planted groups; ``map/spearman``: the rank correlation of the entries with
  the planted weights), the popularity row beside the model's NDCG@10; the mean map over seeds with its spread is
  drawn into the docs.
* ``ciao``: Ciao's 10 largest categories as targets (``split.targets=10``, the same cold users for every run):
  one ``model=jmf_map`` run against one single-target JMF per target (``experiments/ciao_transfer_map/jmf.yaml``
  with ``split.target=<name>``), run one after the other on this machine, each without the persistent compilation
  cache (every run compiles its own programs, as a first run does): per-target test NDCG@10 and their ratio, and
  the training time of each (``timing.json``'s ``train/seconds``: the fit, compilation included).
* ``maps``: ``experiment=ciao_transfer_map`` (every category a target) and ``experiment=ml100k_transfer_map`` (every
  genre), seed 0: the map tables and pictures for the docs.

Runs live in ``benchmarks/runs/transfer_map/`` (git-ignored); ``--resume`` reuses a run whose ``metrics.json``
exists, so the benchmark goes on where a stopped session left it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, data_dir, markdown_table, mean_std, write_results  # noqa: E402

RUNS = ROOT / "benchmarks" / "runs" / "transfer_map"
ASSETS = ROOT / "docs" / "pages" / "assets" / "transfer_map"
CLI = [sys.executable, "-m", "jmf"]


def train(name: str, overrides: list[str], resume: bool, cold: bool = False) -> Path:
    """``jmf-train overrides`` in ``RUNS/name`` (reused with ``resume`` when it finished); returns the directory.
    ``cold``: without the persistent compilation cache, so every run pays its own compilation."""
    out = RUNS / name
    if resume and (out / "metrics.json").exists():
        print(f"[{name}] reusing {out}", flush=True)
        return out
    if out.exists() and not resume:
        shutil.rmtree(out)
    env = {**os.environ, "JMF_DATA_DIR": str(data_dir())}
    if cold:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env["JMF_COMPILE_CACHE"] = "off"
    cmd = [*CLI, *overrides, f"hydra.run.dir={out}", "trainer.save_model=false", "trainer.progress=false"]
    print("[" + name + "] " + " ".join(cmd[2:]), flush=True)
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"[{name}] failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return out


def metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def train_seconds(run: Path) -> float:
    return float(json.loads((run / "timing.json").read_text())["train/seconds"])


def planted(seeds: list[int], resume: bool) -> None:
    from jmf.transfer_map import draw_map, read_csv, write_csv

    rows, maps = [], []
    for seed in seeds:
        run = train(f"planted_s{seed}", ["experiment=synthetic_transfer_map", f"seed={seed}", "trainer.baseline=pop"],
                    resume)
        m = metrics(run)
        names, cols, tmap = read_csv(run / "transfer_map.csv")
        maps.append(tmap)
        rows.append({"seed": seed, "ndcg@10": m["test/ndcg@10"], "pop ndcg@10": m["baseline/test/ndcg@10"],
                     "within": m["map/within"], "across": m["map/across"],
                     "within / abs(across)": m["map/within"] / abs(m["map/across"]),
                     "spearman": m["map/spearman"], "train s": round(train_seconds(run), 1)})
    mean, spread = np.mean(maps, 0), np.std(maps, 0, ddof=1) if len(maps) > 1 else np.zeros_like(maps[0])
    write_csv(RUNS / "planted_mean.csv", names, cols, mean)
    ASSETS.mkdir(parents=True, exist_ok=True)
    draw_map(ASSETS / "planted.png", names, cols, mean, f"planted category graph, mean of seeds {seeds}", spread)
    table = markdown_table(rows, digits=4)
    note = ("\n\nWithin: the mean map entry over (target, source) pairs of one planted group; across: over pairs of "
            "two groups (planted weight 0).  The planted weights are 0.9 (group g0) and 0.5 (group g1).")
    write_results("transfer_map_planted", table + note, rows,
                  {"mean_map": {"targets": names, "sources": cols, "matrix": mean.tolist(), "spread": spread.tolist()}})


def ciao(seed: int, resume: bool) -> None:
    multi = train(f"ciao10_multi_s{seed}", ["experiment=ciao_transfer_map", "split.targets=10", f"seed={seed}"],
                  resume, cold=True)
    m = metrics(multi)
    names = sorted({k.split("/")[1] for k in m if k.startswith("targets/")}, key=lambda n: int(n) if n.isdigit()
                   else n)
    rows, single_seconds = [], 0.0
    for name in names:
        run = train(f"ciao10_single_{name}_s{seed}", ["experiment=ciao_transfer_map/jmf", "split.targets=10",
                                                        f"split.target={name}", f"seed={seed}"], resume, cold=True)
        s = metrics(run)
        single_seconds += train_seconds(run)
        rows.append({"target": name, "single ndcg@10": s["test/ndcg@10"],
                     "jmf_map ndcg@10": m[f"targets/{name}/test/ndcg@10"],
                     "ratio": m[f"targets/{name}/test/ndcg@10"] / s["test/ndcg@10"],
                     "single train s": round(train_seconds(run), 1)})
    ratio = float(np.mean([r["ratio"] for r in rows]))
    multi_seconds = train_seconds(multi)
    rows.append({"target": "mean / total", "single ndcg@10": float(np.mean([r["single ndcg@10"] for r in rows])),
                 "jmf_map ndcg@10": m["test/ndcg@10"], "ratio": ratio, "single train s": round(single_seconds, 1)})
    summary = (f"\n\nOne `model=jmf_map` run trained the 10 targets in {multi_seconds:.1f} s against "
               f"{single_seconds:.1f} s for the 10 single-target runs together "
               f"({multi_seconds / single_seconds:.2f} of their time); its per-target test NDCG@10 is "
               f"{ratio:.3f}x theirs on average (seed {seed}, the same cold users in every run).")
    write_results(f"transfer_map_ciao_vs_single_s{seed}", markdown_table(rows, digits=4) + summary, rows,
                  {"multi_train_seconds": multi_seconds, "single_train_seconds": single_seconds,
                   "mean_ratio": ratio})


def maps(resume: bool) -> None:
    from jmf.transfer_map import draw_map, read_csv

    ASSETS.mkdir(parents=True, exist_ok=True)
    for task, title in (("ciao", "Ciao, 28 categories"), ("ml100k", "MovieLens-100k, 19 genres")):
        run = train(f"{task}_map_s0", [f"experiment={task}_transfer_map", "seed=0", "trainer.baseline=pop"], resume)
        names, cols, tmap = read_csv(run / "transfer_map.csv")
        m = metrics(run)
        draw_map(ASSETS / f"{task}.png", names, cols, tmap, f"{title}: how much each source carries into each target")
        rows = [{"target": n, **{c: float(v) for c, v in zip(cols, row)}} for n, row in zip(names, tmap)]
        strongest = []
        for n, row in zip(names, tmap):
            order = np.argsort(-np.nan_to_num(row, nan=-np.inf))[:3]
            strongest.append({"target": n, "ndcg@10": m[f"targets/{n}/test/ndcg@10"],
                              "pop ndcg@10": m[f"baseline/targets/{n}/test/ndcg@10"],
                              "strongest sources": ", ".join(f"{cols[j]} ({row[j]:.2f})" for j in order)})
        above = sum(r["ndcg@10"] > r["pop ndcg@10"] for r in strongest)
        off = np.abs(tmap[np.isfinite(tmap)])
        summary = (f"\n\nThe model is above popularity on {above} of the {len(strongest)} targets; the map's entries "
                   f"have a median magnitude of {np.median(off):.3f} and a largest of {off.max():.3f} (seed 0).")
        write_results(f"transfer_map_{task}", markdown_table(strongest, digits=4) + summary, rows,
                      {"targets": names, "sources": cols, "matrix": tmap.tolist(), "above_popularity": int(above)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", nargs="+", choices=["planted", "ciao", "maps"], required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--resume", action="store_true", help="reuse finished runs in benchmarks/runs/transfer_map/")
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    if "planted" in args.task:
        planted(args.seeds, args.resume)
    if "ciao" in args.task:
        ciao(args.seeds[0], args.resume)
    if "maps" in args.task:
        maps(args.resume)


if __name__ == "__main__":
    main()
