"""Beyond-accuracy metrics (jmf/evaluate/beyond.py) against counts by hand, and where the evaluators report them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from jmf.evaluate import beyond
from jmf.evaluate.protocols import EvalConfig, evaluate_full, evaluate_split

# 6 training users, 4 items with 5, 3, 1 and 0 training interactions; items 0, 1 in category 0, items 2, 3 in 1
TRAIN = sp.csr_matrix((np.ones(9), ([0, 1, 2, 3, 4, 0, 1, 2, 5], [0, 0, 0, 0, 0, 1, 1, 1, 2])), shape=(6, 4))
CATEGORIES = np.array([0, 0, 1, 1])
TOP = np.array([[0, 1], [0, 2], [0, 1]])          # three users' top-2 lists


def test_each_metric_is_its_count_by_hand():
    popularity, n_users, head, cats = beyond.catalogue(TRAIN, CATEGORIES)
    assert popularity.tolist() == [5, 3, 1, 0] and n_users == 6
    assert head.tolist() == [True, False, False, False]          # item 0 alone holds 5 of 9 rows (>= 20 %)
    got = beyond.list_metrics(TOP, (1, 2), popularity, n_users, head, cats)
    # exposure at k = 2: item 0 in 3 lists, item 1 in 2, item 2 in 1, item 3 in none
    assert got["coverage@2"] == 3 / 4
    assert got["gini@2"] == pytest.approx(((-3) * 0 + (-1) * 1 + 1 * 2 + 3 * 3) / (4 * 6))
    bits = [math.log2(7 / 6), math.log2(7 / 4), math.log2(7 / 6), math.log2(7 / 2), math.log2(7 / 6), math.log2(7 / 4)]
    assert got["novelty@2"] == pytest.approx(sum(bits) / 6)
    assert got["arp@2"] == pytest.approx((5 + 3 + 5 + 1 + 5 + 3) / 6)
    assert got["tail@2"] == pytest.approx(3 / 6)
    assert got["diversity@2"] == pytest.approx((0 + 1 + 0) / 3)
    # k = 1: every list is item 0
    assert got["coverage@1"] == 1 / 4 and got["gini@1"] == pytest.approx(3 * 3 / (4 * 3))
    assert got["tail@1"] == 0.0 and got["arp@1"] == 5.0 and got["diversity@1"] == 0.0


def test_short_head_and_even_exposure():
    assert beyond.short_head(np.array([1.0, 1.0, 1.0, 1.0, 1.0])).tolist() == [True, False, False, False, False]
    assert not beyond.short_head(np.zeros(3)).any()
    even = beyond.list_metrics(np.array([[0, 1], [2, 3]]), (2,), np.ones(4), 4, np.zeros(4, bool), np.arange(4))
    assert even["gini@2"] == 0.0 and even["coverage@2"] == 1.0 and even["diversity@2"] == 1.0


def test_full_ranking_reports_them_and_the_per_user_values_average_to_the_table():
    """evaluate_full hands back each user's list and values; their mean is what it reports."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(8, 30)).astype(np.float32)
    truth = sp.random(8, 30, density=0.1, format="csr", random_state=1)
    truth.data[:] = 1
    exclude = sp.random(8, 30, density=0.1, format="csr", random_state=2)
    exclude = (exclude - exclude.multiply(truth)).tocsr()
    import jax.numpy as jnp

    detail: dict = {}
    out = evaluate_full(lambda u: jnp.asarray(scores)[u], exclude, truth, ks=(5,), detail=detail)
    users = detail["users"]
    assert detail["top"].shape == (len(users), 5)
    for u, row in zip(users, detail["top"]):
        masked = np.where(exclude[u].toarray()[0] > 0, -np.inf, scores[u])
        assert row.tolist() == np.argsort(-masked, kind="stable")[:5].tolist()
    for name, values in detail["per_user"].items():
        assert out[name] == pytest.approx(values.mean(), rel=1e-6)


def test_the_full_protocol_has_list_metrics_and_the_sampled_one_does_not():
    from jmf.data.split import make_split, partition_categories
    from jmf.data.synthetic import synthetic
    from jmf.models.cf.popularity import Popularity

    data = synthetic(n_users=200, n_items=80, n_categories=4, interactions_per_user=12.0, seed=0)
    split = make_split(data, partition_categories(data, k=2), "cold_start", seed=0, beta=0.3)
    model = Popularity()
    model.fit(split)
    full = evaluate_split(model, split, "test", EvalConfig(ks=(10,), ratings=False))
    assert {"coverage@10", "gini@10", "novelty@10", "arp@10", "tail@10", "diversity@10"} <= set(full)

    class Random:
        def score(self, users):
            import jax

            return jax.random.normal(jax.random.key(0), (len(users), split.train.shape[1])) + users[:, None] * 0.0

    rand = evaluate_split(Random(), split, "test", EvalConfig(ks=(10,), ratings=False))
    # popularity gives every user (nearly) the same list: less coverage, more concentrated exposure, more popular
    # and less novel items, fewer from the tail than lists drawn at random
    assert full["coverage@10"] < rand["coverage@10"] and full["gini@10"] > rand["gini@10"]
    assert full["arp@10"] > rand["arp@10"] and full["novelty@10"] < rand["novelty@10"]
    assert full["tail@10"] < rand["tail@10"]
    sampled = evaluate_split(model, split, "test", EvalConfig(protocol="sampled", negatives=20, ks=(10,), ratings=False))
    assert not any(k.startswith(("coverage", "gini")) for k in sampled)
