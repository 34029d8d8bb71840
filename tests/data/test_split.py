"""O1/O2 partition and the hold-outs."""

import re

import numpy as np
import pytest

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=400, n_items=300, n_categories=6, seed=0)


def test_partition_by_k_takes_largest(data):
    p = partition_categories(data, k=2)
    counts = np.bincount(data.item_category[data.item], minlength=6)
    assert set(p.cf_categories) == set(np.argsort(-counts)[:2])
    assert len(p.dl_categories) == 4


def test_partition_by_names_and_errors(data):
    p = partition_categories(data, cf_categories=["cat01", 3])
    assert list(p.cf_categories) == [1, 3]
    with pytest.raises(ValueError, match="partition.k"):
        partition_categories(data, k=6)
    with pytest.raises(ValueError, match="partition.cf_categories: empty"):
        partition_categories(data, cf_categories=[])
    with pytest.raises(ValueError, match="partition.cf_categories: no category named 'nope'"):
        partition_categories(data, cf_categories=["nope"])


def test_ratio_split_is_disjoint_and_latest_in_test(data):
    s = make_split(data, partition_categories(data, k=3), "ratio", test_ratio=0.2, valid_ratio=0.1)
    assert s.train.multiply(s.test).nnz == 0 and s.train.multiply(s.valid).nnz == 0
    cf_rows = np.isin(data.item_category[data.item], s.partition.cf_categories).sum()
    assert s.train.nnz + s.valid.nnz + s.test.nnz == cf_rows
    assert s.dl.nnz == len(data) - cf_rows
    # by time: every test row of user 0 is later than all of its training rows
    u = 0
    local = {g: j for j, g in enumerate(s.cf_items)}
    rows = np.flatnonzero((data.user == u) & np.isin(data.item_category[data.item], s.partition.cf_categories))
    test_items = set(s.test[u].indices)
    ts_test = [data.timestamp[r] for r in rows if local[data.item[r]] in test_items]
    ts_train = [data.timestamp[r] for r in rows if local[data.item[r]] in set(s.train[u].indices)]
    assert min(ts_test) > max(ts_train)


def test_loo_holds_one_per_user(data):
    s = make_split(data, partition_categories(data), "loo", valid_ratio=0.1)
    per_user = np.diff(s.test.indptr)
    assert per_user.max() == 1 and per_user.sum() > 0.9 * data.n_users


def test_cold_start_hides_all_cf_rows_of_test_users(data):
    s = make_split(data, partition_categories(data, k=3), "cold_start", beta=0.5, seed=1)
    assert len(s.cold_test_users) > 0 and len(s.cold_valid_users) > 0
    assert not set(s.cold_test_users) & set(s.cold_valid_users)
    assert s.train[s.cold_test_users].nnz == 0 and s.train[s.cold_valid_users].nnz == 0
    assert s.test[s.cold_test_users].nnz == s.test.nnz > 0
    assert s.dl[s.cold_test_users].nnz > 0  # they keep their DL-side history
    with pytest.raises(ValueError, match="split.beta"):
        make_split(data, partition_categories(data, k=3), "cold_start", beta=1.5)
    with pytest.raises(ValueError, match="needs a DL side"):
        make_split(data, partition_categories(data), "cold_start")


def test_valid_is_test_selects_on_the_test_fold_and_trains_on_the_rest(data):
    p = partition_categories(data, k=2)
    both = make_split(data, p, "ratio", valid_ratio=0.0, valid_is_test=True, seed=0)
    plain = make_split(data, p, "ratio", valid_ratio=0.0, seed=0)
    assert (both.valid != both.test).nnz == 0 and both.test.nnz > 0
    assert (both.train != plain.train).nnz == 0 and plain.valid.nnz == 0
    cold = make_split(data, p, "cold_start", cold_valid_fraction=0.0, valid_is_test=True, seed=0)
    assert list(cold.cold_valid_users) == list(cold.cold_test_users)
    with pytest.raises(ValueError, match="split.valid_is_test=true .* split.valid_ratio=0"):
        make_split(data, p, "ratio", valid_ratio=0.1, valid_is_test=True)


def test_a_missing_dl_side_says_what_is_wrong(data):
    """Issue 32: not "set partition.k or partition.cf_categories" to someone who set them, or whose data has one
    category, but what is actually wrong."""
    from jmf.data.split import dl_side_missing

    everything = partition_categories(data, cf_categories=[f"cat0{c}" for c in range(6)])
    assert re.search(r"model=jmf needs a DL side: .*partition\.cf_categories lists all 6 categories of synthetic; "
                     r"leave at least one out", dl_side_missing(data, everything, "model=jmf"))
    assert re.search(r"neither partition\.k nor partition\.cf_categories is set, so all 6 categories .* set "
                     r"partition\.k \(1\.\.5", dl_side_missing(data, partition_categories(data), "model=jmf"))
    one = synthetic(n_users=50, n_items=30, n_categories=1, seed=0)
    assert "synthetic has a single category ('cat00')" in dl_side_missing(one, partition_categories(one), "model=jmf")
    with pytest.raises(ValueError, match="partition.k: synthetic has a single category"):
        partition_categories(one, k=1)
    with pytest.raises(ValueError, match="partition.cf_categories lists all 6"):
        make_split(data, everything, "cold_start")


def test_categories_differing_only_in_case_are_explained():
    """``c0`` and ``C0`` are two categories; an item listed under both keeps the first (``C0``), so ``c0`` holds
    no rows: the CF side ``[c0]`` is refused naming the clash, not "only 0 users are active on both sides"."""
    from jmf.data.interactions import from_columns

    rng = np.random.default_rng(0)
    items = rng.integers(40, size=2000)
    cats = np.where(items < 20, np.where(rng.random(2000) < 0.5, "c0", "C0"), "c1")
    mixed = from_columns(rng.integers(100, size=2000).astype(str), items.astype(str), np.ones(2000), category=cats)
    assert mixed.category_names == ("C0", "c0", "c1")
    with pytest.raises(ValueError, match=r"the CF side has no rows: category 'c0' .* holds no rows .*'c0' and 'C0' "
                                         r"differ only in case"):
        partition_categories(mixed, cf_categories=["c0"])
    assert len(make_split(mixed, partition_categories(mixed, cf_categories=["C0"]), "cold_start").cold_test_users)


def test_partition_k_logs_the_cf_categories(data, caplog):
    with caplog.at_level("INFO", logger="jmf.data.split"):
        p = partition_categories(data, k=2)
    names = [f"cat0{c}" for c in p.cf_categories]
    assert re.search(rf"partition\.k=2: CF side \(O1\) {names[0]} \([\d,]+ rows\), {names[1]} .*DL side \(O2\)",
                     caplog.text), caplog.text
