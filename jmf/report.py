"""``jmf-report <multirun dir>``: a sweep's tables and plots.

Reads every job folder of a Hydra multirun (``.hydra/overrides.yaml`` plus ``metrics.json``, or
``failure.json`` for a failed job) and writes, into the sweep folder (or ``--out``):

* ``report.md``: mean ± std over seeds per config; the best config per model, chosen on the
  **validation** metric only, with its test metrics (reported once, for the chosen config);
  a paired significance test across seeds of each model's best config against the overall
  best (paired t-test and Wilcoxon signed-rank on the test metric, seeds matched); the same comparisons per
  user from the runs' ``per_user.npz`` (:mod:`jmf.significance`: Holm-corrected, bootstrap intervals, models
  significantly below the best marked ``*`` in the best-config table); failed jobs.
* ``report.csv`` (one row per config) and ``runs.csv`` (one row per job).
* ``plot_<param>.png``: the selection metric against each swept parameter (runs and per-model means).

A config is a job's overrides without ``seed``; a model is the ``model=`` override (or the
``_target_`` class of ``config.yaml``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from hydra.experimental.callback import Callback

from jmf.errors import USER_ERROR, DataFileError, JmfError, paragraph, show_traceback
from jmf import significance
from jmf.evaluate import registry


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    model: str
    seed: str
    metrics: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    user_error: bool = False       # the failure is a user error (failure.json), not a crash or a killed job

    @property
    def config(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()) if k != "seed") or "(defaults)"


def load_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job folder under ``sweep_dir`` (one with ``.hydra/overrides.yaml``)."""
    jobs = []
    for ov_file in sorted(Path(sweep_dir).rglob(".hydra/overrides.yaml")):
        folder = ov_file.parent.parent
        overrides = {}
        for item in yaml.safe_load(ov_file.read_text()) or []:
            key, _, value = item.partition("=")
            key = key.lstrip("+~")
            if not key.startswith("hydra"):
                overrides[key] = value
        model = overrides.get("model") or _model_from_config(folder / "config.yaml")
        job = Job(folder, overrides, model, overrides.get("seed", "0"))
        if (folder / "metrics.json").exists():
            job.metrics = {k: float(v) for k, v in json.loads((folder / "metrics.json").read_text()).items()}
        elif (folder / "failure.json").exists():
            info = json.loads((folder / "failure.json").read_text())
            job.failure = f"{info['type']}: {info['message']}"[:300]
            job.user_error = bool(info.get("user_error"))
        else:
            job.failure = "no metrics.json (still running, or killed)"
        jobs.append(job)
    return jobs


def _model_from_config(path: Path) -> str:
    if not path.exists():
        return "?"
    cfg = yaml.safe_load(path.read_text()) or {}
    return str(cfg.get("model", {}).get("_target_", "?")).rsplit(".", 1)[-1]


def lower_is_better(metric: str) -> bool:
    """The direction of a selection on ``metric``, from the metric registry."""
    return registry.lower_is_better(metric)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    mean, std = _mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def summarise(jobs: list[Job], metric: str) -> dict:
    """Per-config groups, the best config per model (validation ``metric``) and paired tests."""
    from scipy import stats

    ok = [j for j in jobs if j.failure is None and metric in j.metrics]
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in ok:
        groups.setdefault((job.model, job.config), []).append(job)
    sign = -1.0 if lower_is_better(metric) else 1.0
    best: dict[str, tuple[str, str]] = {}
    for key, members in groups.items():
        score = sign * _mean_std([j.metrics[metric] for j in members])[0]
        model = key[0]
        if model not in best or score > sign * _mean_std([j.metrics[metric] for j in groups[best[model]]])[0]:
            best[model] = key
    test_metric = "test/" + metric.split("/", 1)[1] if metric.startswith("valid/") else metric
    overall = max(best.values(), key=lambda k: sign * _mean_std([j.metrics[metric] for j in groups[k]])[0]) \
        if best else None
    tests = []
    for model, key in sorted(best.items()):
        if overall is None or key == overall:
            continue
        a = {j.seed: j.metrics.get(test_metric) for j in groups[overall]}
        b = {j.seed: j.metrics.get(test_metric) for j in groups[key]}
        seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None)
        row = {"model": model, "vs": overall[0], "metric": test_metric, "seeds": len(seeds),
               "mean_diff": float("nan"), "t_p": float("nan"), "wilcoxon_p": float("nan")}
        if seeds:
            x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
            row["mean_diff"] = float((x - y).mean())
            if len(seeds) >= 2 and np.any(x != y):
                row["t_p"] = float(stats.ttest_rel(x, y).pvalue)
                row["wilcoxon_p"] = float(stats.wilcoxon(x, y).pvalue)
        tests.append(row)
    return {"groups": groups, "best": best, "overall": overall, "tests": tests, "test_metric": test_metric}


