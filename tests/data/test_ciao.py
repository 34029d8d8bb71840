"""Ciao loader: raw statistics and the known quirks of ../shared/data/README.md, bad input."""

import logging

import numpy as np
import pytest
import scipy.io

from jmf.data.ciao import CATEGORIES, load_ciao, quirks, read_ciao
from jmf.data.preprocess import deduplicate


def test_ciao_raw_statistics(data_dir):
    data = load_ciao(data_dir / "ciao")
    assert data.stats() == {"rows": 284_086, "users": 7375, "items": 105_114, "categories": 28}
    assert data.category_names == CATEGORIES == tuple(str(c) for c in range(1, 29))
    assert data.timestamp is not None and data.timestamp.min() > 9e8
    assert not data.implicit and data.value.max() == 5


def test_ciao_quirks_are_counted_and_logged(data_dir, caplog):
    q = quirks(read_ciao(data_dir / "ciao" / "rating_with_timestamp.mat"))
    # the README's "1,436 pairs" are 1,436 surplus rows over 1,252 repeated pairs
    assert q == {"repeated_rows": 1436, "repeated_pairs": 1252, "multi_category_products": 101, "zero_ratings": 34}
    with caplog.at_level(logging.INFO, logger="jmf.data.ciao"):
        data = load_ciao(data_dir / "ciao")
    message = " ".join(r.getMessage() for r in caplog.records if r.name == "jmf.data.ciao")
    assert "1436 repeated" in message and "101 products" in message
    # the loader keeps duplicates: the preprocess policy removes exactly the surplus rows
    assert len(deduplicate(data, "mean")) == 284_086 - 1436


def test_ciao_category_ids_map_to_names(data_dir):
    raw = read_ciao(data_dir / "ciao" / "rating_with_timestamp.mat")
    data = load_ciao(data_dir / "ciao")
    # single-category products: the category name is Ciao's id
    item_code = {raw_id: code for code, raw_id in enumerate(data.item_ids)}
    for row in (0, 1000, 200_000):
        product, category = raw["product"][row], raw["category"][row]
        assert data.category_names[data.item_category[item_code[product]]] == str(category)


def test_multi_category_policies(data_dir):
    first = load_ciao(data_dir / "ciao", multi_category="first")
    common = load_ciao(data_dir / "ciao", multi_category="most_common")
    assert (first.item_category != common.item_category).sum() <= 101
    with pytest.raises(ValueError, match="101 items carry more than one category"):
        load_ciao(data_dir / "ciao", multi_category="error")


def _write(tmp_path, table, key="rating"):
    scipy.io.savemat(tmp_path / "rating_with_timestamp.mat", {key: np.asarray(table)})


GOOD = [[1, 10, 1, 5, 1, 100], [1, 11, 2, 4, 1, 101], [2, 10, 1, 3, 1, 102]]


def test_small_file_and_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="rating_with_timestamp.mat"):
        load_ciao(tmp_path)
    _write(tmp_path, GOOD)
    assert load_ciao(tmp_path).stats() == {"rows": 3, "users": 2, "items": 2, "categories": 28}
    _write(tmp_path, GOOD, key="ratings")
    with pytest.raises(ValueError, match=r"rating_with_timestamp.mat: no key 'rating'"):
        load_ciao(tmp_path)
    _write(tmp_path, [r[:5] for r in GOOD])
    with pytest.raises(ValueError, match=r"rating_with_timestamp.mat: 'rating' has shape \(3, 5\)"):
        load_ciao(tmp_path)
    _write(tmp_path, [[1.0, 10, 1, 5, 1, 100], [1, 11, 2, np.nan, 1, 101]])
    with pytest.raises(ValueError, match="rating_with_timestamp.mat: field 'rating' is NaN at row 1"):
        load_ciao(tmp_path)
    _write(tmp_path, [[1.0, 10, 1, 5, 1, 100], [1, 11.5, 2, 4, 1, 101]])
    with pytest.raises(ValueError, match="field 'product' is not an integer at row 1"):
        load_ciao(tmp_path)
    _write(tmp_path, [[1, 10, 1, 5, 1, 100], [1, 11, 29, 4, 1, 101]])
    with pytest.raises(ValueError, match="field 'category' is 29 at row 1, outside 1..28"):
        load_ciao(tmp_path)
