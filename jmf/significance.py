"""Per-user significance for ``jmf-report``: is one model's best configuration better than another's user by user?

Seeds give three or five points; every run's ``per_user.npz`` (:func:`jmf.outputs.write_per_user`) gives a value
per evaluated user (per held-out pair under the sampled protocol).  Two configurations are compared on the pairs
both evaluated, matched by seed and user (and item): a paired t-test and a Wilcoxon signed-rank test of the
differences, each family of p-values Holm-corrected over the comparisons of one table (:func:`holm`), and a
bootstrap 95 % interval of the mean difference (:func:`bootstrap_interval`, users resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ALPHA = 0.05
BOOTSTRAP = 2000


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: the ``i``-th smallest of ``m`` p-values times ``m - i + 1``, made monotone and
    capped at 1; NaN stays NaN and does not count among the ``m``."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def bootstrap_interval(diffs: np.ndarray, seed: int = 0, n: int = BOOTSTRAP) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the mean of ``diffs`` resampled with replacement ``n`` times."""
    diffs = np.asarray(diffs, float)
    if len(diffs) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    for b in range(0, n, 100):                    # 100 resamples at a time: [100, len] at most in memory
        idx = rng.integers(0, len(diffs), (min(100, n - b), len(diffs)))
        means[b:b + len(idx)] = diffs[idx].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_values(runs_a: Sequence[tuple[str, Path]], runs_b: Sequence[tuple[str, Path]], metric: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` (``test/ndcg@10``) of the pairs both sets of runs evaluated: ``(a, b)``, matched by seed and by the
    user (and item) keys of their ``per_user.npz``; ``runs_*``: ``(seed, run directory)``."""
    from jmf.outputs import read_per_user

    fold, name = metric.split("/", 1)

    def table(runs):
        out: dict[str, float] = {}
        for seed, path in runs:
            file = Path(path) if str(path).endswith(".npz") else Path(path) / "per_user.npz"
            if not file.exists():
                continue
            keys, values = read_per_user(file, fold)
            if name in values:
                out.update({f"{seed}|{k}": float(v) for k, v in zip(keys, values[name])})
        return out
    a, b = table(runs_a), table(runs_b)
    common = sorted(set(a) & set(b))
    return np.array([a[k] for k in common]), np.array([b[k] for k in common])


def compare(best: np.ndarray, other: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Paired tests of ``best - other`` (one value per user): the mean difference, its bootstrap interval, the
    t-test's and Wilcoxon's two-sided p-values (NaN with fewer than two pairs or no difference at all)."""
    from scipy import stats

    d = best - other
    row = {"pairs": len(d), "mean_diff": float(d.mean()) if len(d) else float("nan"),
           "t_p": float("nan"), "wilcoxon_p": float("nan")}
    row["ci_low"], row["ci_high"] = bootstrap_interval(d, seed)
    if len(d) >= 2 and np.any(d != 0):
        row["t_p"] = float(stats.ttest_rel(best, other).pvalue)
        row["wilcoxon_p"] = float(stats.wilcoxon(best, other).pvalue)
    return row


def per_user_tests(best: dict[str, list[tuple[str, Path]]], overall: str, metric: str) -> list[dict]:
    """The overall best model's chosen configuration against every other model's, per user; ``best``: model ->
    its chosen configuration's ``(seed, run directory)`` list.  Holm-adjusted p-values as ``t_holm`` and
    ``wilcoxon_holm``; ``significant``: the Holm-adjusted Wilcoxon p below 0.05."""
    rows = []
    for model in sorted(m for m in best if m != overall):
        a, b = paired_values(best[overall], best[model], metric)
        if len(a):
            rows.append({"model": model, "vs": overall, "metric": metric, **compare(a, b)})
    for key in ("t", "wilcoxon"):
        for row, adj in zip(rows, holm([r[f"{key}_p"] for r in rows])):
            row[f"{key}_holm"] = float(adj)
    for row in rows:
        row["significant"] = bool(row["wilcoxon_holm"] < ALPHA)
    return rows


def markdown(rows: list[dict]) -> list[str]:
    """The per-user significance table of ``jmf-report`` (its header names the correction)."""
    if not rows:
        return []
    md = ["", f"## Per-user paired tests, Holm-corrected ({rows[0]['metric']}, the best model's chosen config vs "
          "each model's)", "",
          "Pairs: the users (sampled protocol: the held-out pairs) both configs evaluated, matched by seed.  p-values "
          f"are Holm-adjusted over the comparisons of the table; * : Wilcoxon p (Holm) < {ALPHA}.  The interval is a "
          f"bootstrap 95 % interval of the mean difference ({BOOTSTRAP} resamples of the pairs).", "",
          "| model | vs | pairs | mean diff | 95 % interval | paired t p (Holm) | Wilcoxon p (Holm) | |",
          "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in rows:
        md.append(f"| {r['model']} | {r['vs']} | {r['pairs']} | {r['mean_diff']:.4f} | "
                  f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}] | {fmt_p(r['t_holm'])} | {fmt_p(r['wilcoxon_holm'])} | "
                  f"{'*' if r['significant'] else ''} |")
    return md


def fmt_p(value: float) -> str:
    """A p-value for a table: ``—`` when there is none."""
    return "—" if not np.isfinite(value) else (f"{value:.2e}" if value < 1e-3 else f"{value:.3f}")
