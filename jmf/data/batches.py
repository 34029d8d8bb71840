"""Host CSR -> fixed-shape device arrays: DL-side sequences and CF-side category targets.

The host/device boundary (design.md#conventions): everything here returns NumPy arrays of fixed,
documented shape; the trainer places them with ``jax.device_put`` once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jmf.data.split import SplitData


class Sequences(NamedTuple):
    """Each user's last ``L`` DL-side behaviours, oldest first, right-padded.

    ``items`` are DL-side local indices + 1 (0 = pad); ``categories`` are DL-side category
    positions + 1 (0 = pad); ``values`` are the ratings (0 on pads).
    """

    items: np.ndarray       # [U, L] int32
    categories: np.ndarray  # [U, L] int32
    values: np.ndarray      # [U, L] float32
    mask: np.ndarray        # [U, L] bool


def dl_sequences(split: SplitData, max_len: int) -> Sequences:
    """Build :class:`Sequences` from the DL-side rows (time order when timestamps exist).

    A user with more than ``max_len`` DL-side rows keeps the latest ``max_len``.
    """
    data = split.data
    local = np.full(data.n_items, -1, np.int64)
    local[split.dl_items] = np.arange(len(split.dl_items))
    cat_pos = np.full(data.n_categories, -1, np.int64)
    cat_pos[split.partition.dl_categories] = np.arange(len(split.partition.dl_categories))
    rows = split.dl_rows  # DL-side training rows only (a predefined split may hold some out)
    time = data.timestamp[rows] if data.timestamp is not None else rows
    rows = rows[np.lexsort((rows, time, data.user[rows]))]  # by user, then time, then file order
    users = data.user[rows]
    counts = np.bincount(users, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_from_end = (starts[users] + counts[users] - 1) - np.arange(len(rows))  # 0 = latest
    keep = rank_from_end < max_len
    rows, users, rank_from_end = rows[keep], users[keep], rank_from_end[keep]
    n_kept = np.minimum(counts, max_len)
    position = n_kept[users] - 1 - rank_from_end  # oldest kept at 0
    shape = (data.n_users, max_len)
    items = np.zeros(shape, np.int32)
    cats = np.zeros(shape, np.int32)
    values = np.zeros(shape, np.float32)
    items[users, position] = local[data.item[rows]] + 1
    cats[users, position] = cat_pos[data.item_category[data.item[rows]]] + 1
    values[users, position] = data.value[rows]
    return Sequences(items, cats, values, items > 0)


def cf_item_categories(split: SplitData) -> np.ndarray:
    """``[I_CF]`` int32: each CF-side item's category as an index ``0..K-1`` into
    ``split.partition.cf_categories`` (the columns of :func:`cf_category_distribution`)."""
    pos = np.full(split.data.n_categories, -1, np.int64)
    pos[split.partition.cf_categories] = np.arange(len(split.partition.cf_categories))
    return pos[split.data.item_category[split.cf_items]].astype(np.int32)


def cf_category_distribution(split: SplitData) -> np.ndarray:
    """``[U, K]`` float32: each user's CF-side training interactions as a distribution over the
    K CF-side categories (rows of users with none are zero) — the target of ``I_u``."""
    data = split.data
    coo = split.train.tocoo()
    cat = cf_item_categories(split)[coo.col]
    out = np.zeros((data.n_users, len(split.partition.cf_categories)), np.float32)
    np.add.at(out, (coo.row, cat), 1.0)
    total = out.sum(1, keepdims=True)
    return np.divide(out, total, out=out, where=total > 0)
