"""Douban Book / Music: README counts (incl. the last line without newline), domains, bad input."""

import numpy as np
import pytest

from jmf.data.douban import load_douban


def test_douban_raw_statistics(data_dir):
    book = load_douban(data_dir / "douban", ["douban_book"])
    music = load_douban(data_dir / "douban", ["douban_music"])
    assert book.stats() == {"rows": 96_041, "users": 2110, "items": 6777, "categories": 1}
    assert music.stats() == {"rows": 69_709, "users": 1672, "items": 5567, "categories": 1}
    # `wc -l` says 96,040: the last rating has no trailing newline and is still read
    raw = (data_dir / "douban" / "douban_book" / "ratings.dat").read_bytes()
    assert raw.count(b"\n") == 96_040 and not raw.endswith(b"\n")
    both = load_douban(data_dir / "douban")
    assert both.category_names == ("douban_book", "douban_music") and both.timestamp is None
    assert both.n_users == 2110 + 1672 - 1566  # 1,566 users rate in both domains
    assert len(both) == 96_041 + 69_709 and set(np.unique(both.value)) == {1, 2, 3, 4, 5}
    row_domain = np.asarray(both.category_names)[both.item_category[both.item]]
    assert (row_domain == "douban_music").sum() == 69_709
    assert all(str(i).startswith(both.category_names[c] + ":") for i, c in zip(both.item_ids, both.item_category))


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="douban_book/ratings.dat"):
        load_douban(tmp_path)
    (tmp_path / "douban_book").mkdir()
    (tmp_path / "douban_book" / "ratings.dat").write_text("1\t1\t4\n1\t2\tgood\n")
    with pytest.raises(ValueError, match=r"douban_book/ratings.dat: field 'rating' is not an integer at line 2"):
        load_douban(tmp_path, ["douban_book"])
    (tmp_path / "douban_book" / "ratings.dat").write_text("1\t1\t4\n1\t2\n")
    with pytest.raises(ValueError, match=r"douban_book/ratings.dat: field 'rating' is missing at line 2"):
        load_douban(tmp_path, ["douban_book"])
    with pytest.raises(ValueError, match="data.domains"):
        load_douban(tmp_path, [])
