"""The data audit (jmf/audit.py): it finds planted leaks, counts near twins by hand, and a run writes it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jmf import audit
from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from split_helpers import twin_split


@pytest.fixture(scope="module")
def cold():
    data = synthetic(n_users=300, n_items=80, n_categories=4, interactions_per_user=12.0, seed=0)
    return make_split(data, partition_categories(data, k=2), "cold_start", seed=0, beta=0.3)


def test_a_clean_split_has_no_leak(cold):
    report = audit.audit(cold)
    assert report["leaks"] == [] and report["cold_target_rows_in_train"] == 0
    assert report["users_both_sides"] <= report["users"] and report["items_both_sides"] == 0
    assert report["cold_users"] == len(np.union1d(cold.cold_test_users, cold.cold_valid_users))
    audit.check(report, allow=False)
    assert "no leak" in audit.summary(report)


def test_the_audit_catches_a_planted_leak(cold):
    """A cold test user's held-out row put back into training, and a test pair repeated in training."""
    user = int(cold.cold_test_users[0])
    item = int(cold.test[user].indices[0])
    train = cold.train.tolil()
    train[user, item] = 1.0
    leaky = dataclasses.replace(cold, train=train.tocsr())
    report = audit.audit(leaky)
    assert report["cold_target_rows_in_train"] == 1 and report["test_pairs_in_train"] == 1
    assert len(report["leaks"]) == 2 and "LEAKS" in audit.summary(report)
    with pytest.raises(audit.DataLeakError, match=r"1 CF-side training rows of cold users.*trainer\.allow_leaks=true"):
        audit.check(report, allow=False)
    audit.check(report, allow=True)


def test_test_rows_older_than_training_are_a_leak_only_in_a_time_ordered_split():
    data = synthetic(n_users=100, n_items=40, n_categories=2, interactions_per_user=10.0, seed=1)
    split = make_split(data, partition_categories(data, k=1), "ratio", seed=0, order="time")
    assert audit.audit(split, time_ordered=True)["test_before_train"] == 0.0
    shuffled = dataclasses.replace(data, timestamp=np.random.default_rng(0).permutation(data.timestamp))
    mixed = dataclasses.replace(split, data=shuffled)
    report = audit.audit(mixed, time_ordered=True)
    assert report["test_before_train"] > 0.2 and any("older than" in leak for leak in report["leaks"])
    assert audit.audit(mixed, time_ordered=False)["leaks"] == []


def test_near_twins_by_hand():
    """(0, X): user 0 holds a, c(a, X) = 2 >= (3 - 1) / 2 and >= 2 / 2: a twin.  (4, Y): c(b, Y) = 1 >= (2 - 1) / 2
    and >= 2 / 2: a twin.  Z shares no holder with a or b: none."""
    split = twin_split()
    twins = audit.near_twins(split, split.test).toarray()
    assert np.argwhere(twins).tolist() == [[0, 0], [4, 1]]
    assert audit.audit(split)["near_twin_share"] == 2 / 4


def test_a_run_writes_its_audit(tmp_path):
    from hydra import compose, initialize_config_dir

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.run import run

    register_configs([])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=pop", "data.n_users=200", "data.n_items=60", "eval.ks=[5]",
                                          "trainer.progress=false", "trainer.devices=1"])
    run(cfg, tmp_path)
    report = json.loads((tmp_path / "audit.json").read_text())
    assert report["leaks"] == [] and report["users"] == 200 and report["test_pairs_in_train"] == 0
