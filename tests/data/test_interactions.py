"""Interaction container, preprocessing policies and the synthetic generator."""

import dataclasses
import logging

import numpy as np
import pytest

from jmf.data.interactions import from_columns
from jmf.data.preprocess import PreprocessConfig, deduplicate, kcore, preprocess
from jmf.data.synthetic import synthetic


def _toy():
    return from_columns(["a", "a", "b", "a", "c"], ["x", "y", "x", "x", "z"], [1, 2, 3, 5, 4],
                        timestamp=[1, 2, 3, 4, 5], category=["k1", "k1", "k1", "k1", "k2"])


def test_from_columns_dense_ids_and_categories():
    d = _toy()
    assert d.n_users == 3 and d.n_items == 3 and d.category_names == ("k1", "k2")
    assert list(d.item_category) == [0, 0, 1]


def test_duplicate_policies(caplog):
    d = _toy()
    with caplog.at_level(logging.INFO):
        mean = deduplicate(d, "mean")
    assert "merged 1 repeated rows" in caplog.text
    ax = {(int(u), int(i)): float(v) for u, i, v in zip(mean.user, mean.item, mean.value)}
    assert ax[(0, 0)] == 3.0  # mean of 1 and 5
    assert {(int(u), int(i)): float(v) for u, i, v in zip(*(lambda e: (e.user, e.item, e.value))(deduplicate(d, "first")))}[(0, 0)] == 1.0
    assert {(int(u), int(i)): float(v) for u, i, v in zip(*(lambda e: (e.user, e.item, e.value))(deduplicate(d, "last")))}[(0, 0)] == 5.0
    with pytest.raises(ValueError, match="duplicates=error"):
        deduplicate(d, "error")
    with pytest.raises(ValueError, match="data.preprocess.duplicates"):
        deduplicate(d, "bogus")


def test_multi_category_policies():
    kwargs = dict(user=[1, 2, 3], item=["x", "x", "y"], value=[1, 1, 1], category=["b", "a", "a"])
    assert list(from_columns(**kwargs).item_category) == [0, 0]  # 'a' sorts first
    with pytest.raises(ValueError, match="more than one category"):
        from_columns(**kwargs, multi_category="error")


def test_kcore_and_implicit_threshold(caplog):
    d = _toy()
    with caplog.at_level(logging.INFO):
        out = kcore(d, 2)
    assert "2-core removed" in caplog.text
    assert set(out.user.tolist()) == {0}
    imp = preprocess(d, PreprocessConfig(duplicates="keep", implicit_threshold=3.0))
    assert imp.implicit and len(imp) == 3 and np.all(imp.value == 1.0)


def test_a_threshold_above_every_value_names_the_largest():
    with pytest.raises(ValueError, match=r"implicit_threshold=9\.0; every value is below it \(the largest is 5\)"):
        preprocess(_toy(), PreprocessConfig(duplicates="keep", implicit_threshold=9.0))
    implicit = dataclasses.replace(_toy(), value=np.ones(5, np.float32), implicit=True)
    with pytest.raises(ValueError, match=r"the largest is 1; the data is implicit, every value is 1"):
        preprocess(implicit, PreprocessConfig(implicit_threshold=2.0))


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="field 'value' is NaN at row 1"):
        from_columns([1, 2], [1, 2], [1.0, float("nan")])
    with pytest.raises(ValueError, match="field 'timestamp' is not numeric at row 0"):
        from_columns([1], [1], [1.0], timestamp=["noon"])
    with pytest.raises(ValueError, match="item 1 has no category"):
        from_columns([1], [1], [1.0], item_category={})
    with pytest.raises(ValueError, match="empty category set"):
        dataclasses.replace(_toy(), category_names=())


def test_synthetic_is_seeded_and_has_power_law_popularity():
    a, b = synthetic(n_users=300, n_items=200, seed=3), synthetic(n_users=300, n_items=200, seed=3)
    np.testing.assert_array_equal(a.item, b.item)
    assert not np.array_equal(a.item, synthetic(n_users=300, n_items=200, seed=4).item)
    big = synthetic(n_users=2000, n_items=1000, seed=0)
    counts = np.sort(np.bincount(big.item, minlength=big.n_items))[::-1] / len(big)
    assert counts[:100].sum() > 0.3  # the top 10% of items take > 30% of interactions
    assert counts[-500:].sum() < 0.2  # the bottom half < 20%
    assert len(np.unique(a.user * a.n_items + a.item)) == len(a)
