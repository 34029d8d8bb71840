"""What compiling costs a run, with the persistent compilation cache cold and warm, and what a sweep shares.

    python benchmarks/compile_cold_warm.py               # ~15 min on 2 idle cores
    python benchmarks/compile_cold_warm.py --quick       # MF and the sweep only

Each case is one ``jmf-train`` command in a fresh process, run three ways: with the cache switched off
(``JMF_COMPILE_CACHE=off``: every run compiles everything), into an empty ``JAX_COMPILATION_CACHE_DIR``
(cold) and again into the same folder (warm).  The figures are ``timing.json``'s ``train/fit_seconds`` and
``train/compile_seconds`` (tracing, lowering and XLA's compile or cache load, from JAX's monitoring
events), the process's wall clock, and the entries the run added to the cache folder (distinct programs
compiled).

The sweep is the README's, ``jmf-train -m experiment=quickstart model=pop,jmf seed=0,1,2`` (6 jobs, Hydra's
basic launcher: one process), off, cold and warm, with each job's compile seconds: a job whose programs an
earlier job compiled loads them (as the warm rows do).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, data_dir, markdown_table, write_results  # noqa: E402

CASES = {
    "MF, ML-100k": ["data=ml100k", "model=mf", "split=ratio", "split.by=global", "split.valid_ratio=0"],
    "iALS, ML-100k": ["data=ml100k", "model=ials"],
    "JMF-CNN, quickstart": ["experiment=quickstart"],
}
QUICK = ("MF, ML-100k",)
SWEEP = ["-m", "experiment=quickstart", "model=pop,jmf", "seed=0,1,2"]


def entries(cache: Path) -> int:
    return sum(1 for p in cache.iterdir() if p.is_file()) if cache.is_dir() else 0


def jmf_train(args: list[str], out: Path, cache: Path | None) -> float:
    """One ``jmf-train`` process (``cache=None``: the cache off); returns its wall seconds."""
    env = {**os.environ, "JMF_DATA_DIR": str(data_dir())}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if cache is None:
        env["JMF_COMPILE_CACHE"] = "off"
    else:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    where = "hydra.sweep.dir" if args[:1] == ["-m"] else "hydra.run.dir"
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "jmf", *args, "trainer.progress=false", f"{where}={out}"], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"jmf-train {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - start


def timings(out: Path) -> list[dict]:
    """Every ``timing.json`` under ``out`` (a sweep's jobs in the order they ran), with its job folder."""
    found = sorted(out.rglob("timing.json"), key=lambda p: p.stat().st_mtime)
    return [{"job": str(p.parent.relative_to(out)) or ".", **json.loads(p.read_text())} for p in found]


def case_rows(name: str, args: list[str], work: Path) -> list[dict]:
    rows = []
    cache = work / f"xla_{len(list(work.iterdir()))}"
    for mode in ("off", "cold", "warm"):
        out = work / f"run_{cache.name}_{mode}"
        before = entries(cache)
        wall = jmf_train(args, out, None if mode == "off" else cache)
        timing = timings(out)[0]
        rows.append({"case": name, "cache": mode, "process s": wall, "fit s": timing["train/fit_seconds"],
                     "compile s": timing["train/compile_seconds"],
                     "entries added": entries(cache) - before if mode != "off" else float("nan")})
        print(rows[-1], flush=True)
    return rows


def sweep_rows(work: Path) -> tuple[list[dict], dict]:
    rows, per_job = [], {}
    cache = work / "xla_sweep"
    for mode in ("off", "cold", "warm"):
        out = work / f"sweep_{mode}"
        before = entries(cache)
        wall = jmf_train(SWEEP, out, None if mode == "off" else cache)
        jobs = timings(out)
        per_job[mode] = [{"job": j["job"], "fit s": j["train/fit_seconds"], "compile s": j["train/compile_seconds"]}
                         for j in jobs]
        rows.append({"case": "sweep: " + " ".join(SWEEP[1:]), "cache": mode, "process s": wall,
                     "fit s": sum(j["train/fit_seconds"] for j in jobs),
                     "compile s": sum(j["train/compile_seconds"] for j in jobs),
                     "entries added": entries(cache) - before if mode != "off" else float("nan")})
        print(rows[-1], per_job[mode], flush=True)
    return rows, per_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="MF and the sweep only")
    parser.add_argument("--render", action="store_true",
                        help="only rebuild the .md table from the .json of the last run (its command kept)")
    args = parser.parse_args()
    if args.render:
        payload = json.loads((RESULTS / "compile_cold_warm.json").read_text())
        header = f"<!-- written by `{payload['command']}`; table rebuilt by --render -->\n\n"
        (RESULTS / "compile_cold_warm.md").write_text(header + report(payload["rows"], payload["sweep_jobs"]) + "\n")
        return
    work = Path(tempfile.mkdtemp(prefix="jmf-compile-"))
    rows = []
    for name, case in CASES.items():
        if not args.quick or name in QUICK:
            rows += case_rows(name, case, work)
    sweep, per_job = sweep_rows(work)
    rows += sweep
    write_results("compile_cold_warm", report(rows, per_job), rows, {"sweep_jobs": per_job})


def _model(job: str) -> str:
    """The model of a sweep job's folder name (``experiment=<task>/<row>,...`` or ``model=<name>,...``)."""
    found = re.search(r"(?:^|,)(?:model=|experiment=[^/,]+/)([^,]+)", job)
    return found.group(1) if found else job


def report(rows: list[dict], per_job: dict) -> str:
    jobs = [{"job": j["job"], **{f"{mode} compile s": per_job[mode][i]["compile s"] for mode in per_job},
             **{f"{mode} fit s": per_job[mode][i]["fit s"] for mode in per_job}}
            for i, j in enumerate(per_job["cold"])]
    firsts: dict[str, str] = {}
    for job in per_job["cold"]:                      # the first job of each model compiles; the rest load
        firsts.setdefault(_model(job["job"]), job["job"])
    cold = {j["job"]: j["compile s"] for j in per_job["cold"]}
    later = [c for job, c in cold.items() if job not in firsts.values()]
    first = [cold[job] for job in firsts.values()]
    return "\n".join([
        "## Compilation: cache off, cold and warm", "",
        "`jmf-train <case>` in a fresh process per row: `off` with `JMF_COMPILE_CACHE=off`, `cold` into an empty "
        "`JAX_COMPILATION_CACHE_DIR`, `warm` into the same folder again. `compile s` is `train/compile_seconds` "
        "(JAX's tracing, lowering and compile-or-load events during the fit; a jit traced inside another is "
        "counted in both, so it can exceed `fit s`), `entries added` the programs written to the cache.", "",
        markdown_table(rows, ["case", "cache", "process s", "fit s", "compile s", "entries added"]), "",
        f"### The sweep's jobs (`jmf-train {' '.join(SWEEP)}`, one process)", "",
        markdown_table(jobs), "",
        f"Cold cache: the first job of each model ({', '.join(firsts)}) compiled for {sum(first):.1f} s in all; "
        f"the {len(later)} later jobs for {sum(later):.1f} s in all.  The quickstart draws its synthetic data from "
        "the seed, so each seed's category sizes, and with them its item tables' shapes, differ (JMF's step: "
        "[131, 32] and [169, 16] tables at seed 0, [122, 32] and [178, 16] at seed 1, from JAX_LOG_COMPILES): every "
        "seed's step is a distinct program, compiled once; a warm cache loads them all."])


if __name__ == "__main__":
    main()
