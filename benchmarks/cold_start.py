"""Cross-category / cross-domain benchmark: every model x seeds on each task, through the Hydra configs.

    python benchmarks/cold_start.py --tasks synthetic                 # planted structure + oracle (~15 min)
    python benchmarks/cold_start.py --tasks ciao-0.2 ciao-0.5 ciao-0.8
    python benchmarks/cold_start.py --tasks amazon-cloth amazon-sport amazon-phone amazon-elec amazon-phone-bitgcf
    python benchmarks/cold_start.py --tasks cdrib-sport cdrib-cloth
    python benchmarks/cold_start.py --tasks ciao-0.2 --models pop mf jmf-cnn --seeds 0   # a quick slice

Each (task, model, seed) runs ``jmf-train experiment=<experiment>/<row> <task overrides> seed=<s>``: the
task's experiment file (``experiments/<experiment>.yaml``) with the model's row
(``experiments/<experiment>/<row>.yaml`` where the table reports tuned settings, else the model at its conf
defaults), so every number here is reproduced by that command alone; the script holds no settings of its
own.  ``metrics.json`` goes to ``benchmarks/runs/<task>/<model>/seed<s>/``.  Epochs are selected on each
split's validation fold only (cold-start validation users, or a slice carved from training for the
DisenCDR pairs); test metrics are read once per run.  Tables (mean ± std over seeds) go to
``benchmarks/results/cold_start_<tasks>.{md,csv,json}``; rows are models, columns metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import traceback
from pathlib import Path

from jmf import hugepages
import common
import evidence
from common import RESULTS, ROOT, data_dir, markdown_table, mean_std, write_results

# task -> (experiment overrides, metrics reported)
RANK = ["test/ndcg@10", "test/recall@20"]
RATE = ["test/rmse", "test/mae"]
SAMPLED = ["test/sampled/hr@10", "test/sampled/ndcg@10", "test/full/ndcg@10", "test/full/recall@20"]
FIXED = ["test/hr@10", "test/ndcg@10", "test/full/ndcg@10", "test/full/recall@20"]
SAMPLERS = (0, 1, 2)  # the Amazon experiments' eval.test_sampling_seeds: test/sampled/<m> is their mean
CDRIB = ["test/mrr", "test/ndcg@5", "test/ndcg@10", "test/hr@1", "test/hr@5", "test/hr@10", "test/full/ndcg@10",
         "test/full/hr@10"]
# task -> (experiment, the task's own overrides, metrics reported)
TASKS: dict[str, tuple[str, list[str], list[str]]] = {
    "synthetic": ("synthetic_cold_start", [], RANK),
    "synthetic-no-shared": ("synthetic_no_shared", [], RANK),
    **{f"ciao-{b}": ("ciao_cold_start", [f"split.beta={b}"], RATE + RANK) for b in ("0.2", "0.5", "0.8")},
    "amazon-cloth": ("amazon_sport_cloth", ["partition.cf_categories=[cloth]"], SAMPLED),
    "amazon-sport": ("amazon_sport_cloth", ["partition.cf_categories=[sport]"], SAMPLED),
    "amazon-phone": ("amazon_phone_electronic", ["partition.cf_categories=[phone]"], SAMPLED),
    "amazon-elec": ("amazon_phone_electronic", ["partition.cf_categories=[electronic]"], SAMPLED),
    "amazon-phone-bitgcf": ("amazon_phone_electronic_bitgcf", [], FIXED),
    "cdrib-sport": ("cdrib_sport_cloth", [], CDRIB),
    "cdrib-cloth": ("cdrib_cloth_sport", [], CDRIB),
}
# a task -> its mirror: the run of a model that trains both sides with split.dl_folds=true (its experiment row says
# so, e.g. experiments/amazon_phone_electronic/disencdr.yaml) gives the mirror task's row too, from its dl/ metrics
MIRROR = {"amazon-phone": "amazon-elec", "amazon-elec": "amazon-phone", "amazon-sport": "amazon-cloth",
          "amazon-cloth": "amazon-sport", "cdrib-sport": "cdrib-cloth", "cdrib-cloth": "cdrib-sport"}
# model name (table row) -> experiment row (experiments/<experiment>/<row>.yaml, or conf/model/<row>.yaml)
MODELS: dict[str, str] = {
    "pop": "pop",
    "cooc": "cooc",                         # the item-neighbourhood term alone (nothing learned)
    "mf (target-only)": "mf",
    "cmf": "cmf",
    "emcdr": "emcdr",
    "ptupcdr": "ptupcdr",
    "lightgcn": "lightgcn",
    "lightgcn (merged)": "lightgcn_merged",
    "bitgcf": "bitgcf",
    "disencdr": "disencdr",
    "cdrib": "cdrib",
    "jmf-cnn": "jmf_cnn",
    "jmf-transformer": "jmf_transformer",
    "jmf-graph": "jmf_graph",
    "jmf-cnn+nb": "jmf_cnn_defaults_nb",    # jmf_cnn plus the item-neighbourhood score term (no search there)
    "jmf-cnn+nb (tuned)": "jmf_cnn_nb",     # jmf_cnn_tuned plus the item-neighbourhood score term
    "jmf-nb": "jmf_nb",                     # tuned JMF-CNN + the neighbour term, wider grid (issue 35's base)
    "jmf-items": "jmf_items",               # + item-level transfer (model/item_transfer=attention)
    "jmf-graph-nb": "jmf_graph_nb",         # + the graph CF side (model/cf=graph)
    "jmf-graph-items": "jmf_graph_items",   # + both
    "jmf (best)": "jmf_best",               # the variant chosen on validation (benchmarks/jmf_best.py)
    "oracle": "oracle",
}
# the rows tuned by benchmarks/search.py (experiments/<experiment>/<row>_tuned.yaml), where the experiment has one
TUNED = ("mf (target-only)", "cmf", "emcdr", "ptupcdr", "lightgcn", "bitgcf", "disencdr", "cdrib", "jmf-cnn",
         "jmf-transformer", "jmf-graph", "jmf-items", "jmf-graph-items")
MODELS = {k: v for name, row in MODELS.items()
          for k, v in [(name, row)] + ([(name.split(" (")[0] + " (tuned)", f"{row}_tuned")] if name in TUNED else [])}
ALIASES = {"mf": "mf (target-only)", "lightgcn-merged": "lightgcn (merged)"}


def overrides_of(task: str, model: str, seed: int) -> list[str]:
    """The ``jmf-train`` overrides of one table cell: ``experiment=<experiment>/<row> <task overrides> seed=<s>``."""
    experiment, task_overrides, _ = TASKS[task]
    return [f"experiment={experiment}/{MODELS[model]}", *task_overrides, f"seed={seed}"]


def finished_run(out: Path, overrides: list[str], cfg=None) -> dict[str, float] | None:
    """The metrics of a run folder that finished with exactly ``overrides`` (``--reuse-runs``), or ``None``.
    ``cfg``: the config those overrides compose to now; the run must have been made with it (an experiment file
    edited since -- a longer epoch cap, another grid -- makes the same overrides another run).
    Its ``bench/seconds`` is the run's own ``train/seconds`` (setup and data loading not included)."""
    paths = [out / n for n in ("metrics.json", "overrides.json", "timing.json")]
    if not all(p.exists() for p in paths) or json.loads(paths[1].read_text()) != overrides:
        return None
    if cfg is not None and not same_config(out, cfg):
        return None
    metrics = json.loads(paths[0].read_text())
    metrics["bench/seconds"] = json.loads(paths[2].read_text())["train/seconds"]
    return metrics


