"""How often is an Amazon test item "cross-listed": held by its user in the other domain under another id?

    python benchmarks/cross_listed.py        # the four DisenCDR directions and the two CDRIB ones (~30 s)

In the DisenCDR Amazon pairs every user is in both domains and item ids are per domain, so a product
listed in both categories (say, a running shoe in Sport and in Clothing) would be two items, and a user who
reviewed it would have one row in each domain.  The files carry no product ids, so this cannot be checked
directly; the counts below measure its footprint.  For each test pair ``(u, i)`` of a direction
(``test.txt`` of the target, ``train.txt`` of both), this counts the pairs where ``u``'s source
training history holds an item ``j`` whose *other* holders look like ``i``'s holders in the target's
training rows:

* ``exact twin``: every other holder of ``j`` holds ``i`` and every holder of ``i`` holds ``j``
  (``c_ji = n_j - 1 = n_i >= 1``, ``c`` the source -> target co-occurrence over the training rows);
* ``half twin``: ``c_ji >= 1`` and at least half of each side (``c_ji >= (n_j - 1)/2`` and ``>= n_i/2``).

Only training rows are read (the test item of ``u`` adds nothing to ``c``), so a model may use the
same signal legitimately: it is what an item co-occurrence term (JMF's ``model/terms=[neighbour]``) or
propagation over the merged graph (``lightgcn (merged)``) can pick up, and what a user-level transfer
through a ``dim``-wide vector smooths away.  ``items with an exact twin``: target items whose training
holders (>= 2) are exactly the holders of one source item.

The CDRIB pairs (``cdrib/``, cold-start users: their target rows are all held out) are counted the
same way over the users of both domains only (ids below ``n_common``; the other ids are different
people in each domain, :mod:`jmf.data.cdrib`), with ``test.txt`` as the test pairs.

Writes ``benchmarks/results/cross_listed.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from common import data_dir, markdown_table, write_results

DIRECTIONS = (("sport", "cloth"), ("cloth", "sport"), ("phone", "electronic"), ("electronic", "phone"))
CDRIB_DIRECTIONS = (("sport", "cloth"), ("cloth", "sport"))


def rows_of(path) -> np.ndarray:
    """``[n, 2]`` int64 (user, item) of one DisenCDR file (``user<TAB>item<TAB>1`` lines)."""
    return np.loadtxt(path, dtype=np.int64, usecols=(0, 1), ndmin=2)


def binary(pairs: np.ndarray, n_users: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                           shape=(n_users, int(pairs[:, 1].max()) + 1))
    matrix.data[:] = 1.0                      # a repeated row counts once
    return matrix


def direction(root: Path, target: str, source: str, shared: int | None = None) -> dict:
    """The counts of one direction (see the module docstring); ``shared``: only users below it link the domains."""
    train, test = rows_of(root / f"{target}_{source}" / "train.txt"), rows_of(root / f"{target}_{source}" / "test.txt")
    other = rows_of(root / f"{source}_{target}" / "train.txt")
    if shared is not None:
        train, other = train[train[:, 0] < shared], other[other[:, 0] < shared]
    n_users = int(max(train[:, 0].max(), test[:, 0].max(), other[:, 0].max())) + 1
    Y, X = binary(train, n_users), binary(other, n_users)
    co = (X.T @ Y).tocsc()                                        # [I_S, I_T] co-holders
    n_src, n_tgt = np.asarray(X.sum(0)).ravel(), np.asarray(Y.sum(0)).ravel()
    exact = half = 0
    for user, item in test:
        held = X.indices[X.indptr[user]:X.indptr[user + 1]]
        c, others = np.asarray(co[held, item].todense()).ravel(), n_src[held] - 1
        known = c >= 1
        exact += bool(np.any(known & (c == others) & (c == n_tgt[item])))
        half += bool(np.any(known & (c >= 0.5 * others) & (c >= 0.5 * n_tgt[item])))
    coo = co.tocoo()
    twins = (coo.data == n_src[coo.row]) & (coo.data == n_tgt[coo.col]) & (coo.data >= 2)
    return {"data": root.name, "direction": f"{source} -> {target}", "test pairs": len(test),
            "exact twin": exact, "exact twin %": 100.0 * exact / len(test),
            "half twin": half, "half twin %": 100.0 * half / len(test),
            "target items": Y.shape[1], "items with an exact twin": len(set(coo.col[twins].tolist()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="the amazon-cdr folder (default: $JMF_DATA_DIR/amazon-cdr)")
    args = parser.parse_args()
    root = Path(args.data) if args.data else data_dir() / "amazon-cdr"
    rows = [direction(root, target, source) for target, source in DIRECTIONS]
    cdrib = root.parent / "cdrib"
    if cdrib.exists():
        from jmf.data.cdrib import common_users
        rows += [direction(cdrib, target, source, common_users(cdrib / f"{target}_{source}"))
                 for target, source in CDRIB_DIRECTIONS]
    write_results("cross_listed", markdown_table(rows, digits=1), rows)


if __name__ == "__main__":
    main()
