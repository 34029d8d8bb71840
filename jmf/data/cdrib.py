"""The CDRIB cold-start split (Cao et al., ICDE 2022) of two Amazon domains.

What the files are, read from cjx96/CDRIB ``dataset/preprocessing/{Filter_data_cold,split_data}.py``
and ``CDRIB/utils/loader.py`` and checked on the data (``tests/data/test_cdrib.py``):

* The folder ``a_b/`` holds **domain a only**: ``train.txt`` (``user<TAB>item``), and
  ``valid.txt`` / ``test.txt``, the domain-a interactions of a's cold-start users.
  ``new_reindex.txt`` (a's rows under the earlier ids of ``Filter_data_cold.py``) has exactly
  ``train + valid + test`` rows; ``common_new_reindex.txt`` is its overlapping-user part.
* Item ids are per domain, ``0..I_a-1`` in ``a_b/`` (order of first appearance).
* User ids ``0..n_common-1`` are the users of both domains, the same person in ``a_b/`` and
  ``b_a/`` (``n_common`` = users of ``common_new_reindex.txt``: 9,828 for cloth/sport).  Ids
  from ``n_common`` up are numbered separately per domain, so ``cloth`` user 20000 and
  ``sport`` user 20000 are different people; their raw ids here are ``"<domain>:<id>"``,
  shared users keep ``"<id>"``.
* Cold-start users: ``split_data.py`` (source cloth, target sport, ``L = int(0.1 n_common)``)
  takes common users ``[9L, n_common)`` as cold in cloth and ``[8L, 9L)`` as cold in sport:
  all their rows of that domain go to valid/test (each row by a coin flip), so they have no
  training rows there but keep all their rows in the other domain.
* Evaluation (``loader.py``): each valid/test row is ranked among 999 items drawn uniformly
  from the domain's training items; MRR, NDCG@5/10, HR@1/5/10.  Rows whose item never occurs
  in training are skipped (none in these files).

``load_cdrib(root, pair="a_b")`` reads the cold-start direction **into domain a**: a's
``train/valid/test`` with folds ``TRAIN/VALID/TEST`` and b's ``train.txt`` as ``TRAIN``
(b's own cold rows stay out, as in CDRIB's training set).  Categories are
``(source, target) == (b, a)``, so ``data=cdrib data.pair=a_b split=predefined
partition.cf_categories=[a] eval=sampled`` is CDRIB's protocol for target a; CDRIB's two
reported directions are ``pair=cloth_sport`` and ``pair=sport_cloth``.  jmf's sampler also
rejects the user's validation items when ranking a test item; CDRIB rejects the user's test
items (source side) or nothing (target side): with 12k-18k items per domain that is immaterial.

Note: ``cloth_sport/sport_cloth_data_info.txt`` is left over from an earlier preprocessing
run (9,928 common users: the DisenCDR split); ``sport_cloth/cloth_sport_data_info.txt``
describes these files (9,828).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from jmf.data.amazon_cdr import split_pair
from jmf.data.interactions import TEST, TRAIN, VALID, Interactions, from_columns
from jmf.data.tabular import read_columns
from jmf.errors import DataError

log = logging.getLogger(__name__)

PAIRS = ("sport_cloth", "cloth_sport")


def common_users(folder: Path) -> int:
    """``n_common``: the number of users in ``folder/common_new_reindex.txt``."""
    cols = read_columns(folder / "common_new_reindex.txt", ("user", "item", "value"))
    return len(np.unique(cols["user"]))


def load_cdrib(root: str | Path, pair: str = "sport_cloth", both_folds: bool = False) -> Interactions:
    """Load CDRIB's cold-start split into domain ``a`` of ``pair="a_b"``.

    Raw counts: ``cloth_sport`` 187,880 train rows and 907 cold test users;
    ``sport_cloth`` 163,291 and 897.

    Args:
      root: folder holding ``<a>_<b>/`` and ``<b>_<a>/``.
      pair: ``"<target>_<source>"``: the folder whose valid/test rows are evaluated.
      both_folds: read b's ``valid.txt`` / ``test.txt`` too (folds ``VALID`` / ``TEST``; their users are
        common users, their items b's training items, so no id changes), for a model that trains both
        domains to be evaluated on both in one run (``split.dl_folds=true``: CDRIB's two directions).
        Without ``split.dl_folds``, ``split=predefined`` drops them again.
    """
    root = Path(root)
    target, source = split_pair(pair)
    target_dir, source_dir = root / f"{target}_{source}", root / f"{source}_{target}"
    n_common = common_users(target_dir)
    if common_users(source_dir) != n_common:
        raise DataError(f"{root}: {target_dir.name} and {source_dir.name} disagree on the number of common users "
                         f"({n_common} vs {common_users(source_dir)})")
    parts = [(target_dir / "train.txt", TRAIN), (target_dir / "valid.txt", VALID),
             (target_dir / "test.txt", TEST), (source_dir / "train.txt", TRAIN)]
    if both_folds:
        parts += [(source_dir / "valid.txt", VALID), (source_dir / "test.txt", TEST)]
    cols = [read_columns(path, ("user", "item")) for path, _ in parts]
    _report_cold(pair, [c["user"] for c in cols[:4]], [c["item"] for c in cols[:4]], n_common)
    if both_folds:
        _report_cold(f"{source}_{target}", [cols[i]["user"] for i in (3, 4, 5, 0)],
                     [cols[i]["item"] for i in (3, 4, 5, 0)], n_common)
    user = np.concatenate([c["user"] for c in cols])
    item = np.concatenate([c["item"] for c in cols])
    n_target = sum(len(c["user"]) for c in cols[:3])
    domain = np.repeat(np.array([target, source]), [n_target, len(user) - n_target])
    fold = np.concatenate([np.full(len(c["user"]), f, np.int8) for c, (_, f) in zip(cols, parts)])
    # shared users keep their id; the others are numbered per domain and must not collide
    prefix = np.char.add(domain, ":")
    user_ids = np.where(user < n_common, user.astype(str), np.char.add(prefix, user.astype(str)))
    return from_columns(user_ids, np.char.add(prefix, item.astype(str)), np.ones(len(user), np.float32),
                        category=domain, category_names=(source, target), fold=fold, implicit=True,
                        source=f"cdrib/{pair}")


def _report_cold(pair: str, users: list[np.ndarray], items: list[np.ndarray], n_common: int) -> None:
    train, valid, test, source = users
    cold = np.union1d(valid, test)
    warm_in_target = int(np.isin(cold, train).sum())
    missing_in_source = int((~np.isin(cold, source)).sum())
    unseen = int((~np.isin(np.concatenate(items[1:3]), items[0])).sum())
    not_common = int((cold >= n_common).sum())
    log.info("cdrib/%s: %d common users; %d cold-start users (%d valid, %d test) with %d/%d valid/test rows; "
             "%d held-out items unseen in training", pair, n_common, len(cold), len(np.unique(valid)),
             len(np.unique(test)), len(valid), len(test), unseen)
    if warm_in_target or missing_in_source or not_common:
        # not the CDRIB construction: say so rather than evaluate a different protocol silently
        log.warning("cdrib/%s: of %d cold-start users, %d have CF-side training rows, %d have no DL-side rows, "
                    "%d are not common users", pair, len(cold), warm_in_target, missing_in_source, not_common)
