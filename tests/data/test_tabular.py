"""Generic table loader (CSV/TSV/Parquet) and the headerless id reader: formats and named errors."""

import numpy as np
import pandas as pd
import pytest

from jmf.data.tabular import load_table, read_columns

ROWS = pd.DataFrame({"uid": ["a", "a", "b", "007"], "iid": ["x", "y", "x", "z"], "stars": [5, 3, 4, 1],
                     "ts": [10, 11, 12, 13], "genre": ["g1", "g2", "g1", "g2"]})
KW = dict(user_col="uid", item_col="iid", value_col="stars", time_col="ts", category_col="genre")


@pytest.mark.parametrize("name", ["r.csv", "r.tsv", "r.csv.gz", "r.parquet", "r.txt"])
def test_formats_agree(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        ROWS.to_parquet(path)
    else:
        ROWS.to_csv(path, sep="\t" if name.endswith(".tsv") else ";" if name.endswith(".txt") else ",", index=False)
    data = load_table(path, **KW)
    assert data.stats() == {"rows": 4, "users": 3, "items": 3, "categories": 2}
    assert data.category_names == ("g1", "g2") and not data.implicit and data.name == "csv"
    assert "007" in [str(u) for u in data.user_ids]  # ids kept verbatim
    np.testing.assert_array_equal(np.sort(data.timestamp), [10, 11, 12, 13])
    np.testing.assert_array_equal(data.value[np.argsort(data.timestamp)], [5, 3, 4, 1])


def test_implicit_default(tmp_path):
    ROWS.to_csv(tmp_path / "r.csv", index=False)
    data = load_table(tmp_path / "r.csv", user_col="uid", item_col="iid")
    assert data.implicit and (data.value == 1).all() and data.category_names == ("all",) and data.timestamp is None
    assert not load_table(tmp_path / "r.csv", user_col="uid", item_col="iid", implicit=False).implicit


def test_named_errors(tmp_path):
    path = tmp_path / "r.csv"
    with pytest.raises(FileNotFoundError, match="r.csv"):
        load_table(path)
    ROWS.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"r.csv: column 'rating' \(data.value_col\) not found"):
        load_table(path, user_col="uid", item_col="iid", value_col="rating")
    with pytest.raises(ValueError, match=r"r.csv: column 'user' \(data.user_col\) not found"):
        load_table(path)
    path.write_text("uid,iid,stars\na,x,5\nb,y,great\n")
    with pytest.raises(ValueError, match=r"r.csv: field 'value' \(column 'stars'\) is not a finite number at line 3: 'great'"):
        load_table(path, user_col="uid", item_col="iid", value_col="stars")
    path.write_text("uid,iid,stars\na,x,5\nb,y,nan\n")
    with pytest.raises(ValueError, match=r"r.csv: field 'value' \(column 'stars'\) is not a finite number at line 3: 'nan'"):
        load_table(path, user_col="uid", item_col="iid", value_col="stars")
    path.write_text("uid,iid,stars,ts\na,x,5,1\nb,y,4,\n")
    with pytest.raises(ValueError, match=r"r.csv: field 'time' \(column 'ts'\) is missing at line 3"):
        load_table(path, user_col="uid", item_col="iid", value_col="stars", time_col="ts")
    path.write_text("uid,iid,stars\na,x,5\n,y,4\n")
    with pytest.raises(ValueError, match=r"r.csv: field 'user' is empty at line 3"):
        load_table(path, user_col="uid", item_col="iid", value_col="stars")
    pd.DataFrame({"uid": [1.0, None], "iid": [1, 2]}).to_parquet(tmp_path / "r.parquet")
    with pytest.raises(ValueError, match=r"r.parquet: field 'user' is empty at row 1"):
        load_table(tmp_path / "r.parquet", user_col="uid", item_col="iid")


def test_read_columns(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1\t2\n3\t4")  # no newline at the end
    cols = read_columns(path, ("user", "item"))
    assert cols["user"].dtype == np.int64 and cols["item"].tolist() == [2, 4]
    path.write_text("")
    with pytest.raises(ValueError, match="pairs.txt: empty file"):
        read_columns(path, ("user", "item"))
    path.write_text("1\t2\n3\t4\t5\n")
    with pytest.raises(ValueError, match=r"pairs.txt: expected 2 '\\t'-separated fields"):
        read_columns(path, ("user", "item"))


@pytest.mark.parametrize("ratings", [False, True])
def test_the_synthetic_table_command_writes_what_data_csv_reads(tmp_path, ratings, capsys):
    """``python -m jmf.data.synthetic out.csv`` (the README tour's data) round-trips through the CSV loader."""
    from jmf.data.synthetic import main, synthetic

    path = tmp_path / "behaviour.csv"
    assert main([str(path), "--users", "50", "--items", "30", "--categories", "3", "--seed", "2"]
                + (["--ratings"] if ratings else [])) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    loaded = load_table(path, value_col="rating" if ratings else None, time_col="ts", category_col="genre")
    ref = synthetic(n_users=50, n_items=30, n_categories=3, interactions_per_user=40.0, shared_dim=3, specific_dim=0,
                    shared_weight=1.0, temperature=0.25, implicit=not ratings, seed=2)
    assert len(loaded) == len(ref) and loaded.implicit == (not ratings)
    assert sorted(loaded.category_names) == list(ref.category_names)
    if ratings:
        assert sorted(loaded.value.tolist()) == sorted(ref.value.tolist())
