"""Graph encoder: LightGCN-style propagation over the DL-side user-item graph, read inductively per user.

The DL-side items' embeddings ``i^(0) = E_item + E_cat`` propagate through the users of the DL-side training
graph ``Â = D^-½ A D^-½`` (``A`` the binary ``[U, I_DL]`` DL-side matrix): ``i^(k+1) = Âᵀ Â i^(k)`` (item ->
user -> item, no weights or activations, as LightGCN).  A user is represented from their own
DL-side history only -- ``r_k = Σ_{j ∈ x_u} i^(k)_j / √(|x_u| d_j)``, the LightGCN user row ``Â i^(k)`` -- and
``h_u = W · mean_k r_k + b``.  There is no free user table, so the encoder is inductive: a user who
was not in training is encoded from their DL-side behaviours (``jmf.load(...).recommend_new``), and a
cold-start user gets the graph's view of their DL-side items, not a bag of independent embeddings.

The graph is the split's DL-side training matrix, handed to every call whole (``shared_keys``: built once
per fit by :meth:`GraphEncoder.user_inputs`).  Ratings are not read (``ratings`` is accepted for the
sequence encoders' interface and ignored).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx

from jmf.models.graph.adjacency import bipartite_edges, to_items, to_users
from jmf.errors import ConfigError


class GraphEncoder(nnx.Module):
    """See the module docstring.

    Args:
      n_items, n_categories, max_len: DL-side sizes (supplied at run time; ``max_len`` unused).
      embed_dim: item embedding size; layers: item -> user -> item propagations ``K`` (0: no graph,
        the user is the degree-normalised sum of their items' embeddings); out_dim: size of ``h_u``.
    """

    input_keys = ()
    shared_keys = ("o2_graph", "o2_item_degree", "o2_item_category")

    def __init__(self, n_items: int, n_categories: int, max_len: int, embed_dim: int = 64, layers: int = 1,
                 out_dim: int = 64, ratings: bool = False, *, rngs: nnx.Rngs):
        if layers < 0:
            raise ConfigError(f"model.encoder.layers: {layers} must be >= 0")
        init = nnx.initializers.normal(0.1)
        self.items = nnx.Embed(n_items + 1, embed_dim, embedding_init=init, rngs=rngs)
        self.categories = nnx.Embed(n_categories + 1, embed_dim, embedding_init=init, rngs=rngs)
        self.out = nnx.Linear(embed_dim, out_dim, rngs=rngs)
        self.layers, self.out_dim = layers, out_dim

    @staticmethod
    def graph_inputs(o2: sp.spmatrix, item_category: np.ndarray) -> dict:
        """The shared inputs of the binary ``[U, I_DL]`` DL-side matrix and the DL-side items' category
        positions + 1."""
        degree = np.diff(sp.csr_matrix(o2).tocsc().indptr).astype(np.float32)
        return {"o2_graph": bipartite_edges(o2, "symmetric"), "o2_item_degree": jnp.asarray(degree),
                "o2_item_category": jnp.asarray(item_category, jnp.int32)}

    def user_inputs(self, split, seqs) -> dict:
        """The DL-side training graph of ``split`` (the joint model calls this once per fit)."""
        positions = {c: k + 1 for k, c in enumerate(split.partition.dl_categories)}
        categories = np.array([positions[c] for c in split.data.item_category[split.dl_items]], np.int32)
        return self.graph_inputs(split.dl, categories)

    def item_layers(self, o2_graph, o2_item_category: jax.Array) -> list[jax.Array]:
        """``[i^(0), ..., i^(K)]``, each ``[I_DL, e]`` (row ``j`` is DL-side item ``j``; no pad row)."""
        table = self.items.embedding[...][1:] + self.categories(o2_item_category)
        out = [table]
        for _ in range(self.layers):
            users = to_users(o2_graph, table)
            table = to_items(o2_graph, users)
            out.append(table)
        return out

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array, values: jax.Array | None = None,
                 *, o2_graph=None, o2_item_degree: jax.Array | None = None,
                 o2_item_category: jax.Array | None = None) -> jax.Array:
        """``[B, L]`` DL-side history (item ids + 1, 0 = pad) -> ``[B, out_dim]``."""
        if o2_graph is None:
            raise ConfigError("model/encoder=graph needs the DL-side graph (its shared inputs; see "
                              "GraphEncoder.user_inputs)")
        index = jnp.maximum(items - 1, 0)                                            # [B, L]
        length = jnp.maximum(mask.sum(1, keepdims=True), 1).astype(jnp.float32)     # [B, 1]
        weight = jnp.where(mask, jax.lax.rsqrt(length * jnp.maximum(o2_item_degree[index], 1.0)), 0.0)
        layers = self.item_layers(o2_graph, o2_item_category)
        reps = [jnp.einsum("bl,ble->be", weight, table[index]) for table in layers]  # r_k [B, e]
        return self.out(sum(reps) / len(reps))                                        # [B, out_dim]
