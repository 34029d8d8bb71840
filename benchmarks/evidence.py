"""What ``benchmarks/cold_start.py``'s tables carry beyond the mean ± std: per-user significance marks against the
best model, beyond-accuracy columns and one slice table per task.

* Each run's per-user test values (its ``per_user.npz``, the main protocol's test fold: users, or held-out pairs
  under the sampled protocol) are kept, slimmed to the table's ranking metrics, as
  ``benchmarks/results/per_user/<task>/<row>_s<seed>.npz`` (:func:`keep_per_user`), so the tests can be redone
  from the committed results in a later session, without the run folders.  A run with extra overrides (a probe's
  ``--override model.dim=128``) keeps its values as ``<row>+<hash of the overrides>_s<seed>.npz``
  (:func:`per_user_name`): a probe of a row never replaces the values of the row itself.
* :func:`significance_rows`: the best model of a task (highest mean validation NDCG@10, seeds of equal weight)
  against every other, per user: paired t and Wilcoxon, Holm-corrected over the task's comparisons, and a
  bootstrap 95 % interval of the mean difference (:mod:`jmf.significance`); a model below the best by the corrected
  Wilcoxon test at 0.05 is marked ``*``.
* :func:`slice_table`: NDCG@10 per slice (``test/slice/<slice>/ndcg@10``, :mod:`jmf.evaluate.slices`) per model.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from common import RESULTS, markdown_table, mean_std

PER_USER = RESULTS / "per_user"
BEYOND = ("coverage@10", "gini@10", "novelty@10", "tail@10")
SLICES = ("twin", "no_twin", "head", "tail", "o2_q1", "o2_q4", "cold", "warm")


def per_user_name(row: str, overrides: str = "") -> str:
    """The stem of a row's kept per-user values: ``row``, or with extra overrides ``row+<8 hex of their hash>``."""
    return f"{row}+{hashlib.sha1(overrides.encode()).hexdigest()[:8]}" if overrides.strip() else row


def keep_per_user(run_dir: Path, task: str, row: str, seed: int, metrics: tuple[str, ...] = ("ndcg@10", "hr@10"),
                  overrides: str = "") -> Path | None:
    """Copy ``run_dir/per_user.npz``'s test fold (``metrics`` only) to
    ``per_user/<task>/<per_user_name(row, overrides)>_s<seed>.npz``."""
    source = Path(run_dir) / "per_user.npz"
    if not source.exists():
        return None
    with np.load(source, allow_pickle=False) as z:
        keep = {k: z[k] for k in z.files if k in ("test/users", "test/items")
                or (k.startswith("test/") and k.split("/", 1)[1] in metrics)}
    target = PER_USER / task / f"{per_user_name(row, overrides)}_s{seed}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, **keep)
    return target


def per_user_files(task: str, row: str, runs: list[dict]) -> list[tuple[str, Path]]:
    """``[(seed, path)]`` of the kept per-user values of ``runs`` (one model's result rows, each with its seed and
    ``overrides``) that exist, in seed order."""
    files = [(r["seed"], PER_USER / task / f"{per_user_name(row, r.get('overrides', ''))}_s{r['seed']}.npz")
             for r in runs]
    return [(str(seed), path) for seed, path in sorted(files) if path.exists()]


def best_model(runs: list[dict], metric: str = "valid/ndcg@10") -> str | None:
    """The model with the highest mean validation ``metric`` over its seeds."""
    means = {}
    for model in {r["model"] for r in runs}:
        values = [r[metric] for r in runs if r["model"] == model and metric in r and not math.isnan(r[metric])]
        if values:
            means[model] = float(np.mean(values))
    return max(means, key=means.get) if means else None


def significance_rows(task: str, runs: list[dict], rows_of: dict[str, str], metric: str = "test/ndcg@10"
                      ) -> list[dict]:
    """Per-user tests of the task's best model (on validation) against every other model with kept values."""
    from jmf import significance

    best = best_model(runs)
    if best is None:
        return []
    files = {m: per_user_files(task, rows_of[m], [r for r in runs if r["model"] == m])
             for m in {r["model"] for r in runs}}
    files = {m: f for m, f in files.items() if f}
    if best not in files:
        return []
    return significance.per_user_tests(files, best, metric)


def significance_table(rows: list[dict]) -> str:
    from jmf.significance import fmt_p

    if not rows:
        return ""
    table = [{"model": r["model"], "vs": r["vs"], "pairs": r["pairs"], "mean diff": f"{r['mean_diff']:.4f}",
              "95 % interval": f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]", "t p (Holm)": fmt_p(r["t_holm"]),
              "Wilcoxon p (Holm)": fmt_p(r["wilcoxon_holm"]), "": "*" if r["significant"] else ""} for r in rows]
    return ("Per-user paired tests, Holm-corrected over the task's comparisons (test NDCG@10 of the main protocol, "
            "users or held-out pairs matched by seed; * : Wilcoxon p (Holm) < 0.05; the interval: bootstrap 95 % of "
            "the mean difference, best minus model):\n\n" + markdown_table(table, list(table[0])))


def beyond_keys(runs: list[dict]) -> list[str]:
    """The beyond-accuracy columns the runs have: the full-ranking ones (``test/full/...`` for a sampled task)."""
    present = {k for r in runs for k in r}
    for prefix in ("test/full/", "test/"):
        keys = [prefix + b for b in BEYOND if prefix + b in present]
        if keys:
            return keys
    return []


def slice_table(task: str, runs: list[dict], models: list[str]) -> str:
    """NDCG@10 per slice and model (mean over seeds), with each slice's share of the evaluated users or pairs."""
    present = {k for r in runs for k in r}
    slices = [s for s in SLICES if f"test/slice/{s}/ndcg@10" in present]
    if not slices:
        return ""
    rows = []
    for model in models:
        mine = [r for r in runs if r["model"] == model]
        if not mine:
            continue
        row = {"model": model}
        for s in slices:
            values = [r[f"test/slice/{s}/ndcg@10"] for r in mine if f"test/slice/{s}/ndcg@10" in r]
            row[s] = f"{mean_std(values)[0]:.4f}" if values else "—"
        rows.append(row)
    sizes = runs[0]
    total = sum(sizes.get(f"test/slice/{s}/n", 0) for s in ("twin", "no_twin")) or None
    share = "" if total is None else (f"  Near-twin pairs: {sizes.get('test/slice/twin/n', 0) / total:.1%} of the "
                                      "test pairs (seed of the first run).")
    return (f"NDCG@10 per slice ({task}; `test/slice/<slice>/ndcg@10`, mean over seeds).{share}\n\n"
            + markdown_table(rows, ["model", *slices]))
