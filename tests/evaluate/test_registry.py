"""One metric registry and one validator: every name, protocol, monitor, report column and the docs read them."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.errors import ConfigError
from jmf.evaluate import metrics as M
from jmf.evaluate import registry
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.evaluate.registry import RankingMetric, TopK
from jmf.evaluate.validator import Validator
from jmf.models.cf.popularity import Popularity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def extra_metric():
    """A metric registered from outside (as a plug-in module would), removed afterwards."""
    def filled(top: TopK):
        return top.hits.sum(1) / jnp.maximum(jnp.minimum(top.n_relevant, top.k), 1.0)
    metric = registry.register(RankingMetric("nprec", filled))
    yield metric
    registry.METRICS.pop("nprec")


@pytest.fixture(scope="module")
def split():
    data = synthetic(n_users=200, n_items=80, n_categories=4, interactions_per_user=12.0, seed=0)
    return make_split(data, partition_categories(data, k=2), "cold_start", seed=0, beta=0.3)


def test_the_evaluators_compute_every_registered_metric(extra_metric):
    scores = jnp.asarray(np.random.default_rng(0).normal(size=(4, 30)), jnp.float32)
    relevant = jnp.zeros((4, 30), bool).at[:, 3].set(True).at[1, 7].set(True)
    full = M.ranking_metrics(scores, relevant, (5, 10))
    assert set(full) == {f"{m.name}@{k}" for m in registry.ranking() for k in (5, 10)}
    sampled = M.sampled_ranking_metrics(scores[:, 0], scores[:, 1:], (5, 10))
    assert set(sampled) == set(full) | {m.name for m in registry.ranking() if m.whole_list}
    assert set(M.rating_errors(np.ones(3), np.zeros(3))) == {m.name for m in registry.rating()}
    # the new metric, worked by hand: user 1 has 2 relevant items; min(2, k) is the best it can hit
    top10 = np.argsort(-np.asarray(scores[1]))[:10]
    assert float(full["nprec@10"][1]) == pytest.approx(len({3, 7} & set(top10.tolist())) / 2)


def test_each_builtin_sampled_form_equals_its_metric_on_a_one_hot_row():
    """The fast ``sampled`` forms are the same metric as ``fn`` on the one-hot top-k row of the rank."""
    rank = jnp.arange(1, 13, dtype=jnp.int32)
    for metric in registry.ranking():
        for k in (1, 5, 10):
            fast = metric.sampled(rank, k)
            generic = M._from_one_hot(RankingMetric(metric.name, metric.fn))(rank, k)
            np.testing.assert_allclose(np.asarray(fast), np.asarray(generic), rtol=1e-6, err_msg=f"{metric.name}@{k}")


def test_monitor_names_come_from_the_registry(extra_metric):
    registry.check_monitor("ndcg@10")
    registry.check_monitor("nprec@5")             # a registered metric is a monitor at once
    registry.check_monitor("mrr", ratings=False)  # whole-list
    registry.check_monitor("auto", auto=True)
    for bad, kwargs in [("ndcg", {}), ("ndcg@0", {}), ("foo@10", {}), ("rmse", {"ratings": False}),
                        ("auto", {}), ("rmse@10", {})]:
        with pytest.raises(ConfigError, match=r"model\.rank_monitor: .*nprec"):
            registry.check_monitor(bad, "model.rank_monitor", **kwargs)
    assert registry.lower_is_better("valid/rmse") and registry.lower_is_better("train/loss")
    assert not registry.lower_is_better("test/full/ndcg@10") and not registry.lower_is_better("valid/nprec@10")
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register(RankingMetric("ndcg", lambda top: top.hits.sum(1)))
    with pytest.raises(ConfigError, match="plain name"):
        registry.register(RankingMetric("x@10", lambda top: top.hits.sum(1)))


def test_the_docs_metric_list_is_the_registry():
    text = (ROOT / "docs" / "pages" / "guide" / "splits.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (ranking|rating|list) \| .* \| (higher|lower) \|$", text, re.M)
    listed = {name: (kind, better) for name, kind, better in rows}
    kinds = {RankingMetric: "ranking", registry.RatingMetric: "rating", registry.ListMetric: "list"}
    expected = {m.name: (kinds[type(m)],
                         "higher" if m.higher_is_better else "lower") for m in registry.METRICS.values()}
    assert listed == expected


def test_the_validator_reads_the_eval_group_and_the_registry(split):
    model = Popularity()
    model.fit(split)
    full = Validator(split)
    assert full.has_data and full.mode("rmse") == "min" and full.mode("ndcg@10") == "max"
    expected = evaluate_split(model, split, "valid", EvalConfig(ks=(10,), ratings=False))
    assert full(model, "ndcg@10") == expected["ndcg@10"]
    # a whole-list monitor under full ranking is the metric at the number of CF-side items
    n = split.train.shape[1]
    whole = evaluate_split(model, split, "valid", EvalConfig(ks=(n,), ratings=False))[f"mrr@{n}"]
    assert full(model, "mrr") == whole
    # eval.valid_protocol=test validates with the test's protocol (sampled negatives)
    sampled_cfg = EvalConfig(protocol="sampled", negatives=20, valid_protocol="test")
    sampled = Validator(split, sampled_cfg)
    assert sampled(model, "mrr") == evaluate_split(model, split, "valid", sampled_cfg.for_validation(
        (10,), 512, ratings=False))["mrr"]
    both = sampled.metrics(model, ["hr@5", "ndcg@10"])
    assert set(both) == {"hr@5", "ndcg@10"} and both["hr@5"] <= 1
    with pytest.raises(ConfigError, match="model.rank_monitor: 'unknown@10' not among validation metrics"):
        full.metrics(model, ["ndcg@10", "unknown@10"], ["model.monitor", "model.rank_monitor"])