COMPOSED = "composed.yaml"      # the config a table cell's overrides composed to, written when its run finished


def same_config(out: Path, cfg) -> bool:
    """Whether the finished run in ``out`` was made with ``cfg``: the config its overrides composed to
    (:data:`COMPOSED`; a run from before it was kept: the run's own ``config.yaml``) has the same data, partition,
    split, model, seed, eval and trainer settings (the execution knobs, e.g. ``trainer.resume``, aside), and no run
    started over the folder since (its ``config.yaml`` is not newer than its ``metrics.json``)."""
    from omegaconf import OmegaConf

    from jmf.run import EXECUTION_KEYS

    started, metrics = out / "config.yaml", out / "metrics.json"
    if not started.exists() or started.stat().st_mtime > metrics.stat().st_mtime:
        return False
    saved = out / COMPOSED if (out / COMPOSED).exists() else started

    def part(c: dict) -> dict:
        return {**{k: c.get(k) for k in ("data", "partition", "split", "model", "seed", "eval")},
                "trainer": {k: v for k, v in (c.get("trainer") or {}).items() if k not in EXECUTION_KEYS}}
    return part(OmegaConf.to_container(OmegaConf.load(saved))) == part(OmegaConf.to_container(cfg, resolve=True))


def run_one(task: str, model: str, seed: int, extra: list[str], out_root: Path,
            reuse: bool = False, resume: bool = False, keep_checkpoints: bool = False) -> dict[str, float]:
    """One table cell's run.  ``resume``: take the run folder's finished run of the same overrides as it is, or
    continue its checkpoints where a killed run of the same config left them (the engine's exact resume); a folder
    of another config starts fresh.  A finished run's checkpoints are removed unless ``keep_checkpoints`` (a table
    of 23 rows x 3 seeds kept ~50 GB of them)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.run import run
    from jmf.train.checkpoint import CheckpointError

    register_configs()
    overrides = [*overrides_of(task, model, seed), *extra]
    out = out_root / task / MODELS[model] / f"seed{seed}"

    def config(resume_run: bool):
        # trainer.resume=false starts fresh over the folder's checkpoints
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[*overrides, f"trainer.resume={str(resume_run).lower()}"])

    # a finished run of the same config is taken as it is: with its checkpoints removed, resuming would train it
    # again from scratch
    cfg = config(resume)         # composed once: the finished-run check, the fit and composed.yaml read it
    if (reuse or resume) and (done := finished_run(out, overrides, cfg)) is not None:
        evidence.keep_per_user(out, task, MODELS[model], seed, overrides=" ".join(extra))
        return sampled_means(done)

    def fit(resume_run: bool) -> dict[str, float]:
        return run(cfg if resume_run == resume else config(resume_run), out)

    start = time.perf_counter()
    try:
        metrics = fit(resume)
    except CheckpointError as err:
        if not resume:
            raise
        print(f"[{task}] {model} seed {seed}: the run folder's checkpoints are unusable ({err}); starting fresh",
              flush=True)
        metrics = fit(False)
    metrics["bench/seconds"] = time.perf_counter() - start
    (out / "overrides.json").write_text(json.dumps(overrides))
    (out / COMPOSED).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    evidence.keep_per_user(out, task, MODELS[model], seed, overrides=" ".join(extra))
    if not keep_checkpoints:     # a finished run needs its metrics and saved model, not its resume points
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return sampled_means(metrics)


def sampled_means(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` with ``test/sampled/<m>``, the mean of ``test/s<k>/<m>`` over the negative samplers (the
    DisenCDR protocol under several samplers), where the run has all of them; a fresh run and a reused one alike."""
    for name in ("hr@10", "ndcg@10"):
        per_sampler = [metrics[f"test/s{s}/{name}"] for s in SAMPLERS if f"test/s{s}/{name}" in metrics]
        if len(per_sampler) == len(SAMPLERS):
            metrics[f"test/sampled/{name}"] = sum(per_sampler) / len(per_sampler)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["synthetic"], choices=sorted(TASKS))
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"default: all but oracle (oracle added on synthetic tasks); known {sorted(MODELS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs"))
    parser.add_argument("--name", default=None, help="result file stem (default: cold_start_<tasks>)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished (task, model, seed) runs of results/<name>.json and run the rest, "
                             "each continuing from its run folder's last checkpoint (a killed run resumes exactly)")
    parser.add_argument("--merge-from", nargs="*", default=[],
                        help="more result stems whose finished runs of --tasks are kept, replacing --resume's "
                             "(e.g. a slice run in another process)")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="take a (task, model, seed) from its run folder under --out when it finished with the "
                             "same overrides (e.g. a benchmark stopped between the seeds of a model)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep a finished run's checkpoints (default: removed; its metrics and model/ stay)")
    args = parser.parse_args()
    hugepages.ensure()     # XLA's per-step buffers in huge pages (jmf/hugepages.py), before JAX loads
    data_dir()  # fail early when the real datasets are missing
    from jmf.experiments import experiment_catalogue

    name = args.name or "cold_start_" + "_".join(args.tasks)
    raw = _load_runs(([(name, False)] if args.resume else []) + [(m, True) for m in args.merge_from],
                     merged_tasks=set(args.tasks))
    done = {(r["task"], r["model"], r["seed"]) for r in raw if "error" not in r}
    for task in args.tasks:
        rows = experiment_catalogue()[TASKS[task][0]]     # a tuned row exists only where the search wrote it
        models = [ALIASES.get(m, m) for m in args.models] if args.models else [
            m for m in MODELS if (m != "oracle" or task.startswith("synthetic")) and MODELS[m] in rows]
        for model in models:
            for seed in args.seeds:
                if (task, model, seed) in done:
                    continue
                # a run that failed before and is tried again replaces its error row
                raw = [r for r in raw if (r["task"], r["model"], r["seed"]) != (task, model, seed)]
                try:
                    metrics = run_one(task, model, seed, args.override, Path(args.out), args.reuse_runs, args.resume,
                                      args.keep_checkpoints)
                except Exception as err:  # recorded, the table says so; the benchmark goes on
                    traceback.print_exc()
                    raw.append({"task": task, "model": model, "seed": seed, "error": f"{type(err).__name__}: {err}"})
                    _write(name, args.tasks, raw)
                    continue
                raw.append(_row(task, model, seed, metrics, " ".join(args.override)))
                if task in MIRROR and any(k.startswith("dl/test/") for k in metrics):
                    # one run, both sides: the DL side's figures are the mirror task's row (same seed)
                    mirror = MIRROR[task]
                    raw = [r for r in raw if (r["task"], r["model"], r["seed"]) != (mirror, model, seed)]
                    dl = sampled_means({k[3:]: v for k, v in metrics.items() if k.startswith("dl/")})
                    raw.append(_row(mirror, model, seed, {**dl, "bench/seconds": metrics["bench/seconds"]},
                                    " ".join(args.override), both_sides_of=task))
                    done.add((mirror, model, seed))
                # after every run, so a cut-short benchmark keeps its finished runs even where its run folders
                # do not outlive the machine (git-ignored)
                _write(name, args.tasks, raw)
    _write(name, args.tasks, raw)       # and once at the end: a run of finished cells (--merge-from) rewrites it


