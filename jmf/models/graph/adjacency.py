"""Normalised user-item bipartite graphs as edge lists, and propagation over them by segment sums.

A graph never becomes a dense ``N x N`` matrix: it is ``E`` edges ``(user, item, weight)`` on the
device, and one propagation step is two gathers and two ``segment_sum`` scatters, ``O(E·d)``:

    users_out[u] = Σ_{i ∈ N(u)} w_ui · items_in[i],    items_out[i] = Σ_{u ∈ N(i)} w_ui · users_in[u]

with the symmetric normalisation ``w_ui = 1/√(d_u d_i)`` of ``D^-½ A D^-½`` (LightGCN, BiTGCF) or
the row normalisation ``w = 1/d`` of ``D^-1 A`` (DisenCDR's and CDRIB's VBGE).  Users or items
without edges get zero.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


class Edges(NamedTuple):
    """``E`` edges of a bipartite graph (a pytree: pass it to jitted functions as an argument)."""

    users: jax.Array       # [E] int32, sorted
    items: jax.Array       # [E] int32
    to_user: jax.Array     # [E] float32 weight of item -> user messages
    to_item: jax.Array     # [E] float32 weight of user -> item messages


def bipartite_edges(matrix: sp.spmatrix, norm: str = "symmetric") -> Edges:
    """Edges of the binary user x item ``matrix``.

    Args:
      norm: ``symmetric`` (``1/√(d_u d_i)`` both ways: ``D^-½ A D^-½``) or ``row`` (a node averages its
        neighbours: ``1/d_u`` into users, ``1/d_i`` into items: ``D^-1 A`` per side).
    """
    coo = (sp.csr_matrix(matrix) != 0).astype(np.float32).tocoo()
    order = np.lexsort((coo.col, coo.row))
    rows, cols = coo.row[order].astype(np.int32), coo.col[order].astype(np.int32)
    d_user = np.bincount(rows, minlength=matrix.shape[0]).astype(np.float64)
    d_item = np.bincount(cols, minlength=matrix.shape[1]).astype(np.float64)
    if norm == "symmetric":
        w = 1.0 / np.sqrt(d_user[rows] * d_item[cols])
        to_user = to_item = w
    elif norm == "row":
        to_user, to_item = 1.0 / d_user[rows], 1.0 / d_item[cols]
    else:
        raise ValueError(f"graph normalisation {norm!r} is not symmetric|row")
    return Edges(jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(to_user, jnp.float32),
                 jnp.asarray(to_item, jnp.float32))


def to_users(edges: Edges, item_emb: jax.Array, n_users: int) -> jax.Array:
    """``[I, d]`` -> ``[U, d]``: each user's weighted sum of its items' rows."""
    return jax.ops.segment_sum(item_emb[edges.items] * edges.to_user[:, None], edges.users, num_segments=n_users,
                               indices_are_sorted=True)


def to_items(edges: Edges, user_emb: jax.Array, n_items: int) -> jax.Array:
    """``[U, d]`` -> ``[I, d]``: each item's weighted sum of its users' rows."""
    return jax.ops.segment_sum(user_emb[edges.users] * edges.to_item[:, None], edges.items, num_segments=n_items)


def propagate(edges: Edges, user_emb: jax.Array, item_emb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step of ``Â [U+I, U+I]`` on the stacked embeddings: ``(Â E)_users, (Â E)_items``."""
    return to_users(edges, item_emb, user_emb.shape[0]), to_items(edges, user_emb, item_emb.shape[0])
