"""Generic table loader (CSV/TSV/Parquet) and the headerless id reader: formats and named errors."""

import gzip
import logging
import re

import numpy as np
import pandas as pd
import pytest

from jmf.data.tabular import load_table, read_columns
from jmf.errors import ConfigError

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


# ---- issue 32: input that used to load wrongly without a word, or fail without the remedy
def _lines(n=20, sep=",", user=lambda r: f"u{r % 5}"):
    rows = [sep.join(["user", "item", "rating", "time"])]
    rows += [sep.join([user(r), f"i{r % 7}", str(1 + r % 5), str(1600000000 + r)]) for r in range(n)]
    return rows


def test_ids_with_surrounding_whitespace_are_stripped_and_counted(tmp_path, caplog):
    path = tmp_path / "r.csv"
    path.write_text("\n".join(_lines(user=lambda r: f"{r % 5} " if r % 2 else f"{r % 5}")) + "\n")
    with caplog.at_level(logging.WARNING):
        data = load_table(path, value_col="rating")
    assert data.n_users == 5 and sorted(map(str, data.user_ids)) == ["0", "1", "2", "3", "4"]
    assert "stripped surrounding whitespace from 10 user ids (first '1 ' at line 3): 5 distinct users, not 10" \
        in caplog.text and "data.strip_ids=false" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        verbatim = load_table(path, value_col="rating", strip_ids=False)
    assert verbatim.n_users == 10 and "5 user ids differ from another only by surrounding whitespace" in caplog.text


def test_a_repeated_column_name_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,rating\na,x,5,1\nb,y,4,2\n")
    with pytest.raises(ValueError, match=r"r.csv: the header line names column 'rating' more than once "
                                         r"\(fields \[3, 4\]\)"):
        load_table(path, value_col="rating")
    assert load_table(path, value_col="stars", columns=["user", "item", "stars", "rating"]).value.tolist() == [5, 4]
    with pytest.raises(ValueError, match=r"data.columns names column 'item' more than once"):
        load_table(path, columns=["user", "item", "item", "rating"])


def test_encoding_names_the_line_and_the_setting(tmp_path):
    rows = _lines()
    rows[13] = rows[13].replace("i", "caf\xe9", 1)
    text = ("\n".join(rows) + "\n").encode("latin-1")
    offset = text.index(b"\xe9")
    (tmp_path / "r.csv").write_bytes(text)
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(text))
    for name in ("r.csv", "r.csv.gz"):
        with pytest.raises(ValueError, match=rf"{name}: not valid utf-8 text: byte\(s\) e9 at byte {offset} "
                                             r"\(line 14\) cannot be decoded; .* data.encoding=latin-1"):
            load_table(tmp_path / name)
    data = load_table(tmp_path / "r.csv", value_col="rating", encoding="latin-1")
    assert rows[13].split(",")[1] == "caf\xe95" and "caf\xe95" in [str(i) for i in data.item_ids]
    with pytest.raises(ConfigError, match="data.encoding: unknown encoding 'klingon'"):
        load_table(tmp_path / "r.csv", encoding="klingon")
    cut = ("\n".join(_lines()) + "\nu9,caf\xe9").encode()[:-1]   # the file ends inside a two-byte character
    (tmp_path / "r.csv").write_bytes(cut)
    with pytest.raises(ValueError, match=rf"byte {len(cut) - 1} \(line 22\) cannot be decoded"):
        load_table(tmp_path / "r.csv")


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_file_with_another_separator(tmp_path, sep, caplog):
    path = tmp_path / "r.csv"
    path.write_text("\n".join(_lines(sep=sep)) + "\n")
    with caplog.at_level(logging.WARNING):
        data = load_table(path, value_col="rating", time_col="time")
    assert len(data) == 20 and data.n_users == 5 and f"reading this .csv file as {sep!r}-separated" in caplog.text
    typed = "\\t" if sep == "\t" else sep       # data.sep='\t' on a command line: a backslash and a t
    hint = f"the first line looks {sep!r}-separated: set \"data.sep='{typed}'\""
    with pytest.raises(ValueError, match=re.escape(hint)):
        load_table(path, value_col="rating", sep=",")
    assert len(load_table(path, value_col="rating", sep=typed)) == 20
    caplog.clear()
    (tmp_path / "r.tsv").write_text("\n".join(_lines(sep="\t")) + "\n")
    with caplog.at_level(logging.WARNING):
        assert len(load_table(tmp_path / "r.tsv")) == 20
    assert "separated" not in caplog.text          # only a .csv file's separator is a surprise


def test_a_bad_time_names_its_own_line(tmp_path):
    path = tmp_path / "r.csv"
    for bad in ("NaN", "n/a", "soon"):
        rows = _lines()
        rows[13] = rows[13].rsplit(",", 1)[0] + f",{bad}"
        path.write_text("\n".join(rows) + "\n")
        with pytest.raises(ValueError, match=rf"field 'time' \(column 'time'\) is not a finite number "
                                             rf"at line 14: '{bad}'"):
            load_table(path, time_col="time")
    rows = ["user,item,time"] + [f"u{r},i{r},2026-01-{1 + r:02d}" for r in range(20)]
    rows[13] = "u13,i13,1600000000"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"at line 14: '1600000000' is a number, but most rows are dates"):
        load_table(path, time_col="time")


def test_a_parquet_datetime_column_is_seconds(tmp_path):
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"],
                  "ts": pd.to_datetime(["2026-01-01", "2026-01-02"])}).to_parquet(tmp_path / "r.parquet")
    assert load_table(tmp_path / "r.parquet", time_col="ts").timestamp.tolist() == [1767225600, 1767312000]


def test_a_checkpoint_saved_before_encoding_existed_still_matches():
    """``data.encoding`` came later at utf-8, what the loader read before: an older run's config lacks it and
    still resumes; ``data.strip_ids`` (on by default, a change for padded ids) does not match silently."""
    from jmf.pytrees import changed_settings

    old = {"data.path": "x.csv"}
    assert changed_settings({**old, "data.encoding": "utf-8"}, old) == []
    assert changed_settings({**old, "data.encoding": "latin-1"}, old) == ["data.encoding"]
    assert changed_settings({**old, "data.strip_ids": True}, old) == ["data.strip_ids"]