def _row(task: str, model: str, seed: int, metrics: dict[str, float], overrides: str,
         both_sides_of: str | None = None) -> dict:
    """One result row of a run's metrics: the task's metrics, the validation fold's (for choices made on
    validation), the test-selected figures (``eval.select_on_test``), the seconds; printed."""
    metric_names = TASKS[task][2]
    valid = {v: metrics[v] for v in ("valid/" + k.split("/")[-1] for k in metric_names) if v in metrics}
    # JMF's score-term weight chosen on validation, and the validation metric of every weight tried
    valid.update({k: v for k, v in metrics.items() if k.startswith("train/") and "neighbour_score" in k})
    selected = {k: v for k, v in metrics.items() if k.startswith("test_selected/") or k.startswith("test/s0/")}
    selected.update({k: v for k, v in metrics.items()        # beyond accuracy and slices (benchmarks/evidence.py)
                     if k.split("/")[-1] in evidence.BEYOND or (k.startswith("test/slice/") and k.endswith(
                         ("/ndcg@10", "/n")))})
    row = {"task": task, "model": model, "seed": seed, **{k: metrics.get(k, math.nan) for k in metric_names},
           **valid, **selected, "seconds": metrics["bench/seconds"], "overrides": overrides,
           "commit": common.STARTED_AT}        # per row: a --resume'd file holds rows of several sessions
    if both_sides_of:
        row["both_sides_of"] = both_sides_of    # the DL side of that task's run (split.dl_folds)
    print(f"[{task}] {model} seed {seed}: " + ", ".join(
        f"{k.split('/', 1)[1]} {metrics.get(k, math.nan):.4f}" for k in metric_names)
        + (f" (the DL side of the {both_sides_of} run)" if both_sides_of else f" ({metrics['bench/seconds']:.0f}s)"),
        flush=True)
    return row


