"""CDRIB cold-start split: README counts, the file structure the loader relies on, bad input."""

import numpy as np
import pytest

from jmf.data.cdrib import common_users, load_cdrib
from jmf.data.interactions import TEST, VALID
from jmf.data.split import make_split, partition_categories
from jmf.data.tabular import read_columns

# pair -> (train rows, cold test users, cold valid users)
COUNTS = {"cloth_sport": (187_880, 907, 915), "sport_cloth": (163_291, 897, 912)}


@pytest.mark.parametrize("pair", sorted(COUNTS))
def test_cold_start_counts(data_dir, pair):
    target, source = pair.split("_")
    data = load_cdrib(data_dir / "cdrib", pair)
    assert data.category_names == (source, target) and data.implicit
    assert data.n_users == 59_329  # "total user num" of sport_cloth/cloth_sport_data_info.txt
    split = make_split(data, partition_categories(data, cf_categories=[target]), "predefined")
    n_train, n_test_users, n_valid_users = COUNTS[pair]
    other_train = COUNTS[f"{source}_{target}"][0]
    assert split.train.nnz == n_train and split.dl.nnz == other_train
    test_users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    valid_users = np.flatnonzero(np.diff(split.valid.indptr) > 0)
    assert len(test_users) == n_test_users and len(valid_users) == n_valid_users
    # cold start: no target training rows, but source rows, and a shared (unprefixed) id
    cold = np.union1d(test_users, valid_users)
    assert split.train[cold].nnz == 0 and (np.diff(split.dl.indptr)[cold] > 0).all()
    assert not any(":" in u for u in data.user_ids[cold])


def test_both_folds_make_one_split_hold_both_directions(data_dir):
    """``both_folds`` + ``split.dl_folds``: the sport_cloth split's mirror is the cloth_sport split (same users,
    folds and training rows), and without ``dl_folds`` the split is the plain one."""
    data = load_cdrib(data_dir / "cdrib", "sport_cloth", both_folds=True)
    plain_data = load_cdrib(data_dir / "cdrib", "sport_cloth")
    assert list(data.user_ids) == list(plain_data.user_ids) and list(data.item_ids) == list(plain_data.item_ids)
    partition = partition_categories(data, cf_categories=["sport"])
    both = make_split(data, partition, "predefined", dl_folds=True)
    plain = make_split(plain_data, partition, "predefined")
    assert all((getattr(both, f) != getattr(plain, f)).nnz == 0 for f in ("train", "valid", "test", "dl"))
    assert make_split(data, partition, "predefined").counts() == plain.counts()
    other = load_cdrib(data_dir / "cdrib", "cloth_sport")
    mirror, ref = both.mirrored(), make_split(other, partition_categories(other, cf_categories=["cloth"]), "predefined")
    assert mirror.counts() == {**ref.counts(), "rows/dl_valid": 3589, "rows/dl_test": 3546}
    ids = np.asarray(data.user_ids)
    for fold in ("train", "valid", "test"):   # the same (user, item) pairs under the raw ids
        a, b = getattr(mirror, fold).tocoo(), getattr(ref, fold).tocoo()
        items_a, items_b = np.asarray(data.item_ids)[mirror.cf_items], np.asarray(other.item_ids)[ref.cf_items]
        assert sorted(zip(ids[a.row], items_a[a.col])) == sorted(zip(np.asarray(other.user_ids)[b.row], items_b[b.col]))


@pytest.mark.parametrize("pair", sorted(COUNTS))
def test_file_structure(data_dir, pair):
    target, source = pair.split("_")
    folder, other = data_dir / "cdrib" / pair, data_dir / "cdrib" / f"{source}_{target}"
    n_common = common_users(folder)
    assert n_common == common_users(other) == 9828
    train, valid, test = (read_columns(folder / f, ("user", "item")) for f in ("train.txt", "valid.txt", "test.txt"))
    whole = read_columns(folder / "new_reindex.txt", ("user", "item", "value"))
    # one domain per folder: train + valid + test is the folder's whole (re-indexed) domain
    assert len(whole["user"]) == sum(len(p["user"]) for p in (train, valid, test))
    assert len(np.unique(train["item"])) == len(np.unique(whole["item"])) == train["item"].max() + 1
    # split_data.py: L = int(0.1 n_common); cold in cloth [9L, n_common), cold in sport [8L, 9L)
    L = int(0.1 * n_common)
    low, high = (9 * L, n_common) if target == "cloth" else (8 * L, 9 * L)
    cold = np.union1d(valid["user"], test["user"])
    assert cold.min() >= low and cold.max() < high
    assert not np.isin(cold, train["user"]).any()
    assert np.isin(cold, read_columns(other / "train.txt", ("user", "item"))["user"]).all()
    assert np.isin(np.concatenate([valid["item"], test["item"]]), train["item"]).all()


def test_folds(data_dir):
    data = load_cdrib(data_dir / "cdrib", "cloth_sport")
    assert (data.fold == VALID).sum() == 3156 and (data.fold == TEST).sum() == 3085
    held_out_domain = np.asarray(data.category_names)[data.item_category[data.item[data.fold != 0]]]
    assert set(held_out_domain) == {"cloth"}


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="sport_cloth/common_new_reindex.txt"):
        load_cdrib(tmp_path, "sport_cloth")
    for folder in ("sport_cloth", "cloth_sport"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "common_new_reindex.txt").write_text("5\t0\t1\n6\t1\t1\n")
        (tmp_path / folder / "train.txt").write_text("0\t0\n2\t1\n")
    (tmp_path / "sport_cloth" / "valid.txt").write_text("1\t0\n")
    with pytest.raises(FileNotFoundError, match="sport_cloth/test.txt"):
        load_cdrib(tmp_path, "sport_cloth")
    (tmp_path / "sport_cloth" / "test.txt").write_text("1\t1\n")
    data = load_cdrib(tmp_path, "sport_cloth")
    # user 2 is not common (>= 2): a different person in each domain
    assert sorted(data.user_ids) == ["0", "1", "cloth:2", "sport:2"]
    (tmp_path / "sport_cloth" / "test.txt").write_text("1\t1.5\n")
    with pytest.raises(ValueError, match=r"sport_cloth/test.txt: field 'item' is not an integer at line 1"):
        load_cdrib(tmp_path, "sport_cloth")
