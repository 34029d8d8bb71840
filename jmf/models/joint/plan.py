"""The joint model's training plan for the engine: user-centric batches, drawn per epoch."""

from __future__ import annotations

import numpy as np

from jmf.models.base import EpochPlan
from jmf.train.engine import Engine


def user_batches(engine: Engine, csr, dl_users: np.ndarray, rng: np.random.Generator, batch_size: int,
                 items_per_user: int) -> EpochPlan:
    """One epoch of user-centric batches: ``B`` users x ``m`` of their CF-side items.

    Drawn from ``rng`` (keyed by seed, phase and epoch); an epoch has as many pairs as the CF side has
    training rows, and its ``n_steps·B`` users are drawn by cycling over permutations of the warm
    users, so there is no ragged last batch.  ``dl_users``: the users whose DL-side sequences ``L_DL``
    draws from (those with at least two behaviours).
    """
    B, m = batch_size, items_per_user
    degree = np.diff(csr.indptr)
    warm = np.flatnonzero(degree > 0)
    n_steps = max(1, -(-csr.nnz // (B * m)))
    users = np.concatenate([rng.permutation(warm) for _ in range(-(-n_steps * B // len(warm)))])[:n_steps * B]
    picks = csr.indptr[users][:, None] + np.floor(rng.random((len(users), m)) * degree[users][:, None]).astype(
        np.int64)
    items, values = csr.indices[picks].astype(np.int32), csr.data[picks].astype(np.float32)
    dl_draw = (dl_users[rng.integers(0, len(dl_users), n_steps * B)] if len(dl_users)
               else np.zeros(n_steps * B, np.int32))
    users = users.astype(np.int32)
    ones = np.ones((B, m), np.float32)

    def batch(b: int) -> dict:
        sl = slice(b * B, (b + 1) * B)
        # users [B], items/values/weight [B, m], dl_users [B]; sharded over "data"
        return engine.put_batch({"users": users[sl], "items": items[sl], "values": values[sl], "weight": ones,
                                 "dl_users": dl_draw[sl]})
    return EpochPlan(n_steps, batch, examples_per_step=B * m)
