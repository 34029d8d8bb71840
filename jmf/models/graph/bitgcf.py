"""BiTGCF (Liu et al., CIKM 2020): graph collaborative filtering in each domain, with the shared users'
embeddings exchanged between the two domains' graphs at every layer.

Each domain ``d`` (the DL side = source ``s``, the CF side = target ``t``) has its own user and item tables
and its own graph ``Â_d = D̃^-1 (A_d + I)`` (row-normalised, with self loops).  A layer is
``S = Â_d E``, ``E' = S + E ⊙ S`` (message dropout in training), then the *transfer* mixes the user
rows of the two domains:

    lap = l_s U_s + l_t U_t,     l_d(u) = deg_d(u) / (deg_s(u) + deg_t(u))
    U_s' = (lap + λ_s U_s + (1 − λ_s) U_t) / 2,    U_t' = (lap + (1 − λ_t) U_s + λ_t U_t) / 2

The final embedding concatenates ``E^0`` and the L2-normalised outputs of every layer; the score is
``e_u·e_i``.  Each domain is trained by a sigmoid cross-entropy on every positive and ``negatives``
uniform negatives, plus ``decay·½(‖e_u‖² + ‖e_i‖²)/B`` on the batch's final embeddings; the loss
is the sum of the two domains'.  A user with no target history (cold start) is still reached: the
transfer gives its target rows the source rows' information.

Defaults follow the authors' code (sunshinelium/Bi-TGCF ``parser.py``: dim 64, 3 layers, lr 1e-3,
batch 1024, decay 1e-5, λ_s = λ_t = 0.8, 4 negatives, message dropout 0.1, concat aggregation,
transfer at every layer, Xavier-uniform initialisation).  Differences, on purpose:

* one optimiser over both domains' losses at every step, with batches drawn from both domains in
  equal numbers of positives (an epoch is as many positives as the target has training rows): the
  authors' epoch trains the larger domain's extra batches alone with a per-domain Adam first;
* early stopping on jmf's validation fold (``patience`` validations); the authors stop when both
  domains' test HR@10 stalls for 5 epochs and report each domain's best test epoch;
* negatives are redrawn up to 5 times when they are training items of the user (the authors' redraw
  until they are not).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jmf.data.split import SplitData, dl_side_missing
from jmf.models.graph.adjacency import bipartite_edges, to_items, to_users
from jmf.models.graph.common import GraphModel, Triples, dropout
from jmf.errors import ConfigError


class BiTGCF(GraphModel):
    """BiTGCF (see the module docstring).

    Args:
      layers: propagation layers.  lambda_s, lambda_t: the transfer's own-domain weights.
      negatives: uniform negatives per positive.  decay: L2 weight on the batch's final embeddings.
      dropout: message dropout after each layer (training).
      (the rest: :class:`~jmf.models.graph.common.GraphModel`; ``batch_size`` counts positives per domain
      and step, each with its ``negatives``: 204 x 5 = 1020 rows, the authors' 1024 instances)
    """

    name = "bitgcf"

    def __init__(self, dim: int = 64, layers: int = 3, epochs: int = 100, batch_size: int = 204, lr: float = 1e-3,
                 decay: float = 1e-5, lambda_s: float = 0.8, lambda_t: float = 0.8, negatives: int = 4,
                 dropout: float = 0.1, patience: int = 5, eval_every: int = 1, monitor: str = "ndcg@10",
                 eval_batch_size: int = 512):
        self._init_base(dim, epochs, batch_size, lr, 0.0, patience, eval_every, monitor, eval_batch_size)
        if not (0 <= lambda_s <= 1 and 0 <= lambda_t <= 1):
            raise ConfigError(f"model.lambda_s / model.lambda_t: {lambda_s} / {lambda_t} must be in [0, 1]")
        if negatives < 1 or layers < 1 or not 0 <= dropout < 1:
            raise ConfigError(f"model.negatives / layers / dropout: {negatives} / {layers} / {dropout} must be "
                             ">= 1 / >= 1 / in [0, 1)")
        self.layers, self.decay, self.negatives, self.dropout = layers, decay, negatives, dropout
        self.lambda_s, self.lambda_t = lambda_s, lambda_t

    def prepare(self, split: SplitData) -> dict:
        if split.dl.nnz == 0:
            raise ConfigError(dl_side_missing(split.data, split.partition, "model=bitgcf"))
        self.triples = {"t": Triples(split.train), "s": Triples(split.dl)}
        deg_s = np.diff(split.dl.tocsr().indptr).astype(np.float64)
        deg_t = np.diff(split.train.tocsr().indptr).astype(np.float64)
        total = deg_s + deg_t
        share_s = np.where(total > 0, deg_s / np.maximum(total, 1.0), 0.5)
        return {"t": _self_loop_graph(split.train), "s": _self_loop_graph(split.dl),
                "share_s": jnp.asarray(share_s, jnp.float32)}

    def init_params(self, split: SplitData, key: jax.Array) -> dict:
        keys = jax.random.split(key, 4)
        shapes = {"su": (split.n_users, self.dim), "si": (split.dl.shape[1], self.dim),
                  "tu": (split.n_users, self.dim), "ti": (split.train.shape[1], self.dim)}
        return {name: _xavier(k, shape) for k, (name, shape) in zip(keys, shapes.items())}

    def layers_of(self, params: dict, data: dict, key: jax.Array | None) -> dict[str, list[jax.Array]]:
        """Every layer's output ``{su, si, tu, ti: [E^0, ..., E^K]}`` (``key``: message dropout, or None)."""
        emb = dict(params)
        out = {k: [v] for k, v in emb.items()}
        share_s = data["share_s"][:, None]
        for layer in range(self.layers):
            for d in ("s", "t"):
                users, items = _gcf(data[d], emb[f"{d}u"], emb[f"{d}i"])
                if key is not None and self.dropout:
                    key, k_u, k_i = jax.random.split(key, 3)
                    users, items = dropout(k_u, users, self.dropout), dropout(k_i, items, self.dropout)
                emb[f"{d}u"], emb[f"{d}i"] = users, items
            lap = share_s * emb["su"] + (1.0 - share_s) * emb["tu"]
            su, tu = emb["su"], emb["tu"]
            emb["su"] = (lap + self.lambda_s * su + (1.0 - self.lambda_s) * tu) / 2.0
            emb["tu"] = (lap + (1.0 - self.lambda_t) * su + self.lambda_t * tu) / 2.0
            for k, v in emb.items():
                out[k].append(v)
        return out

    def loss(self, params, data, batch, key):
        layers = self.layers_of(params, data, key)
        parts = {}
        for d in ("s", "t"):
            users, items, labels = batch[f"{d}_users"], batch[f"{d}_items"], batch[f"{d}_labels"]
            u, i = _final(layers[f"{d}u"], users), _final(layers[f"{d}i"], items)   # only the batch's rows
            logits = (u * i).sum(-1)
            bce = jnp.mean(jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits))))
            parts[f"bce_{d}"] = bce
            parts[f"reg_{d}"] = self.decay * 0.5 * ((u ** 2).sum() + (i ** 2).sum()) / users.shape[0]
        return sum(parts.values()), parts

    def embed(self, params, data):
        layers = self.layers_of(params, data, None)
        return _final(layers["tu"]), _final(layers["ti"])

    trains_both_sides = True      # a dual-target model: the source side's tables are trained alike

    def embed_dl(self, params, data):
        layers = self.layers_of(params, data, None)
        return _final(layers["su"]), _final(layers["si"])

    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.triples["t"]) // self.batch_size))

    def sample(self, rng: np.random.Generator, n_steps: int, epoch: int) -> dict[str, np.ndarray]:
        per_step = self.batch_size
        out = {}
        for d in ("t", "s"):
            t = self.triples[d]
            pick = np.concatenate([rng.permutation(len(t)) for _ in range(-(-n_steps * per_step // len(t)))])
            pick = pick[:n_steps * per_step]
            users, items = t.users[pick], t.items[pick]
            neg = t.negatives(users, (len(users), self.negatives), rng)
            rows_u = np.concatenate([users[:, None], np.repeat(users[:, None], self.negatives, 1)], 1)
            rows_i = np.concatenate([items[:, None], neg], 1)
            labels = np.zeros(rows_u.shape, np.float32)
            labels[:, 0] = 1.0
            shape = (n_steps, per_step * (1 + self.negatives))
            out[f"{d}_users"] = rows_u.reshape(shape).astype(np.int32)
            out[f"{d}_items"] = rows_i.reshape(shape).astype(np.int32)
            out[f"{d}_labels"] = labels.reshape(shape)
        return out


def _self_loop_graph(matrix) -> dict:
    """``D̃^-1 (A + I)`` of one domain: its edges (weights ``1/(d+1)``) and the self-loop weights."""
    d_user = np.diff(matrix.tocsr().indptr).astype(np.float64)
    d_item = np.diff(matrix.tocsc().indptr).astype(np.float64)
    return {"edges": bipartite_edges(matrix, "row_self"),
            "self_u": jnp.asarray(1.0 / (d_user + 1.0), jnp.float32),
            "self_i": jnp.asarray(1.0 / (d_item + 1.0), jnp.float32)}


def _gcf(graph: dict, users: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``S = Â E``, ``E' = S + E ⊙ S`` on one domain."""
    s_u = to_users(graph["edges"], items, users.shape[0]) + graph["self_u"][:, None] * users
    s_i = to_items(graph["edges"], users, items.shape[0]) + graph["self_i"][:, None] * items
    return s_u + users * s_u, s_i + items * s_i


def _final(layers: list[jax.Array], rows: jax.Array | None = None) -> jax.Array:
    """``[E^0 | n(E^1) | ... | n(E^K)]`` (``n``: row L2 normalisation) of ``rows`` (all rows: None)."""
    picked = [x if rows is None else x[rows] for x in layers]
    return jnp.concatenate([picked[0]] + [x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
                                          for x in picked[1:]], axis=1)


def _xavier(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    bound = np.sqrt(6.0 / (shape[0] + shape[1]))
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)
