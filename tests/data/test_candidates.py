"""Bi-TGCF fixed candidates: domain mapping checked against the data, local indices, clear errors."""

import numpy as np
import pytest

from jmf.data.amazon_cdr import load_amazon_cdr
from jmf.data.candidates import load_candidates
from jmf.data.split import make_split, partition_categories
from jmf.data.tabular import read_columns

# Bi-TGCF folder -> (DisenCDR folder, domain)
MAPPING = {"cell_electronic": ("phone_electronic", "phone"), "electronic_cell": ("electronic_phone", "electronic")}


@pytest.fixture(scope="module")
def phone_electronic(data_dir):
    return load_amazon_cdr(data_dir / "amazon-cdr", "phone_electronic", test_file="test_original.txt")


def _split(data, domain):
    return make_split(data, partition_categories(data, cf_categories=[domain]), "predefined")


@pytest.mark.parametrize("negatives_folder", sorted(MAPPING))
def test_candidates_match_test_original(data_dir, phone_electronic, negatives_folder):
    folder, domain = MAPPING[negatives_folder]
    path = data_dir / "amazon-cdr-negatives" / negatives_folder / "test_neg.txt"
    split = _split(phone_electronic, domain)
    users, positives, negatives = load_candidates(path, split)
    assert users.shape == positives.shape == (3325,) and negatives.shape == (3325, 99)
    assert users.dtype == positives.dtype == negatives.dtype == np.int32
    # every positive is the user's row of the domain's test_original.txt, i.e. its test item
    original = read_columns(data_dir / "amazon-cdr" / folder / "test_original.txt", ("user", "item", "value"))
    expected = dict(zip(original["user"].tolist(), original["item"].tolist()))
    raw_user = split.data.user_ids[users]
    raw_item = split.data.item_ids[split.cf_items[positives]]
    assert [f"{domain}:{expected[u]}" for u in raw_user.tolist()] == raw_item.tolist()
    assert (np.asarray(split.test[users, positives]).ravel() == 1).all()
    # the local indices map back to the file's tokens
    first = path.read_text().splitlines()[0].split("\t")
    assert list(split.data.item_ids[split.cf_items[negatives[0]]]) == [f"{domain}:{t}" for t in first[1:]]


def test_wrong_domain_or_test_file_is_refused(data_dir, phone_electronic):
    path = data_dir / "amazon-cdr-negatives" / "cell_electronic" / "test_neg.txt"
    with pytest.raises(ValueError, match="not test interactions of the split"):
        load_candidates(path, _split(phone_electronic, "electronic"))
    seen_only = load_amazon_cdr(data_dir / "amazon-cdr", "phone_electronic")  # test.txt lacks unseen items
    with pytest.raises(ValueError, match=r"test_neg.txt: test item '13728' at line 1 is not in the data's CF side"):
        load_candidates(path, _split(seen_only, "phone"))


def test_malformed_files(tmp_path, phone_electronic):
    split = _split(phone_electronic, "phone")
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        load_candidates(tmp_path / "nowhere.txt", split)
    bad = tmp_path / "test_neg.txt"
    bad.write_text("(0, 13728)\t5567\n0 13728\t5567\n")
    with pytest.raises(ValueError, match=r"test_neg.txt: line 2 does not start with '\(user, item\)'"):
        load_candidates(bad, split)
    bad.write_text("(0, 13728)\t5567\n(99999, 13728)\t5567\n")
    with pytest.raises(ValueError, match="user '99999' at line 2 is not in the data"):
        load_candidates(bad, split)
    bad.write_text("(0, 13728)\t5567\t424242\n")
    with pytest.raises(ValueError, match="negative item '424242' at line 1"):
        load_candidates(bad, split)
