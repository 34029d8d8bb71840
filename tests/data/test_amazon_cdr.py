"""DisenCDR Amazon pairs: raw counts, the test.txt / test_original.txt relation, folds, bad input."""

import numpy as np
import pytest

from jmf.data.amazon_cdr import load_amazon_cdr
from jmf.data.interactions import TEST, TRAIN
from jmf.data.split import make_split, partition_categories
from jmf.data.tabular import read_columns

TRAIN_ROWS = {"sport_cloth": 92_612, "cloth_sport": 87_829, "phone_electronic": 50_407, "electronic_phone": 115_554}
TEST_ROWS = {"sport_cloth": 8326, "cloth_sport": 7540, "phone_electronic": 2559, "electronic_phone": 2560}
USERS = {"sport_cloth": 9928, "cloth_sport": 9928, "phone_electronic": 3325, "electronic_phone": 3325}
FIELDS = ("user", "item", "value")


@pytest.mark.parametrize("folder", sorted(TRAIN_ROWS))
def test_test_txt_is_the_seen_part_of_test_original(data_dir, folder):
    root = data_dir / "amazon-cdr" / folder
    train, test, original = (read_columns(root / f, FIELDS) for f in ("train.txt", "test.txt", "test_original.txt"))
    assert len(train["user"]) == TRAIN_ROWS[folder] and len(test["user"]) == TEST_ROWS[folder]
    # test_original: one held-out item per user, for every user, never a training pair
    assert len(original["user"]) == USERS[folder] == len(np.unique(original["user"]))
    assert set(original["user"]) == set(train["user"])
    train_pairs = set(zip(train["user"], train["item"]))
    assert not train_pairs & set(zip(original["user"], original["item"]))
    # test.txt: exactly the rows of test_original whose item occurs in this domain's train.txt, in order
    seen = np.isin(original["item"], train["item"])
    np.testing.assert_array_equal(test["user"], original["user"][seen])
    np.testing.assert_array_equal(test["item"], original["item"][seen])
    assert (train["value"] == 1).all() and (test["value"] == 1).all()


@pytest.mark.parametrize("pair", ["sport_cloth", "phone_electronic"])
def test_pair_raw_counts_and_folds(data_dir, pair):
    a, b = pair.split("_")
    data = load_amazon_cdr(data_dir / "amazon-cdr", pair)
    assert data.category_names == (a, b) and data.implicit and data.fold is not None
    assert data.n_users == USERS[pair]
    row_domain = np.asarray(data.category_names)[data.item_category[data.item]]
    for domain, other in ((a, b), (b, a)):
        in_domain = row_domain == domain
        assert ((data.fold == TRAIN) & in_domain).sum() == TRAIN_ROWS[f"{domain}_{other}"]
        assert ((data.fold == TEST) & in_domain).sum() == TEST_ROWS[f"{domain}_{other}"]
    # items are per-domain id spaces, prefixed by the domain
    assert all(str(i).split(":")[0] == data.category_names[c] for i, c in zip(data.item_ids, data.item_category))
    original = load_amazon_cdr(data_dir / "amazon-cdr", pair, test_file="test_original.txt")
    assert (original.fold == TEST).sum() == 2 * USERS[pair]


def test_predefined_split_holds_out_the_other_domains_test_rows(data_dir):
    data = load_amazon_cdr(data_dir / "amazon-cdr", "sport_cloth")
    partition = partition_categories(data, cf_categories=["cloth"])
    split = make_split(data, partition, "predefined", valid_ratio=0.0)
    assert split.counts() == {"rows/train": 87_829, "rows/valid": 0, "rows/test": 7540, "rows/dl": 92_612}
    assert (np.diff(split.test.indptr) > 0).sum() == 7540  # one test item per evaluated user
    # no validation fold ships: one training row of 10% of the eligible users becomes validation
    carved = make_split(data, partition, "predefined", valid_ratio=0.1, seed=0)
    n_valid = carved.valid.nnz
    eligible = (np.diff(split.train.indptr) >= 2).sum()
    assert n_valid == round(0.1 * eligible) and np.diff(carved.valid.indptr).max() == 1
    assert carved.train.nnz + n_valid == 87_829 and carved.test.nnz == 7540
    assert (carved.train.multiply(carved.valid)).nnz == 0
    # valid_ratio=1 (the Amazon experiments): every eligible user, and only those, lends one row
    loo = make_split(data, partition, "predefined", valid_ratio=1.0, seed=0)
    lent = np.diff(loo.valid.indptr)
    assert loo.valid.nnz == eligible and set(np.flatnonzero(lent)) == set(np.flatnonzero(np.diff(split.train.indptr) >= 2))
    assert loo.train.nnz + loo.valid.nnz == 87_829 and (np.diff(loo.train.indptr)[lent > 0] >= 1).all()
    with pytest.raises(ValueError, match="split.valid_ratio"):
        make_split(data, partition, "predefined", valid_ratio=1.5)


