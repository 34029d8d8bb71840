"""``jmf-report`` on a hand-made sweep folder: grouping, selection on validation, paired tests, plots."""

import json

import numpy as np
import pytest
import yaml

from jmf.report import load_jobs, summarise, write_report


def _job(root, name, overrides, metrics=None, failure=None):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "config.yaml").write_text(yaml.safe_dump({"trainer": {"optimized_metric": "valid/ndcg@10"}}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if failure is not None:
        (folder / "failure.json").write_text(json.dumps({"type": "ValueError", "message": failure}))


@pytest.fixture
def sweep(tmp_path):
    i = 0
    noise = {"mf": [0.004, -0.002, 0.001, -0.003], "svd": [-0.001, 0.003, -0.004, 0.002]}
    for model, dim, base in (("mf", 8, 0.20), ("mf", 16, 0.30), ("svd", 8, 0.25)):
        for seed in range(4):
            # mf dim=16 is best on valid (and on test, by 0.05 over svd on average)
            _job(tmp_path, str(i), [f"model={model}", f"model.dim={dim}", f"seed={seed}"],
                 {"valid/ndcg@10": base + 0.01 * seed, "test/ndcg@10": base - 0.05 + 0.01 * seed + noise[model][seed]})
            i += 1
    _job(tmp_path, "99", ["model=mf", "model.dim=0", "seed=0"], failure="model.dim: rank 0")
    return tmp_path


def test_groups_best_and_paired_test(sweep):
    jobs = load_jobs(sweep)
    assert len(jobs) == 13 and sum(j.failure is not None for j in jobs) == 1
    s = summarise(jobs, "valid/ndcg@10")
    assert s["best"]["mf"] == ("mf", "model=mf model.dim=16") and s["overall"] == s["best"]["mf"]
    (row,) = s["tests"]
    assert row["model"] == "svd" and row["seeds"] == 4
    np.testing.assert_allclose(row["mean_diff"], 0.05, atol=1e-9)
    assert row["t_p"] < 0.01


def test_lower_is_better_metrics_select_the_minimum(sweep):
    for job_dir in sweep.iterdir():
        path = job_dir / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            m["valid/rmse"] = m["valid/ndcg@10"]
            path.write_text(json.dumps(m))
    s = summarise(load_jobs(sweep), "valid/rmse")
    assert s["best"]["mf"] == ("mf", "model=mf model.dim=8")


def test_write_report_files(sweep):
    md = write_report(sweep).read_text()
    assert "| mf | `model=mf model.dim=16` | 4 | 0.3150 ± 0.0129 |" in md
    assert "Paired tests" in md and "Failed jobs" in md and "rank 0" in md
    assert (sweep / "plot_model.dim.png").stat().st_size > 1000
    assert len((sweep / "runs.csv").read_text().splitlines()) == 14
