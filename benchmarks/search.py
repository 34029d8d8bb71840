"""Fair tuning: the same Optuna budget for every model of a table, on validation only.

    python benchmarks/search.py --family amazon --models cmf emcdr ptupcdr mf lightgcn bitgcf jmf_cnn
    python benchmarks/search.py --family amazon --apply          # write the tuned rows (no new trials)

A family is tuned on one task and seed 0 (Amazon: amazon-phone; CDRIB: cdrib-sport; Ciao: ciao-0.5; amazon-bitgcf:
amazon-phone-bitgcf alone, whose rows it tunes in place of the Amazon family's, in a wider JMF space), with

    jmf-train -m hparams_search=<model>_optuna experiment=<experiment>/<row> <task overrides> seed=0 \\
        hydra/launcher=local hydra.sweeper.n_jobs=2

(``conf/hparams_search/<model>_optuna.yaml``: 8 TPE trials, 4 of them random start-up trials, maximising
``valid/ndcg@10``; the joblib launcher runs two trials at a time).  A finished search (its
``optimization_results.yaml``) is kept and not run again; a search a session cut short is run again by the same
command and ends as one run straight through would: the seeded sampler asks the same trials in the same order,
and each trial's folder (named by its overrides) resumes from its checkpoints, a finished trial only re-evaluated
(``tests/train/test_sweeps.py``).
Every trial's validation value and parameters go to ``benchmarks/results/search_<family>.{md,csv,json}``.
``--apply`` writes the best parameters as the row ``experiments/<experiment>/<row>_tuned.yaml`` of every
experiment of the family (the search task's and the others'), which ``benchmarks/cold_start.py`` reports
as ``<model> (tuned)`` with 3 seeds; the rows at conf defaults stay in the tables as the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cold_start import TASKS
from omegaconf import OmegaConf
from common import RESULTS, ROOT, data_dir, markdown_table, write_results

EXPERIMENTS = ROOT / "experiments"
# family -> (the task the search runs on, the experiments that get its tuned rows)
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "amazon": ("amazon-phone", ["amazon_phone_electronic", "amazon_sport_cloth", "amazon_phone_electronic_bitgcf"]),
    "cdrib": ("cdrib-sport", ["cdrib_sport_cloth", "cdrib_cloth_sport"]),
    "ciao": ("ciao-0.5", ["ciao_cold_start"]),
    # one task searched on its own validation fold: the amazon-phone settings did not carry to BiTGCF's pair
    "amazon-bitgcf": ("amazon-phone-bitgcf", ["amazon_phone_electronic_bitgcf"]),
}
# a task's own family refines a broader one: where it has searched a row, the broader family's --apply (and
# benchmarks/jmf_best.py) leaves that experiment's row alone
PARENTS: dict[str, str] = {"amazon-bitgcf": "amazon"}
# family -> row -> a wider space than ROWS gives it
FAMILY_SPACES: dict[str, dict[str, str]] = {"amazon-bitgcf": {"jmf_graph_items": "jmf_graph_items_wide"}}
# experiment row -> its search space (conf/hparams_search/<space>_optuna.yaml)
ROWS: dict[str, str] = {
    "mf": "mf", "cmf": "cmf", "emcdr": "emcdr", "ptupcdr": "ptupcdr", "lightgcn": "lightgcn",
    "bitgcf": "bitgcf", "disencdr": "disencdr", "cdrib": "cdrib",
    "jmf_cnn": "jmf", "jmf_transformer": "jmf", "jmf_graph": "jmf",
    "jmf_items": "jmf_items", "jmf_graph_items": "jmf_graph_items",   # issue 35's variants: their new parts searched
}


def space_of(family: str, row: str) -> str:
    return FAMILY_SPACES.get(family, {}).get(row, ROWS[row])


def narrower(family: str) -> set[str]:
    """Experiments of ``family`` that a narrower family (:data:`PARENTS`) has as its own."""
    return {e for child, parent in PARENTS.items() if parent == family for e in FAMILIES[child][1]}


def owned_elsewhere(family: str, row: str) -> set[str]:
    """Experiments of ``family`` whose narrower family has a recorded search of ``row``."""
    owned = set()
    for child, parent in PARENTS.items():
        stored = RESULTS / f"search_{child}.json"
        if parent == family and stored.exists() and any(
                s["row"] == row for s in json.loads(stored.read_text())["searches"]):
            owned.update(FAMILIES[child][1])
    return owned


def sweep_dir(out: Path, family: str, row: str) -> Path:
    return out / family / row


def run_search(family: str, row: str, out: Path, extra: list[str]) -> None:
    """One Optuna sweep (skipped when its ``optimization_results.yaml`` exists)."""
    target = sweep_dir(out, family, row)
    if (target / "optimization_results.yaml").exists():
        print(f"[{family}] {row}: search done before ({target})", flush=True)
        return
    command = [sys.executable, "-m", "jmf", *_search_overrides(family, row), "hydra.sweeper.n_jobs=2",
               f"hydra.sweep.dir={target}", *extra]
    print(f"[{family}] {row}: " + " ".join(command[2:]), flush=True)
    start = time.perf_counter()
    # the sweeper's start-up trials are drawn at random: a trial that fails is recorded (failure.json), and the
    # search, which goes on past it, then exits 1 or 2; a search without its results file is the failure
    res = subprocess.run(command, cwd=ROOT, env=os.environ.copy())
    if not (target / "optimization_results.yaml").exists():
        raise RuntimeError(f"[{family}] {row}: the search exited {res.returncode} without its results ({target})")
    (target / "search_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")


def read_search(family: str, row: str, out: Path) -> dict | None:
    """The trials of one finished sweep: parameters, validation value (NaN for a failed trial)."""
    target = sweep_dir(out, family, row)
    results = target / "optimization_results.yaml"
    if not results.exists():
        return None
    best = yaml.safe_load(results.read_text())
    space = _space(family, row)
    trials = []
    for overrides in sorted(target.rglob(".hydra/overrides.yaml")):   # job folders are named by overrides
        job = overrides.parent.parent
        given = dict(o.split("=", 1) for o in yaml.safe_load(overrides.read_text()) if "=" in o)
        params = {k: given[k] for k in space if k in given}
        metrics = job / "metrics.json"
        value = json.loads(metrics.read_text()).get("valid/ndcg@10", math.nan) if metrics.exists() else math.nan
        trials.append({"params": params, "valid/ndcg@10": value, "failed": not metrics.exists()})
    seconds = target / "search_seconds.txt"
    return {"family": family, "row": row, "task": FAMILIES[family][0], "best_params": best["best_params"],
            "best_value": best["best_value"], "trials": trials,
            "seconds": float(seconds.read_text()) if seconds.exists() else math.nan,
            "command": "jmf-train " + " ".join(_search_overrides(family, row))}


def _search_overrides(family: str, row: str) -> list[str]:
    """The ``jmf-train`` arguments of one search (the sweep folder and job count aside)."""
    experiment, task_overrides, _ = TASKS[FAMILIES[family][0]]
    return ["-m", f"hparams_search={space_of(family, row)}_optuna", f"experiment={experiment}/{row}", *task_overrides,
            "seed=0", "hydra/launcher=local"]


def _space(family: str, row: str) -> list[str]:
    path = ROOT / "conf" / "hparams_search" / f"{space_of(family, row)}_optuna.yaml"
    return list(yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"])


def apply(search: dict) -> list[Path]:
    """Write ``experiments/<experiment>/<row>_tuned.yaml`` for every experiment of the family."""
    row, family = search["row"], search["family"]
    tuned = OmegaConf.create()      # the searched keys, nested (model.*, and optim.* for the models that read it)
    for key, value in sorted(search["best_params"].items()):
        OmegaConf.update(tuned, key, value)
    body = OmegaConf.to_yaml(tuned, sort_keys=True)
    written, owned = [], owned_elsewhere(family, row)
    for experiment in FAMILIES[family][1]:
        if experiment in owned:
            print(f"[{family}] {row}: {experiment} has its own search, left as it is")
            continue
        start = f"  - {row}" if (EXPERIMENTS / experiment / f"{row}.yaml").exists() else \
            f"  - override /model: {row}"
        path = EXPERIMENTS / experiment / f"{row}_tuned.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            "# @package _global_\n"
            f"# {row} tuned: the best of {len(search['trials'])} Optuna trials "
            f"(conf/hparams_search/{space_of(family, row)}_optuna.yaml) on the validation fold of {search['task']}, seed 0,\n"
            f"# valid/ndcg@10 {search['best_value']:.4f} (benchmarks/results/search_{family}.md; written by "
            f"`python benchmarks/search.py --family {family} --apply`)\n"
            f"#   jmf-train experiment={experiment}/{row}_tuned\n"
            f"defaults:\n{start}\n{body}")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--models", nargs="*", default=[], choices=sorted(ROWS),
                        help="experiment rows to search (none: only report and --apply the finished ones)")
    parser.add_argument("--apply", action="store_true", help="write the tuned rows of every finished search")
    parser.add_argument("--apply-recorded", action="store_true",
                        help="with --apply: also write the rows of searches known only from their results file "
                             "(sweep folders gone), e.g. ones never applied")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every trial")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "search"))
    args = parser.parse_args()
    data_dir()
    out = Path(args.out)
    for row in args.models:
        run_search(args.family, row, out, args.override)
    # a search whose sweep folder is gone (git-ignored runs do not outlive the machine) keeps its recorded trials
    stored = RESULTS / f"search_{args.family}.json"
    kept = {s["row"]: {**s, "kept": True} for s in json.loads(stored.read_text())["searches"]} if stored.exists() else {}
    searches = [s for s in (read_search(args.family, row, out) or kept.get(row) for row in ROWS) if s is not None]
    if not searches:
        raise SystemExit(f"no finished search of family {args.family} under {out}")
    rows = []
    for s in searches:
        values = [t["valid/ndcg@10"] for t in s["trials"]]
        rows.append({"row": s["row"], "task": s["task"], "trials": len(s["trials"]),
                     "failed": sum(t["failed"] for t in s["trials"]),
                     "best valid/ndcg@10": s["best_value"],
                     "worst valid/ndcg@10": min((v for v in values if not math.isnan(v)), default=math.nan),
                     "best params": ", ".join(f"{k.removeprefix('model.')}={_short(v)}"
                                              for k, v in sorted(s["best_params"].items())),
                     "search s": round(s["seconds"]) if not math.isnan(s["seconds"]) else ""})
    commands = "\n".join(f"* `{s['row']}`: `{s['command']}`" for s in searches)
    markdown = (f"### Searches of family {args.family} (8 TPE trials each, validation only)\n\n"
                + markdown_table(rows) + "\n\nEach search:\n\n" + commands + "\n\n" + _trials(searches))
    if args.apply:
        for s in searches:
            if s.get("kept") and not args.apply_recorded:   # its rows were written (maybe edited since) when it ran
                print(f"[{args.family}] {s['row']}: recorded search, its tuned rows left as they are")
                continue
            for path in apply(s):
                print(f"wrote {path.relative_to(ROOT)}")
    write_results(f"search_{args.family}", markdown, rows, extra={"searches": searches})


def _trials(searches: list[dict]) -> str:
    """Every trial of every search, best first."""
    out = []
    for s in searches:
        trials = sorted(s["trials"], key=lambda t: -t["valid/ndcg@10"] if not math.isnan(t["valid/ndcg@10"]) else 1)
        rows = [{"valid/ndcg@10": "failed" if t["failed"] else t["valid/ndcg@10"],
                 **{k.removeprefix("model."): _short(_number(v)) for k, v in t["params"].items()}} for t in trials]
        out.append(f"#### {s['row']}: its {len(trials)} trials\n\n" + markdown_table(rows))
    return "\n\n".join(out)


def _number(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
