"""MovieLens-100k loader: raw statistics of ../shared/data/README.md, both file formats, bad input."""

import numpy as np
import pytest

from jmf.data.movielens import GENRES, load_ml100k


def test_ml100k_raw_statistics(data_dir):
    data = load_ml100k(data_dir / "ml-100k")
    assert data.stats() == {"rows": 100_000, "users": 943, "items": 1682, "categories": 19}
    assert data.category_names == GENRES
    assert data.value.min() == 1 and data.value.max() == 5
    assert data.item_titles[list(data.item_ids).index("1")] == "Toy Story"
    assert data.timestamp is not None and data.timestamp.min() > 8e8


def test_grouplens_format_matches_atomic(tmp_path, data_dir):
    atomic = load_ml100k(data_dir / "ml-100k")
    # write the same data in the original GroupLens format and read it back
    inter = (data_dir / "ml-100k" / "ml-100k.inter").read_text().splitlines()[1:]
    (tmp_path / "u.data").write_text("\n".join(inter) + "\n")
    items = (data_dir / "ml-100k" / "ml-100k.item").read_text().splitlines()[1:]
    lines = []
    for line in items:
        iid, title, year, cls = line.split("\t")
        flags = ["1" if g in cls.split() else "0" for g in GENRES]
        lines.append("|".join([iid, f"{title} ({year})", "01-Jan-1995", "", "url", *flags]))
    (tmp_path / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    original = load_ml100k(tmp_path)
    assert original.stats() == atomic.stats()
    np.testing.assert_array_equal(original.item_category, atomic.item_category)
    assert original.item_titles[0] == atomic.item_titles[0]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="ml-100k.inter"):
        load_ml100k(tmp_path)


def test_wrong_column_and_non_numeric_rating(tmp_path, data_dir):
    (tmp_path / "ml-100k.item").write_text((data_dir / "ml-100k" / "ml-100k.item").read_text())
    (tmp_path / "ml-100k.inter").write_text("user_id:token\titem_id:token\tscore:float\ttimestamp:float\n1\t1\t3\t5\n")
    with pytest.raises(ValueError, match=r"ml-100k.inter: missing column\(s\) \['rating'\]"):
        load_ml100k(tmp_path)
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t3\t5\n1\t2\tgood\t6\n")
    with pytest.raises(ValueError, match="field 'value' is not numeric at row 1"):
        load_ml100k(tmp_path)
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t3\t5\n1\t2\tnan\t6\n")
    with pytest.raises(ValueError, match="field 'value' is NaN at row 1"):
        load_ml100k(tmp_path)