def _shown(names: list[str], metric: str) -> list[str]:
    """The best-config table's test columns: the selection metric's, six more accuracy metrics, three list metrics."""
    test = [n for n in names if n.startswith("test/") and "/slice/" not in n]
    lists = [n for n in test if isinstance(registry.METRICS.get(registry.base_name(n)), registry.ListMetric)]
    first = "test/" + metric.split("/", 1)[1] if metric.startswith("valid/") else metric
    rest = [n for n in test if n not in lists and n != first]
    return [n for n in [first] if n in test] + rest[:6] + lists[:3]


def _per_user_rows(s: dict) -> list[dict]:
    """:func:`jmf.significance.per_user_tests` of the best config per model on the test metric."""
    if s["overall"] is None:
        return []
    best = {model: [(j.seed, j.path) for j in s["groups"][key]] for model, key in s["best"].items()}
    return significance.per_user_tests(best, s["overall"][0], s["test_metric"])


def _natural(key: tuple[str, str]) -> tuple:
    """Sort ``model.dim=8`` before ``model.dim=16``."""
    import re

    return tuple((0, float(t), "") if re.fullmatch(r"-?\d+(\.\d*)?(e-?\d+)?", t) else (1, 0.0, t)
                 for t in re.split(r"([=\s,])", " ".join(key)))