def _load_runs(stems: list[tuple[str, bool]], merged_tasks: set[str] | None = None) -> list[dict]:
    """The per-run rows of earlier result files ``(stem, must_exist)`` (later files win for the same
    task, model and seed).  A file that must exist is a ``--merge-from`` one: only its rows of
    ``merged_tasks`` that finished are taken; the ``--resume`` file keeps every task (failures too)."""
    runs: dict[tuple, dict] = {}
    for stem, must_exist in stems:
        path = RESULTS / f"{stem}.json"
        if not path.exists():
            if must_exist:
                raise FileNotFoundError(f"--merge-from: {path} does not exist")
            continue
        for r in json.loads(path.read_text())["rows"]:
            if must_exist and ((merged_tasks is not None and r["task"] not in merged_tasks) or "error" in r):
                continue             # a --merge-from file gives its finished runs only, not its failures
            runs[(r["task"], r["model"], r["seed"])] = r
    return list(runs.values())


def _table_rows(task: str, raw: list[dict], marked: set[str] = frozenset()) -> list[dict]:
    """Mean ± std over seeds per model, in ``MODELS`` order; ``marked``: models below the best per user (``*``)."""
    metric_names = TASKS[task][2]
    rows = []
    for model in MODELS:
        runs = [r for r in raw if r["task"] == task and r["model"] == model and "error" not in r]
        if not runs:
            continue
        row = {"task": task, "model": model + (" *" if model in marked else ""), "seeds": len(runs)}
        for k in [*metric_names, *_selected_keys(runs), *evidence.beyond_keys(runs)]:
            values = [r[k] for r in runs if k in r and r[k] is not None and not math.isnan(r[k])]
            if values:
                mean, std = mean_std(values)
                row[_label(k)] = f"{mean:.4f} ± {std:.4f}"
        for name in ("hr@10", "ndcg@10"):     # the authors' selection on test against jmf's on validation
            on_test = [r[f"test_selected/{name}"] for r in runs if f"test_selected/{name}" in r]
            on_valid = [r[f"test/s0/{name}"] for r in runs if f"test_selected/{name}" in r and f"test/s0/{name}" in r]
            if on_test and len(on_valid) == len(on_test) and sum(on_valid) > 0:
                row[f"inflation {name}"] = f"{sum(on_test) / sum(on_valid) - 1:+.1%}"
        row["s/run"] = f"{mean_std([r['seconds'] for r in runs])[0]:.0f}"
        rows.append(row)
    return rows


