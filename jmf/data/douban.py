"""Douban Book / Music ratings (DTCDR, CIKM 2019; GA-DTCDR, IJCAI 2020).

``root/<domain>/ratings.dat``: ``user<TAB>item<TAB>rating`` (1-5), no header and no
timestamps.  User ids are shared by the domains (1,566 users rate in both); item ids are
per domain, so raw item ids become ``"<domain>:<id>"``.  Each domain is one category, in the
order of ``domains``.  ``douban_book/ratings.dat`` has no newline after its last line, so
``wc -l`` counts 96,040 lines for its 96,041 ratings; the reader does not depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jmf.data.interactions import Interactions, from_columns
from jmf.data.tabular import read_columns
from jmf.errors import DataError

log = logging.getLogger(__name__)

DOMAINS = ("douban_book", "douban_music")
FILE = "ratings.dat"


def load_douban(root: str | Path, domains: Sequence[str] = DOMAINS) -> Interactions:
    """Load Douban domains (raw: book 96,041 ratings, 2,110 users, 6,777 items; music 69,709, 1,672, 5,567).

    Args:
      root: folder holding one sub-folder per domain.
      domains: sub-folders to load; each becomes a category named after it.
    """
    root = Path(root)
    domains = tuple(domains)
    if not domains or len(set(domains)) != len(domains):
        raise DataError(f"data.domains: {list(domains)} must be non-empty and without repeats")
    parts = [read_columns(root / domain / FILE, ("user", "item", "rating")) for domain in domains]
    sizes = [len(p["user"]) for p in parts]
    domain = np.repeat(np.asarray(domains), sizes)
    item = np.char.add(np.char.add(domain, ":"), np.concatenate([p["item"] for p in parts]).astype(str))
    data = from_columns(np.concatenate([p["user"] for p in parts]), item,
                        np.concatenate([p["rating"] for p in parts]), category=domain, category_names=domains,
                        source=f"douban/{'+'.join(domains)}")
    per_domain = [set(np.unique(p["user"]).tolist()) for p in parts]
    log.info("douban: %s ratings; %d users in all of %s", dict(zip(domains, sizes)),
             len(set.intersection(*per_domain)), list(domains))
    return data
