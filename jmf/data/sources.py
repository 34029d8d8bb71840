"""Where each real dataset lives: local paths with clear errors, and the public download addresses.

Tests and CI never download: loaders read from ``data.root`` (default
``$JMF_DATA_DIR/<folder>``).  :data:`SOURCES` records, for users whose machines are online,
the canonical address of each dataset and the SHA-256 of the archive it was taken from;
:func:`fetch` downloads and verifies one (not exercised in tests).
"""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from jmf.errors import DataError, DataFileError


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str | None
    folder: str
    note: str = ""


SOURCES: dict[str, Source] = {
    "ml100k": Source("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                     "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c9a1bc2", "ml-100k",
                     "GroupLens original; RecBole's atomic copy ships in the recbole 1.2.1 wheel"),
    "ciao": Source("https://raw.githubusercontent.com/yushundong/Graph-Mining-Fairness-Data/main/dataset/"
                   "Epinion%26Ciao/ciao/rating_with_timestamp.mat", None, "ciao"),
    "amazon_cdr": Source("https://github.com/cjx96/DisenCDR/tree/4e6d60b/dataset", None, "amazon-cdr"),
    "amazon_cdr_negatives": Source("https://github.com/sunshinelium/Bi-TGCF/tree/4833c1f/Data", None,
                                   "amazon-cdr-negatives"),
    "cdrib": Source("https://github.com/cjx96/CDRIB/tree/bd98945/dataset", None, "cdrib"),
    "douban": Source("https://github.com/fengzhu1/GA-DTCDR/tree/11a1dc6/Data", None, "douban"),
}


def require_file(path: str | Path) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming it."""
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path} is a directory; a data file is needed there (check data.path / data.root)")
    if not path.is_file():
        hint = (" (set JMF_DATA_DIR to the folder holding the datasets -- the tests use ../shared/data -- "
                "or data.root)") if not path.parent.exists() else ""
        raise DataFileError(f"data file not found: {path}{hint}")
    return path


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, dest: str | Path) -> Path:
    """Download dataset ``name`` to ``dest`` and verify its checksum (online users only)."""
    if name not in SOURCES:
        raise DataError(f"data: unknown dataset {name!r} (known: {sorted(SOURCES)})")
    src = SOURCES[name]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(src.url, dest)  # noqa: S310 - an explicit user action
    if src.sha256 and sha256(dest) != src.sha256:
        raise DataError(f"{dest}: checksum mismatch for {name} (expected {src.sha256})")
    return dest