def _label(key: str) -> str:
    """A table column: ``test/sampled/hr@10`` -> ``sampled/hr@10``; ``test_selected/hr@10`` -> ``on test: hr@10``;
    ``inflation hr@10``: the test-selected figure over the validation-selected one, minus 1."""
    if "/" not in key:                    # a column of its own (inflation hr@10)
        return key
    head, tail = key.split("/", 1)
    return f"on test: {tail}" if head == "test_selected" else tail


def _selected_keys(runs: list[dict]) -> list[str]:
    """The test-selected figures of ``runs`` (``eval.select_on_test``) and the sampler they are drawn with."""
    present = {k for r in runs for k in r}
    keys = [k for k in ("test_selected/hr@10", "test_selected/ndcg@10") if k in present]
    return [*keys, *(k.replace("test_selected/", "test/s0/") for k in keys),
            *(f"inflation {k.split('/')[1]}" for k in keys)] if keys else []


def _write(name: str, tasks: list[str], raw: list[dict]) -> None:
    """Tables of ``tasks`` and of every other task with runs in ``raw`` (kept from earlier runs)."""
    present = set(tasks) | {r["task"] for r in raw}
    sections, rows = [], []
    for task in [t for t in TASKS if t in present]:
        ok = [r for r in raw if r["task"] == task and "error" not in r and not r.get("both_sides_of")]
        tests = evidence.significance_rows(task, ok, MODELS)
        task_rows = _table_rows(task, raw, {t["model"] for t in tests if t["significant"]})
        rows += task_rows
        if task_rows:
            mine = [r for r in raw if r["task"] == task and "error" not in r]
            extra = [*_selected_keys(mine), *evidence.beyond_keys(mine)]
            cols = ["model", "seeds", *(_label(k) for k in [*TASKS[task][2], *extra]), "s/run"]
            command = " ".join(["experiment=" + TASKS[task][0] + "/<row>", *TASKS[task][1]])
            mirrored = sorted({f"{r['model']}: the DL side of the {r['both_sides_of']} runs" for r in raw
                               if r["task"] == task and r.get("both_sides_of") and "error" not in r})
            note = f"\n\nOne run, both sides (`split.dl_folds`): {'; '.join(mirrored)}." if mirrored else ""
            parts = [markdown_table(task_rows, cols) + note, evidence.significance_table(tests),
                     evidence.slice_table(task, mine, list(MODELS))]
            sections.append(f"### {task} (`{command}`)\n\n" + "\n\n".join(p for p in parts if p))
    failed = [r for r in raw if "error" in r]
    if failed:
        sections.append("Failed runs:\n\n" + "\n".join(f"* {r['task']} {r['model']} seed {r['seed']}: {r['error']}"
                                                     for r in failed))
    write_results(name, "\n\n".join(sections), raw, {"table": rows})


if __name__ == "__main__":
    sys.exit(main())