@pytest.mark.parametrize("valid_is_test", [False, True])
def test_dl_folds_give_the_other_domain_its_folds_and_leave_the_cf_side_alone(data_dir, valid_is_test):
    """split.dl_folds: the sport side keeps its 8,326 test rows and lends validation rows like the cloth side,
    whose folds are those of the split without; the mirror is the split with the domains swapped."""
    data = load_amazon_cdr(data_dir / "amazon-cdr", "sport_cloth")
    partition = partition_categories(data, cf_categories=["cloth"])
    ratio = 0.0 if valid_is_test else 1.0
    plain = make_split(data, partition, "predefined", valid_ratio=ratio, seed=3, valid_is_test=valid_is_test)
    both = make_split(data, partition, "predefined", valid_ratio=ratio, seed=3, valid_is_test=valid_is_test,
                      dl_folds=True)
    assert not plain.has_dl_folds and both.has_dl_folds
    for fold in ("train", "valid", "test"):
        assert (getattr(both, fold) != getattr(plain, fold)).nnz == 0
    assert both.dl_test.nnz == 8326 and (np.diff(both.dl_test.indptr) <= 1).all()
    if valid_is_test:
        assert (both.dl_valid != both.dl_test).nnz == 0 and (both.dl != plain.dl).nnz == 0
    else:
        eligible = np.diff(plain.dl.indptr) >= 2
        assert set(np.flatnonzero(np.diff(both.dl_valid.indptr))) == set(np.flatnonzero(eligible))
        assert both.dl.nnz + both.dl_valid.nnz == 92_612 and both.dl.multiply(both.dl_valid).nnz == 0
    assert both.dl.multiply(both.dl_test).nnz == 0
    mirror = both.mirrored()
    assert (mirror.train != both.dl).nnz == 0 and (mirror.test != both.dl_test).nnz == 0
    assert (mirror.dl != both.train).nnz == 0 and list(mirror.cf_items) == list(both.dl_items)
    assert mirror.counts()["rows/dl_test"] == both.test.nnz
    back = mirror.mirrored()
    assert (back.valid != both.valid).nnz == 0 and list(back.partition.cf_categories) == list(partition.cf_categories)
    with pytest.raises(ValueError, match="split.dl_folds=true"):
        plain.mirrored()
    with pytest.raises(ValueError, match="split.dl_folds=true needs split=predefined"):
        make_split(data, partition, "ratio", dl_folds=True)


def _pair_folder(root, folder, train="0\t1\t1\n1\t2\t1\n", test="0\t2\t1\n"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "train.txt").write_text(train)
    (root / folder / "test.txt").write_text(test)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="data.pair: 'sport' is not of the form"):
        load_amazon_cdr(tmp_path, "sport")
    with pytest.raises(FileNotFoundError, match="sport_cloth/train.txt"):
        load_amazon_cdr(tmp_path, "sport_cloth")
    _pair_folder(tmp_path, "sport_cloth")
    _pair_folder(tmp_path, "cloth_sport")
    assert load_amazon_cdr(tmp_path).stats() == {"rows": 6, "users": 2, "items": 4, "categories": 2}
    with pytest.raises(FileNotFoundError, match="sport_cloth/test_original.txt"):
        load_amazon_cdr(tmp_path, test_file="test_original.txt")
    _pair_folder(tmp_path, "cloth_sport", train="0\t1\t1\nx\t2\t1\n")
    with pytest.raises(ValueError, match=r"cloth_sport/train.txt: field 'user' is not an integer at line 2: 'x'"):
        load_amazon_cdr(tmp_path)
    _pair_folder(tmp_path, "cloth_sport", train="0\t1\t1\n1\tnan\t1\n")
    with pytest.raises(ValueError, match=r"cloth_sport/train.txt: field 'item' is NaN at line 2"):
        load_amazon_cdr(tmp_path)
    _pair_folder(tmp_path, "cloth_sport", train="0\t1\n1\t2\n")
    with pytest.raises(ValueError, match=r"cloth_sport/train.txt: expected 3 '\\t'-separated fields"):
        load_amazon_cdr(tmp_path)
