"""The joint model's training plan for the engine: user-centric batches, drawn per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jmf.models.base import EpochPlan
from jmf.train.engine import Engine


def user_batches(engine: Engine, csr, dl_users: np.ndarray, rng: np.random.Generator, batch_size: int,
                 items_per_user: int, fit_terms: Sequence = (), negatives: int = 0) -> EpochPlan:
    """One epoch of user-centric batches: ``B`` users x ``m`` of their CF-side items.

    Drawn from ``rng`` (keyed by seed, phase and epoch); an epoch has as many pairs as the CF side has
    training rows, and its ``n_steps·B`` users are drawn by cycling over permutations of the warm
    users, so there is no ragged last batch.  ``dl_users``: the users whose DL-side sequences ``L_DL``
    draws from (those with at least two behaviours).

    ``fit_terms``: score terms inside the fit (``train_weight`` > 0): then the batch's ``negatives`` shared
    negatives are drawn here, every step's up front (``neg_rows [B, N]``, one copy per user so the batch shards
    over ``data``), and the terms' values of the pairs and negatives come with it (``prior_pos [B, m]``,
    ``prior_neg [B, N]``), so a resumed epoch sees the batches an uninterrupted one does.
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
    negs = rng.integers(0, csr.shape[1], (n_steps, negatives)).astype(np.int32) if fit_terms else None

    def batch(b: int) -> dict:
        sl = slice(b * B, (b + 1) * B)
        # users [B], items/values/weight [B, m], dl_users [B]; sharded over "data"
        out = {"users": users[sl], "items": items[sl], "values": values[sl], "weight": ones, "dl_users": dl_draw[sl]}
        if fit_terms:
            parts = [term.fit_scores(users[sl], items[sl], negs[b]) for term in fit_terms]
            out.update(neg_rows=np.broadcast_to(negs[b], (B, negatives)), prior_pos=sum(p for p, _ in parts),
                       prior_neg=sum(n for _, n in parts))
        return engine.put_batch(out)
    return EpochPlan(n_steps, batch, examples_per_step=B * m)


def target_batches(engine: Engine, blocks: list, item_start: np.ndarray, seq_ids: np.ndarray, dl_users: np.ndarray,
                   rng: np.random.Generator, batch_size: int, items_per_user: int) -> EpochPlan:
    """One epoch of ``model=jmf_map`` batches: every batch is one target category's ``B`` users x ``m`` of their
    items in it; a target gets as many batches as its training rows fill, and the batches of all targets come in
    a random order.  ``user_rows``: the rows of (user, target ``k``) in the user tables, ``k·U + u``.

    Args:
      blocks: per target, the ``[U, I_t]`` CSR of its training rows (columns local to the target).
      item_start: ``[T + 1]`` each target's first CF-side item index.
      seq_ids: ``[T]`` each target's category id in the sequences (hidden from the input of its batches).
    """
    B, m = batch_size, items_per_user
    n_users = blocks[0].shape[0]
    users, items, values, step_target = [], [], [], []
    for k, csr in enumerate(blocks):
        degree = np.diff(csr.indptr)
        warm = np.flatnonzero(degree > 0)
        if len(warm) == 0:
            continue
        n_steps = max(1, -(-csr.nnz // (B * m)))
        drawn = np.concatenate([rng.permutation(warm) for _ in range(-(-n_steps * B // len(warm)))])[:n_steps * B]
        picks = csr.indptr[drawn][:, None] + np.floor(rng.random((len(drawn), m)) * degree[drawn][:, None]).astype(
            np.int64)
        users.append(drawn)
        items.append(csr.indices[picks] + item_start[k])
        values.append(csr.data[picks])
        step_target += [k] * n_steps
    users = np.concatenate(users).astype(np.int32)
    items, values = np.concatenate(items).astype(np.int32), np.concatenate(values).astype(np.float32)
    order, step_target = rng.permutation(len(step_target)), np.asarray(step_target)
    dl_draw = (dl_users[rng.integers(0, len(dl_users), len(order) * B)] if len(dl_users)
               else np.zeros(len(order) * B, np.int32))
    ones = np.ones((B, m), np.float32)

    def batch(b: int) -> dict:
        j, k = order[b], step_target[order[b]]
        sl = slice(j * B, (j + 1) * B)
        full = lambda v: np.full(B, v, np.int32)   # noqa: E731 -- per-row copies, so the batch shards over "data"
        return engine.put_batch({"users": users[sl], "user_rows": users[sl] + k * n_users, "items": items[sl],
                                 "values": values[sl], "weight": ones,
                                 "dl_users": dl_draw[b * B:(b + 1) * B], "target": full(seq_ids[k]),
                                 "target_index": full(k), "neg_lo": full(item_start[k]),
                                 "neg_n": full(item_start[k + 1] - item_start[k])})
    return EpochPlan(len(order), batch, examples_per_step=B * m)
