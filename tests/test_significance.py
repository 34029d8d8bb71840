"""Per-user significance (jmf/significance.py) and its table in ``jmf-report``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jmf import significance
from jmf.report import write_report


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 of m = 3: 3 · 0.01, 2 · 0.03, max(1 · 0.04, 0.06); NaN is not a comparison
    np.testing.assert_allclose(significance.holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(significance.holm([0.5, 0.9]), [1.0, 1.0])


def test_bootstrap_interval_and_paired_tests():
    lo, hi = significance.bootstrap_interval(np.full(50, 0.2))
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    other = rng.random(400)
    better = other + 0.05 + rng.normal(0, 0.05, 400)
    row = significance.compare(better, other)
    assert row["pairs"] == 400 and row["ci_low"] < row["mean_diff"] < row["ci_high"] and row["ci_low"] > 0
    assert row["t_p"] < 1e-6 and row["wilcoxon_p"] < 1e-6
    same = significance.compare(other, other)
    assert np.isnan(same["t_p"]) and same["mean_diff"] == 0.0


def _job(root, name, model, seed, valid, per_user):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- model={model}\n- seed={seed}\n")
    (job / "metrics.json").write_text(json.dumps({"valid/ndcg@10": valid, "test/ndcg@10": float(per_user.mean())}))
    np.savez(job / "per_user.npz", **{"test/users": np.array([str(u) for u in range(len(per_user))]),
                                      "test/ndcg@10": per_user.astype(np.float32)})


def test_jmf_report_prints_the_per_user_table_with_holm_and_marks(tmp_path):
    rng = np.random.default_rng(1)
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        base = rng.random(300)
        _job(sweep, f"a{seed}", "best", seed, 0.5, base + 0.1)
        _job(sweep, f"b{seed}", "worse", seed, 0.4, base)
        _job(sweep, f"c{seed}", "level", seed, 0.45, base + 0.1 + rng.normal(0, 1e-3, 300))
    text = write_report(sweep).read_text()
    assert "## Per-user paired tests, Holm-corrected (test/ndcg@10" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["worse"].split(" | ")[2] == "600" and rows["worse"].rstrip().endswith("| * |")
    assert rows["level"].rstrip().endswith("|  |")                 # no difference: no mark
    assert "| worse * |" in text and "| level * |" not in text      # the mark in the best-config table
