"""Amazon cross-domain pairs as split by the DisenCDR authors (Cao et al., SIGIR 2022).

Layout (``root`` = the ``dataset/`` folder of cjx96/DisenCDR): for ``pair="a_b"`` the folder
``a_b/`` holds domain a's ``train.txt``, ``test.txt`` and ``test_original.txt`` and ``b_a/``
holds domain b's, each line ``user<TAB>item<TAB>1``.  Both domains share one user id space
(every user occurs in both); item ids are per domain, so raw item ids become ``"a:<id>"`` /
``"b:<id>"``.  Each domain is one category (``category_names == (a, b)``); ``train.txt``
rows get fold ``TRAIN``, test rows ``TEST`` (no validation fold ships), and the data is implicit.

The DisenCDR evaluation protocol, read from ``DisenCDR/utils/loader.py`` and checked on
the files (``tests/data/test_amazon_cdr.py``):

* ``test_original.txt`` holds one leave-one-out item per user, for every user
  (9,928 for sport/cloth, 3,325 for phone/electronic), never a training pair.
* ``test.txt`` is exactly the rows of ``test_original.txt`` whose item occurs in that
  domain's ``train.txt``, in file order (sport 8,326 of 9,928; cloth 7,540; phone 2,559 of
  3,325; electronic 2,560).  DisenCDR's loader also skips test rows whose user or item is
  not in ``train.txt``: a no-op on ``test.txt``.
* Each test pair is ranked among 999 negatives drawn uniformly from the domain's training
  items (the items of its ``train.txt``), rejecting the user's training items; HR@10 and
  NDCG@10 per domain.  DisenCDR draws the 999 with replacement and does not reject the
  positive itself; ties go to the positive (``argsort`` with the positive in column 0).

In jmf this is ``data=amazon_cdr split=predefined partition.cf_categories=[<domain>]
eval=sampled``: the sampler's pool is the CF-side items with a training interaction, it
rejects the user's training items and the positive and draws without replacement within a
pair (immaterial with 12k-40k items per domain), and ties count *against* the positive
(pessimistic, so tied scores such as popularity's integer counts are not flattered; DisenCDR's
argsort favours the positive, which only matters for models with tied scores).  One run evaluates one domain; the other domain's test rows are held out, not
used as training data (see ``split=predefined``).

``test_file="test_original.txt"`` keeps all held-out items, including those never seen
in training; the fixed Bi-TGCF candidates (:mod:`jmf.data.candidates`) need it, because
their positives and negatives include such items.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from jmf.data.interactions import TEST, TRAIN, Interactions, from_columns
from jmf.data.tabular import read_columns
from jmf.errors import DataError

log = logging.getLogger(__name__)

PAIRS = ("sport_cloth", "cloth_sport", "phone_electronic", "electronic_phone")
FIELDS = ("user", "item", "value")


def split_pair(pair: str, key: str = "data.pair") -> tuple[str, str]:
    """``"a_b"`` -> ``("a", "b")``; anything else raises naming ``key``."""
    parts = pair.split("_")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise DataError(f"{key}: {pair!r} is not of the form '<domain>_<other domain>' (e.g. {PAIRS[0]})")
    return parts[0], parts[1]


def load_amazon_cdr(root: str | Path, pair: str = "sport_cloth", test_file: str = "test.txt") -> Interactions:
    """Load both domains of a DisenCDR pair (raw train rows: sport 92,612; cloth 87,829; ...).

    Args:
      root: folder holding ``<a>_<b>/`` and ``<b>_<a>/``.
      pair: ``"<a>_<b>"``; categories are ``(a, b)`` in that order.
      test_file: ``test.txt`` (DisenCDR's test items) or ``test_original.txt`` (all held-out items).
    """
    root = Path(root)
    domains = split_pair(pair)
    users, items, folds = [], [], []
    for domain, other in (domains, domains[::-1]):
        folder = root / f"{domain}_{other}"
        for name, fold in (("train.txt", TRAIN), (test_file, TEST)):
            cols = read_columns(folder / name, FIELDS)
            users.append(cols["user"])
            # per-domain item id spaces: prefix the domain so "sport:5" and "cloth:5" stay apart
            items.append(np.char.add(f"{domain}:", cols["item"].astype(str)))
            folds.append(np.full(len(cols["user"]), fold, np.int8))
            if fold == TEST:
                _report_test(folder / name, cols, train_items=items[-2], test_items=items[-1])
    user, item, fold = np.concatenate(users), np.concatenate(items), np.concatenate(folds)
    category = np.repeat(np.arange(2), [sum(len(u) for u in users[:2]), sum(len(u) for u in users[2:])])
    data = from_columns(user, item, np.ones(len(user), np.float32), category=np.asarray(domains)[category],
                        category_names=domains, fold=fold, implicit=True, source=f"amazon_cdr/{pair}")
    n_both = len(np.intersect1d(users[0], users[2]))
    log.info("amazon_cdr/%s: %d users (%d in both domains), %d %s / %d %s train rows", pair, data.n_users, n_both,
             len(users[0]), domains[0], len(users[2]), domains[1])
    return data


def _report_test(path: Path, cols: dict[str, np.ndarray], train_items: np.ndarray, test_items: np.ndarray) -> None:
    unseen = int((~np.isin(test_items, train_items)).sum())
    if unseen:
        log.info("%s: %d of %d held-out items never occur in training (DisenCDR's test.txt drops them)",
                 path, unseen, len(test_items))