def swept_params(jobs: list[Job]) -> list[str]:
    """Overrides with more than one value, except ``seed`` and ``model`` (plots have a line per model)."""
    keys = sorted({k for j in jobs for k in j.overrides if k not in ("seed", "model")})
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def write_report(sweep_dir: str | Path, metric: str | None = None, out: str | Path | None = None) -> Path:
    """Write ``report.md``, ``report.csv``, ``runs.csv`` and plots; return the markdown path."""
    sweep_dir = Path(sweep_dir)
    out = Path(out or sweep_dir)
    if not sweep_dir.is_dir():
        what = "not a folder" if sweep_dir.exists() else "no such folder"
        raise DataFileError(f"{sweep_dir}: {what} (jmf-report reads a multirun folder, "
                            "multirun/<date>/<time> or the sweep's hydra.sweep.dir)")
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise DataFileError(f"{sweep_dir}: no Hydra job folders (.hydra/overrides.yaml) found")
    out.mkdir(parents=True, exist_ok=True)
    registry.load_plugins(_plugins(jobs), "eval.plugins (of the sweep's jobs)")   # their own metrics' directions
    metric = metric or _optimized_metric(jobs) or "valid/ndcg@10"
    s = summarise(jobs, metric)
    names = sorted({k for j in jobs for k in j.metrics if k.startswith(("valid/", "test/"))})
    md = [f"# Sweep report: {sweep_dir}", "",
          f"{len(jobs)} jobs, {sum(j.failure is not None for j in jobs)} failed. Selection metric: `{metric}` "
          f"({'lower' if lower_is_better(metric) else 'higher'} is better), validation only; test metrics "
          "are read for the chosen configs.", "", "## Configs (mean ± std over seeds)", "",
          f"| model | config | seeds | {metric} |", "| --- | --- | ---: | ---: |"]
    for (model, config), members in sorted(s["groups"].items(), key=lambda kv: _natural(kv[0])):
        md.append(f"| {model} | `{config}` | {len(members)} | {_fmt([j.metrics[metric] for j in members])} |")
    per_user = _per_user_rows(s)
    marked = {r["model"] for r in per_user if r["significant"]}
    shown = _shown(names, metric)
    md += ["", "## Best config per model (chosen on validation)", "",
           "| model | config | seeds | " + " | ".join([metric, *shown]) + " |",
           "| --- | --- | ---: |" + " ---: |" * (1 + len(shown))]
    for model, key in sorted(s["best"].items()):
        members = s["groups"][key]
        cells = [_fmt([j.metrics[n] for j in members if n in j.metrics]) for n in [metric, *shown]]
        md.append(f"| {model}{' *' if model in marked else ''} | `{key[1]}` | {len(members)} | "
                  + " | ".join(cells) + " |")
    if marked:
        md += ["", f"\\* below {s['overall'][0]} per user (Wilcoxon, Holm-corrected p < 0.05; table below)."]
    if s["tests"]:
        md += ["", f"## Paired tests across seeds ({s['test_metric']}, overall best vs each model's best)", "",
               "| model | vs | seeds | mean diff | paired t p | Wilcoxon p |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        for r in s["tests"]:
            md.append(f"| {r['model']} | {r['vs']} | {r['seeds']} | {r['mean_diff']:.4f} | {significance.fmt_p(r['t_p'])} | "
                      f"{significance.fmt_p(r['wilcoxon_p'])} |")
    md += significance.markdown(per_user)
    failed = [j for j in jobs if j.failure is not None]
    if failed:
        md += ["", "## Failed jobs", ""] + [f"* `{j.path.name}` (`{j.config}`, seed {j.seed}): {j.failure}"
                                            for j in failed]
    params = swept_params(jobs)
    plots = [_plot(jobs, p, metric, out) for p in params]
    if any(plots):
        md += ["", "## Plots", ""] + [f"![{p}]({f.name})" for p, f in zip(params, plots) if f]
    from jmf.transfer_map import mean_maps

    md += mean_maps([(model, config, [j.path for j in members]) for (model, config), members
                     in sorted(s["groups"].items(), key=lambda kv: _natural(kv[0]))], out)
    (out / "report.md").write_text("\n".join(md) + "\n")
    _write_csv(out / "report.csv", s, names)
    _write_runs(out / "runs.csv", jobs, names)
    return out / "report.md"


def _plugins(jobs: list[Job]) -> list[str]:
    """The metric plug-in modules the jobs' configs name (``eval.plugins``)."""
    names: list[str] = []
    for job in jobs:
        cfg_path = job.path / "config.yaml"
        if cfg_path.exists():
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
            names += [n for n in (cfg.get("eval") or {}).get("plugins") or [] if n not in names]
    return names


def _optimized_metric(jobs: list[Job]) -> str | None:
    for job in jobs:
        cfg_path = job.path / "config.yaml"
        if cfg_path.exists():
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
            value = (cfg.get("trainer") or {}).get("optimized_metric")
            if value:
                return value
    return None


def _write_csv(path: Path, s: dict, names: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "config", "seeds", "best_for_model"] + [f"{n}_{x}" for n in names for x in ("mean", "std")])
        for key, members in sorted(s["groups"].items(), key=lambda kv: _natural(kv[0])):
            row = [key[0], key[1], len(members), s["best"].get(key[0]) == key]
            for n in names:
                vals = [j.metrics[n] for j in members if n in j.metrics]
                row += list(_mean_std(vals)) if vals else ["", ""]
            w.writerow(row)


def _write_runs(path: Path, jobs: list[Job], names: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "model", "config", "seed", "failure"] + names)
        for j in jobs:
            w.writerow([j.path.name, j.model, j.config, j.seed, j.failure or ""] + [j.metrics.get(n, "") for n in names])


