"""Metrics per slice (jmf/evaluate/slices.py): hand-counted on a small split, and what a run reports."""

from __future__ import annotations

import numpy as np
import pytest

from jmf.evaluate.slices import slice_metrics


def test_slices_of_sampled_pairs_by_hand():
    """The near-twin split of tests/test_audit.py: pairs (0, X), (0, Z), (4, Y), (4, Z); X and Y have twins in their
    users' DL history; X alone is the short head (2 of 5 training rows >= 20 %)."""
    from split_helpers import twin_split

    split = twin_split()
    detail = {"users": np.array([0, 0, 4, 4]), "items": np.array([0, 2, 1, 2]),
              "per_user": {"ndcg@10": np.array([1.0, 0.5, 0.25, 0.0])}}
    got = slice_metrics(split, split.test, detail)
    assert got["slice/twin/ndcg@10"] == pytest.approx(0.625) and got["slice/twin/n"] == 2
    assert got["slice/no_twin/ndcg@10"] == pytest.approx(0.25)
    assert got["slice/head/ndcg@10"] == 1.0 and got["slice/head/n"] == 1
    assert got["slice/tail/ndcg@10"] == pytest.approx(0.25) and got["slice/tail/n"] == 3
    assert not any(k.startswith(("slice/cold", "slice/warm")) for k in got)      # no cold users here
    assert sum(got[f"slice/o2_q{q}/n"] for q in range(1, 5)) == 4


def test_slices_of_full_ranking_users_by_hand():
    """Full ranking: user 0 holds X (head, twin) and Z (tail); user 4 holds Y (twin) and Z: neither is all-head, user 4
    is all-tail; both have a twin."""
    from split_helpers import twin_split

    split = twin_split()
    got = slice_metrics(split, split.test, {"users": np.array([0, 4]), "per_user": {"hr@10": np.array([1.0, 0.0])}})
    assert got["slice/head/n"] == 0 and "slice/head/hr@10" not in got
    assert got["slice/tail/n"] == 1 and got["slice/tail/hr@10"] == 0.0
    assert got["slice/twin/n"] == 2 and got["slice/twin/hr@10"] == 0.5 and got["slice/no_twin/n"] == 0


def test_a_cold_start_run_reports_slices(tmp_path):
    from hydra import compose, initialize_config_dir

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.run import run

    register_configs([])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=pop", "data.n_users=300", "data.n_items=80", "eval.ks=[5]",
                                          "partition.k=2", "split=cold_start", "trainer.progress=false",
                                          "trainer.devices=1"])
    metrics = run(cfg, tmp_path)
    quartiles = [metrics[f"test/slice/o2_q{q}/n"] for q in range(1, 5)]
    assert sum(quartiles) == len(np.load(tmp_path / "per_user.npz")["test/users"])
    for name in ("head", "tail", "twin", "no_twin"):
        assert f"test/slice/{name}/n" in metrics
    with_ndcg = [q for q in range(1, 5) if f"test/slice/o2_q{q}/ndcg@5" in metrics]
    weighted = sum(metrics[f"test/slice/o2_q{q}/ndcg@5"] * metrics[f"test/slice/o2_q{q}/n"] for q in with_ndcg)
    assert weighted / sum(quartiles) == pytest.approx(metrics["test/ndcg@5"], rel=1e-5)
