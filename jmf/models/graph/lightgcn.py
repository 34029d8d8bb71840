"""LightGCN (He et al., SIGIR 2020): linear propagation on the normalised user-item graph, layers averaged.

``E^{k+1} = D^-½ A D^-½ E^k`` over the bipartite graph (no weights, activations or self loops), the
final embedding ``(E^0 + ... + E^K)/(K+1)``, the score ``e_u·e_i``, trained by BPR with one uniform
negative per positive and L2 on the batch's layer-0 rows, ``decay·½(‖e_u‖² + ‖e_i‖² + ‖e_j‖²)/B``.

``graph``: ``target`` is the single-domain baseline (CF side only); ``merged`` propagates over the items of
both sides together (DL-side items are extra nodes), so a user with no CF-side history is still reached through
their DL-side items and the model transfers across categories.  Only CF-side items are ranked.

Defaults follow the authors' PyTorch port (gusye1234/LightGCN-PyTorch ``parse.py``: dim 64, 3 layers,
lr 1e-3, decay 1e-4, batch 2048, N(0, 0.1²) init).  Differences, on purpose:

* batches are uniform training pairs (a permutation of CF-side rows per epoch; ``merged`` adds DL-side rows),
  where the port draws a random user then one of its items; the negative is redrawn up to 5 times
  when it is a training item of the user (the port redraws until it is not);
* epochs are selected on jmf's validation fold (``patience`` validations without improvement stop
  the fit), where the authors report the best test evaluation;
* the merged graph is jmf's (the papers' LightGCN is single-domain).
"""

from __future__ import annotations

import jax
import numpy as np
import scipy.sparse as sp

from jmf.data.split import SplitData
from jmf.models.graph.adjacency import bipartite_edges, propagate
from jmf.models.graph.common import GraphModel, Triples
from jmf.errors import ConfigError


class LightGCN(GraphModel):
    """LightGCN (see the module docstring).

    Args:
      layers: propagation layers ``K``.
      decay: L2 weight on the batch's layer-0 rows.
      init_scale: std of the normal initialisation.
      graph: ``target`` (CF side only) or ``merged`` (items of both sides).
      (the rest: :class:`~jmf.models.graph.common.GraphModel`)
    """

    name = "lightgcn"

    def __init__(self, dim: int = 64, layers: int = 3, epochs: int = 100, batch_size: int = 2048, lr: float = 1e-3,
                 decay: float = 1e-4, init_scale: float = 0.1, graph: str = "target", patience: int = 5,
                 eval_every: int = 1, monitor: str = "ndcg@10", eval_batch_size: int = 512):
        self._init_base(dim, epochs, batch_size, lr, 0.0, patience, eval_every, monitor, eval_batch_size)
        if graph not in ("target", "merged"):
            raise ConfigError(f"model.graph: {graph!r} is not target|merged")
        if layers < 0:
            raise ConfigError(f"model.layers: {layers} must be >= 0")
        self.layers, self.decay, self.init_scale, self.graph = layers, decay, init_scale, graph

    def prepare(self, split: SplitData) -> dict:
        matrix = split.train if self.graph == "target" else sp.hstack([split.train, split.dl]).tocsr()
        self.n_cf_items = split.train.shape[1]
        self.triples = Triples(matrix)
        self.shape = matrix.shape
        return {"edges": bipartite_edges(matrix, "symmetric")}

    def init_params(self, split: SplitData, key: jax.Array) -> dict:
        key_u, key_i = jax.random.split(key)
        return {"users": self.init_scale * jax.random.normal(key_u, (self.shape[0], self.dim)),
                "items": self.init_scale * jax.random.normal(key_i, (self.shape[1], self.dim))}

    def propagate(self, params: dict, data: dict) -> tuple[jax.Array, jax.Array]:
        """``([U, d], [I, d])``: the mean of ``E^0 .. E^K``."""
        users, items = params["users"], params["items"]
        sum_u, sum_i = users, items
        for _ in range(self.layers):
            users, items = propagate(data["edges"], users, items)
            sum_u, sum_i = sum_u + users, sum_i + items
        return sum_u / (self.layers + 1), sum_i / (self.layers + 1)

    def loss(self, params, data, batch, key):
        users, items = self.propagate(params, data)
        u, i, j = batch["users"], batch["items"], batch["negatives"]
        diff = (users[u] * items[i]).sum(-1) - (users[u] * items[j]).sum(-1)
        bpr = jax.nn.softplus(-diff).mean()
        reg = 0.5 * ((params["users"][u] ** 2).sum() + (params["items"][i] ** 2).sum()
                     + (params["items"][j] ** 2).sum()) / u.shape[0]
        return bpr + self.decay * reg, {"bpr": bpr, "reg": reg}

    def embed(self, params, data):
        users, items = self.propagate(params, data)
        return users, items[:self.n_cf_items]

    def fold_tables(self):
        """CF-side items, and on the merged graph the DL-side items too (same space: one graph)."""
        if self.graph == "target":
            return self.item_table, None
        items = jax.jit(self.propagate)(self.params, self.data)[1]
        return items[:self.n_cf_items], items[self.n_cf_items:]

    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.triples) // self.batch_size))

    def sample(self, rng: np.random.Generator, n_steps: int, epoch: int) -> dict[str, np.ndarray]:
        t, B = self.triples, self.batch_size
        order = rng.permutation(len(t))
        order = np.concatenate([order, order[:n_steps * B - len(order)]]) if len(order) < n_steps * B else order
        order = order[:n_steps * B]
        users, items = t.users[order], t.items[order]
        neg = t.negatives(users, (len(users),), rng)
        shape = (n_steps, B)
        return {"users": users.reshape(shape).astype(np.int32), "items": items.reshape(shape).astype(np.int32),
                "negatives": neg.reshape(shape).astype(np.int32)}
