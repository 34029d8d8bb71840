"""Small hand-built splits shared by test files (tests/ is on sys.path: tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jmf.data.interactions import Interactions


def twin_split():
    """DL item a is held by users 0, 1, 2 and b by 3, 4; CF item X by users 1, 2 in training, Y by 1, 3, Z by 5.
    Test pairs (0, X), (0, Z), (4, Y), (4, Z)."""
    from jmf.data.split import Partition, SplitData

    dl = sp.csr_matrix(np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 0]], np.float32))
    train = sp.csr_matrix(np.array([[0, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], np.float32))
    test = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 1], [0, 0, 0]], np.float32))
    data = Interactions(user=np.zeros(0, np.int32), item=np.zeros(0, np.int32), value=np.zeros(0, np.float32),
                        timestamp=None, item_category=np.array([0, 0, 0, 1, 1]), user_ids=np.arange(6).astype(str),
                        item_ids=np.array(["X", "Y", "Z", "a", "b"]), category_names=("cf", "dl"))
    return SplitData(data=data, partition=Partition(np.array([0]), np.array([1])), cf_items=np.arange(3),
                     dl_items=np.arange(3, 5), train=train, valid=sp.csr_matrix(train.shape, dtype=np.float32),
                     test=test, dl=dl, train_rows=np.zeros(0, np.int64))
