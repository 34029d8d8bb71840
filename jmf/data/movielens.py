"""MovieLens-100k: RecBole atomic files (``ml-100k.inter``/``.item``) or GroupLens ``u.data``/``u.item``.

Genres are the categories (19; "unknown" included).  A movie carries several genres;
``multi_category`` picks one (``first``: the first genre in the canonical GroupLens order).
Titles are kept in ``item_titles`` for the text encoders.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from jmf.data.interactions import Interactions, from_columns
from jmf.data.sources import require_file
from jmf.errors import DataError

log = logging.getLogger(__name__)

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c9a1bc2"

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file; ``name:type`` headers become plain ``name`` columns."""
    path = require_file(path)
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def _require_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def load_ml100k(root: str | Path, multi_category: str = "first", **_: object) -> Interactions:
    """Load MovieLens-100k from ``root`` (RecBole atomic or GroupLens original format)."""
    root = Path(root)
    if (root / "ml-100k.inter").exists() or not (root / "u.data").exists():
        inter_path, item_path = root / "ml-100k.inter", root / "ml-100k.item"
        inter = read_atomic(inter_path)
        _require_columns(inter, ["user_id", "item_id", "rating", "timestamp"], inter_path)
        items = read_atomic(item_path)
        _require_columns(items, ["item_id", "movie_title", "class"], item_path)
        genres = {iid: [GENRES.index(g) if g in GENRES else _unknown_genre(g, item_path) for g in cls.split()]
                  or [0] for iid, cls in zip(items["item_id"], items["class"])}
        titles = dict(zip(items["item_id"], items["movie_title"]))
        user, item, rating, ts = inter["user_id"], inter["item_id"], inter["rating"], inter["timestamp"]
        source = str(inter_path)
    else:
        data_path, item_path = root / "u.data", require_file(root / "u.item")
        inter = pd.read_csv(require_file(data_path), sep="\t", header=None, dtype=str,
                            names=["user_id", "item_id", "rating", "timestamp"])
        items = pd.read_csv(item_path, sep="|", header=None, dtype=str, encoding="latin-1")
        if items.shape[1] != 5 + len(GENRES):
            raise DataError(f"{item_path}: expected {5 + len(GENRES)} '|'-separated fields, found {items.shape[1]}")
        flags = items.iloc[:, 5:].astype(int).to_numpy()
        genres = {iid: list(np.flatnonzero(f)) or [0] for iid, f in zip(items[0], flags)}
        titles = dict(zip(items[0], items[1].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)))
        user, item, rating, ts = inter["user_id"], inter["item_id"], inter["rating"], inter["timestamp"]
        source = str(data_path)
    unknown_items = set(item) - set(genres)
    if unknown_items:
        raise DataError(f"{source}: {len(unknown_items)} rated items are missing from the item file, "
                         f"e.g. {sorted(unknown_items)[:3]}")
    data = from_columns(user.to_numpy(), item.to_numpy(), rating.to_numpy(), timestamp=ts.to_numpy(),
                        item_category={k: [GENRES[g] for g in v] for k, v in genres.items()},
                        category_names=GENRES, multi_category=multi_category, source=source)
    return _with_titles(data, titles)


def _unknown_genre(genre: str, path: Path) -> int:
    raise DataError(f"{path}: field 'class' holds unknown genre {genre!r}")


def _with_titles(data: Interactions, titles: dict) -> Interactions:
    return dataclasses.replace(data, item_titles=np.array([titles.get(i, "") for i in data.item_ids], dtype=object))