def _plot(jobs: list[Job], param: str, metric: str, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(j.model, j.overrides[param], j.metrics[metric]) for j in jobs
              if j.failure is None and param in j.overrides and metric in j.metrics]
    if not points:
        return None
    numeric = all(_is_number(v) for _, v, _ in points)
    categories = sorted({v for _, v, _ in points}, key=lambda v: float(v) if numeric else v)
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({m for m, _, _ in points}):
        xs = [float(v) if numeric else categories.index(v) for m, v, _ in points if m == model]
        ys = [y for m, _, y in points if m == model]
        ax.scatter(xs, ys, alpha=0.5, label=model)
        order = sorted(set(xs))
        ax.plot(order, [np.mean([y for x, y in zip(xs, ys) if x == o]) for o in order])
    if numeric and all(float(v) > 0 for v in categories) and float(categories[-1]) / float(categories[0]) > 50:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=30)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"plot_{param.replace('/', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


_SWEEP: dict = {}    # the multirun this process ran last (SweepSummary), for jmf-train's exit code


def sweep_verdict() -> tuple[int, str] | None:
    """``jmf-train``'s exit code and last line after a multirun whose report lists failed jobs; ``None``
    when none failed (or no multirun ran).

    The code is 2 (:data:`~jmf.errors.USER_ERROR`, as a single run's) when every failed job failed on a user
    error -- a config value, a data file -- and 1 otherwise (a crash, a killed job).  An Optuna search goes on
    past failed trials (``max_failure_rate`` in ``conf/hparams_search``) and writes its results, but exits with
    the same codes, so a script or a scheduler can tell that trials failed.  The count is read once (a later
    run in the same process starts clean).
    """
    outcome = dict(_SWEEP)
    _SWEEP.clear()
    if not outcome.get("failed"):
        return None
    failed, total, search, report = outcome["failed"], outcome["total"], outcome["search"], outcome["report"]
    code = USER_ERROR if outcome["user_errors"] else 1
    where = (f'listed under "Failed jobs" in {report}' if report is not None
             else f"no report was written; see above, or run jmf-report {outcome['sweep']}")
    return code, f"{failed} of {total} {'trials' if search else 'jobs'} failed ({where}); exit code {code}"


def _keep_outcome(sweep: Path, report: Path | None, search: bool) -> None:
    """Count the multirun's failed jobs (those its report lists) for :func:`sweep_verdict`."""
    _SWEEP.clear()
    try:
        jobs = load_jobs(sweep)
    except Exception:   # noqa: BLE001 -- unreadable job folders: the report said so already
        return
    failed = [j for j in jobs if j.failure is not None]
    _SWEEP.update(sweep=sweep, report=report, search=search, total=len(jobs), failed=len(failed),
                  user_errors=all(j.user_error for j in failed))


class SweepSummary(Callback):
    """A Hydra callback (``hydra.callbacks.report`` in ``conf/train.yaml``): when a multirun ends, write its
    ``jmf-report`` and print the summary table, or the command that makes it when the report fails; then
    keep the count of failed jobs, which sets ``jmf-train``'s exit code (:func:`sweep_verdict`)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            path = write_report(sweep)
        except Exception as err:   # noqa: BLE001 -- the sweep itself is done; say how to report it
            print(f"jmf-report: no summary ({type(err).__name__}: {err}); run `jmf-report {sweep}`", file=sys.stderr)
            path = None
        else:
            print(path.read_text())
            print(f"sweep report: {path} (tables, report.csv, runs.csv, plots); again: jmf-report {sweep}")
        _keep_outcome(sweep, path, "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="jmf-report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder")
    parser.add_argument("--metric", default=None, help="selection metric (default: trainer.optimized_metric)")
    parser.add_argument("--out", default=None, help="output folder (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir, args.metric, args.out)
    except JmfError as err:     # a folder or metric that cannot be reported: one paragraph, exit code 2
        if show_traceback():
            raise
        print(paragraph(err, "jmf-report"), file=sys.stderr)
        sys.exit(USER_ERROR)
    print(path.read_text())


if __name__ == "__main__":
    main()
