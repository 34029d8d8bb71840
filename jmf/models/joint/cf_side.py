"""The joint model's CF side (``model/cf``): where the CF-side factors ``P [U, d]`` and ``Q [I_CF, d]`` come from.

* :class:`FactorCF` (``model/cf=mf``, the default): ``P`` and ``Q`` are free tables -- a low-rank
  factorisation of the CF side, started by ``model/init`` (SVD by default) and updated row by row (a batch
  touches a few hundred rows).
* :class:`GraphCF` (``model/cf=graph``): ``P`` and ``Q`` are LightGCN propagations over the **joint**
  training graph of both sides, ``A = [O1 | O2]`` (users x (CF-side items + DL-side items), binary): layer-0
  tables ``P⁰``, ``Q⁰`` and ``E⁰ [I_DL, d]`` (the DL-side item nodes), ``E^{k+1} = D^-½ A D^-½ E^k``, the factors
  the mean of layers ``0..K``.  A user with no CF-side history is still reached through their DL-side items,
  and a warm user's factors carry what propagation over O2 sees, where a factorisation of O1 alone cannot.
  The rest of the joint model is unchanged: ``P̂_u`` maps the DL-side encoding onto these ``P_u``
  (``L_map``), ``L_transfer`` scores ``P̂_u`` against these ``Q``, and ``L_CF`` is the CF loss of the
  propagated factors, plus ``o2_weight`` times the same loss on DL-side edges (each ``L_DL`` user's random
  DL-side item against uniform DL-side negatives shared by the batch), which trains the DL-side item nodes
  as LightGCN on the merged graph trains them.  The whole graph propagates in every step (``O(E·d)``, two
  sparse products per layer), so the layer-0 tables get dense gradients and a dense optimiser
  (``optimizer``, ``lr``: Adam); the biases stay row-sparse.  The start is the top singular subspace of the
  normalised joint matrix (``init=svd``), which propagation maps onto itself (each direction scaled by its
  singular value), so training starts from a graph-filtered factorisation rather than from noise: the joint
  model's epochs (as many pairs as the CF side has rows) are few steps for a graph model.

  Two options take it toward BiTGCF's graph (Liu et al., CIKM 2020), one at a time or both: ``layer=bi``
  propagates with the bi-interaction ``E^{k+1} = S + E^k ⊙ S``, ``S = D^-½ A D^-½ E^k`` (LightGCN's layer is
  ``S``); ``aggregate=concat`` makes the factors ``[E⁰ | n(E¹) | ... | n(E^K)]`` (``n``: row L2 normalisation)
  rather than the mean, with layer-0 tables ``dim / (K + 1)`` wide, so the factors stay ``dim`` wide.
  ``graphs=per_side`` takes BiTGCF's two graphs: each side propagates over its own normalised training graph
  (``O1`` with ``P, Q``; ``O2`` with a DL-side user table ``P_dl`` and ``E``), and after every layer the user rows
  of the two are exchanged as BiTGCF's transfer exchanges them (``lap = l_dl P_dl + (1 − l_dl) P``, ``l_dl`` the
  user's DL-side share of their edges; ``P_dl' = (lap + λ_dl P_dl + (1 − λ_dl) P) / 2``,
  ``P' = (lap + (1 − λ_cf) P_dl + λ_cf P) / 2``); the DL-side edge loss scores ``P_dl`` against ``E``.

At inference every user with a training edge on either side has a ``P_u``: warm *and* cold-start users blend
``blend·P_u + (1-blend)·P̂_u`` (with ``model/cf=mf`` a cold-start user has no ``P_u`` and uses ``P̂_u`` alone).  A user
outside training gets a ``P_u`` the same way, by :meth:`GraphCF.fold_in`: their rows propagated over the trained
item layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jmf import losses
from jmf.data.split import SplitData
from jmf.errors import ConfigError
from jmf.models.graph.adjacency import bipartite_edges, propagate


class FactorCF:
    """``model/cf=mf``: free factor tables ``P, Q`` (see the module docstring)."""

    name = "mf"
    dense = False

    def prepare(self, split: SplitData) -> dict:
        """Whole-graph inputs of the step (none)."""
        return {}

    def has_factors(self, split: SplitData) -> np.ndarray:
        """``[U]`` bool: the users whose own ``P_u`` is trained (CF-side training history)."""
        return np.diff(split.train.tocsr().indptr) > 0


class GraphCF:
    """``model/cf=graph``: LightGCN over the joint O1 + O2 training graph (see the module docstring).

    Args:
      layers: propagation layers ``K`` (0: ``P⁰, Q⁰`` themselves, trained densely).
      o2_weight: weight of the CF loss on DL-side edges inside ``L_CF`` (0: the DL-side item nodes learn only
        through what propagates into the CF side).
      init: the start of ``P⁰, Q⁰, E⁰`` (``model/init`` is not read): ``normal`` (N(0, init_scale²), LightGCN's) or
        ``svd`` (the top-``d`` singular vectors of the normalised joint matrix ``D_u^-½ A D_i^-½``, ``U Σ^½`` and
        ``V Σ^½``, scaled to the RMS of ``init_scale``: a subspace that propagation maps onto itself).
      init_scale: the start's scale.
      optimizer, lr: the dense optax optimiser of the layer-0 tables.
      negatives: uniform DL-side negatives shared by a batch in the DL-side edge loss.
      o2_items: DL-side items drawn per ``L_DL`` user and step in that loss.
      layer: ``lightgcn`` (``E^{k+1} = S``) or ``bi`` (``S + E^k ⊙ S``; unbounded layer by layer: with the mean the
        loss reached 1e8 on amazon-phone-bitgcf, so pair it with ``aggregate=concat``, whose layers are normalised).
      aggregate: ``mean`` of the layers or ``concat`` (layer 0 and the L2-normalised layers ``1..K``; ``model.dim``
        must then be a multiple of ``layers + 1``).
      graphs: ``joint`` (one graph of both sides) or ``per_side`` (BiTGCF's two graphs and user transfer).
      lambda_cf, lambda_dl: ``per_side``'s own-side weights of the transfer (BiTGCF's λ_t, λ_s; 0.8 there).
    """

    name = "graph"
    dense = True

    def __init__(self, layers: int = 3, o2_weight: float = 1.0, init: str = "svd", init_scale: float = 0.1,
                 optimizer: str = "adam", lr: float = 0.01, negatives: int = 256, o2_items: int = 8,
                 layer: str = "lightgcn", aggregate: str = "mean", graphs: str = "joint", lambda_cf: float = 0.8,
                 lambda_dl: float = 0.8):
        if layers < 0:
            raise ConfigError(f"model.cf.layers: {layers} must be >= 0")
        if not (np.isfinite(o2_weight) and o2_weight >= 0):
            raise ConfigError(f"model.cf.o2_weight: {o2_weight} must be a finite number >= 0")
        if negatives < 1 or o2_items < 1:
            raise ConfigError(f"model.cf.negatives, model.cf.o2_items: {negatives}, {o2_items} must be >= 1")
        if init not in ("normal", "svd"):
            raise ConfigError(f"model.cf.init: {init!r} is not normal|svd")
        if layer not in ("lightgcn", "bi"):
            raise ConfigError(f"model.cf.layer: {layer!r} is not lightgcn|bi")
        if aggregate not in ("mean", "concat"):
            raise ConfigError(f"model.cf.aggregate: {aggregate!r} is not mean|concat")
        if graphs not in ("joint", "per_side"):
            raise ConfigError(f"model.cf.graphs: {graphs!r} is not joint|per_side")
        if not (0 <= lambda_cf <= 1 and 0 <= lambda_dl <= 1):
            raise ConfigError(f"model.cf.lambda_cf / lambda_dl: {lambda_cf} / {lambda_dl} must be in [0, 1]")
        self.graphs, self.lambda_cf, self.lambda_dl = graphs, float(lambda_cf), float(lambda_dl)
        self.layers, self.o2_weight, self.init, self.init_scale = layers, float(o2_weight), init, init_scale
        self.layer, self.aggregate = layer, aggregate
        self.optimizer, self.lr, self.negatives, self.o2_items = optimizer, lr, negatives, o2_items

    def width(self, dim: int) -> int:
        """The layer-0 tables' width: ``dim``, or ``dim / (layers + 1)`` with ``aggregate=concat``."""
        if self.aggregate == "mean":
            return dim
        if dim % (self.layers + 1):
            raise ConfigError(f"model.dim: {dim} is not a multiple of model.cf.layers + 1 = {self.layers + 1} "
                              "(model.cf.aggregate=concat joins the layers)")
        return dim // (self.layers + 1)

    def start(self, split: SplitData, dim: int, seed: int) -> dict[str, np.ndarray]:
        """The layer-0 tables ``P⁰ [U, w]``, ``Q⁰ [I_CF, w]``, ``E⁰ [I_DL, w]`` (``init``; ``w``: :meth:`width`)."""
        n_cf, dim = split.train.shape[1], self.width(dim)
        if self.init == "svd":
            from jmf.models.cf.svd import randomized_svd

            A = self.joint_matrix(split)
            d_u, d_i = (np.maximum(np.asarray(A.sum(axis)).ravel(), 1.0) for axis in (1, 0))
            norm = sp.diags(d_u ** -0.5) @ A @ sp.diags(d_i ** -0.5)
            rank = min(dim, min(A.shape) - 1)
            u, s, vt = randomized_svd(norm.tocsr(), rank, seed=seed)
            users, items = (np.pad(x * np.sqrt(s)[None, :], ((0, 0), (0, dim - rank))) for x in (u, vt.T))
            scale = self.init_scale / max(float(np.sqrt(np.mean(np.concatenate([users, items]) ** 2))), 1e-12)
            users, items = (scale * users).astype(np.float32), (scale * items).astype(np.float32)
            return {"P": users, "Q": items[:n_cf], "E_dl": items[n_cf:],
                    **({"P_dl": users.copy()} if self.graphs == "per_side" else {})}
        shapes = {"P": split.train.shape[0], "Q": n_cf, "E_dl": split.dl.shape[1],
                  **({"P_dl": split.train.shape[0]} if self.graphs == "per_side" else {})}
        keys = jax.random.split(jax.random.key(seed), len(shapes))
        return {k: self.init_scale * np.asarray(jax.random.normal(key, (n, dim)), np.float32)
                for key, (k, n) in zip(keys, shapes.items())}

    def prepare(self, split: SplitData) -> dict:
        """``cf_graph``: the normalised joint training graph ``[U, I_CF + I_DL]``, or (``per_side``) each side's
        normalised graph and every user's DL-side share of their edges."""
        if self.graphs == "joint":
            joint = self.joint_matrix(split)
            self.degrees = {"items": np.asarray(joint.sum(0)).ravel()}       # what fold_in normalises by
            return {"cf_graph": bipartite_edges(joint, "symmetric")}
        binary = [(m != 0).astype(np.float32).tocsr() for m in (split.train, split.dl)]
        self.degrees = {side: np.asarray(m.sum(0)).ravel() for side, m in zip(("cf", "dl"), binary)}
        deg_cf, deg_dl = (np.diff(m.indptr).astype(np.float64) for m in binary)
        share = np.where(deg_cf + deg_dl > 0, deg_dl / np.maximum(deg_cf + deg_dl, 1.0), 0.5)
        return {"cf_graph": {"cf": bipartite_edges(binary[0], "symmetric"),
                             "dl": bipartite_edges(binary[1], "symmetric"),
                             "share_dl": jnp.asarray(share[:, None], jnp.float32)}}

    @staticmethod
    def joint_matrix(split: SplitData) -> sp.csr_matrix:
        """``[O1 | O2]``: the binary training rows of both sides, CF-side items first."""
        return (sp.hstack([split.train, split.dl]).tocsr() != 0).astype(np.float32)

    def has_factors(self, split: SplitData) -> np.ndarray:
        """``[U]`` bool: the users with a training edge on either side (their ``P_u`` is propagated to)."""
        return np.diff(self.joint_matrix(split).indptr) > 0

    def propagate(self, tables: dict, graph) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(P [U, d], Q [I_CF, d], E [I_DL, d])``: layers ``0..K`` over the graph(s), their mean
        (``aggregate=mean``) or joined (``concat``)."""
        return self.propagate_sides(tables, graph)[:3]

    def propagate_sides(self, tables: dict, graph) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """:meth:`propagate` and the users' factors the DL-side edge loss scores (``P`` itself with one joint graph,
        the DL side's own user factors with ``graphs=per_side``)."""
        out = self.layer_stack(tables, graph)
        if self.graphs == "per_side":
            return tuple(self._aggregate(out[k]) for k in ("P", "Q", "E_dl", "P_dl"))
        P, items = self._aggregate(out["P"]), self._aggregate(out["items"])
        n = tables["Q"].shape[0]
        return P, items[:n], items[n:], P

    def layer_stack(self, tables: dict, graph) -> dict[str, list[jax.Array]]:
        """Layers ``0..K`` of every node table, before :meth:`_aggregate`: ``P`` and ``items`` (``[Q⁰; E⁰]``
        stacked) over the joint graph, or ``P, Q, P_dl, E_dl`` with ``graphs=per_side``."""
        if self.graphs == "per_side":
            return self._per_side(tables, graph)
        users, items = tables["P"], jnp.concatenate([tables["Q"], tables["E_dl"]])
        out = {"P": [users], "items": [items]}
        for _ in range(self.layers):
            users, items = self._layer(graph, users, items)
            out["P"].append(users)
            out["items"].append(items)
        return out

    def _per_side(self, tables: dict, graph) -> dict[str, list[jax.Array]]:
        emb = {k: tables[k] for k in ("P", "Q", "P_dl", "E_dl")}
        out = {k: [v] for k, v in emb.items()}
        share = graph["share_dl"]
        for _ in range(self.layers):
            emb["P"], emb["Q"] = self._layer(graph["cf"], emb["P"], emb["Q"])
            emb["P_dl"], emb["E_dl"] = self._layer(graph["dl"], emb["P_dl"], emb["E_dl"])
            emb["P"], emb["P_dl"] = self._exchange(share, emb["P"], emb["P_dl"])
            for k, v in emb.items():
                out[k].append(v)
        return out

    def _exchange(self, share, cf, dl):
        """``graphs=per_side``: BiTGCF's user transfer after a layer -> ``(P, P_dl)``; ``share``: DL-side share."""
        lap = share * dl + (1.0 - share) * cf
        # P_dl first: XLA fused the other order differently (1 ulp), and earlier fits stay reproducible bit for bit
        new_dl = (lap + self.lambda_dl * dl + (1.0 - self.lambda_dl) * cf) / 2.0
        return (lap + (1.0 - self.lambda_cf) * dl + self.lambda_cf * cf) / 2.0, new_dl

    def _layer(self, graph, users: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
        s_u, s_i = propagate(graph, users, items)
        return self._node_layer(users, s_u), self._node_layer(items, s_i)

    def _node_layer(self, nodes, s):
        """A node table's next layer from ``s``, what its neighbours propagate into it."""
        return s + nodes * s if self.layer == "bi" else s

    def fold_in(self, stack: dict, rows_cf: sp.spmatrix, rows_dl: sp.spmatrix,
                p0: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Users outside training folded into the trained graph: ``([B, d] P, [B] whether each has an edge)``.

        A new user's layers are those propagation gives a node with their edges (``rows_cf [B, I_CF]``,
        ``rows_dl [B, I_DL]``; items without a training edge left out) over the trained item layers (the item
        tables of :meth:`layer_stack`), at the items' training degrees (the user is not added to the graph: no
        retraining).  Their layer-0 rows are ``p0`` (``{"P": [B, w]}``, and ``"P_dl"`` with ``per_side``), zero by
        default: a new user has no trained ``P⁰_u``.  Given a training user's own edges and ``P⁰`` rows this is
        their propagated ``P_u`` exactly (``tests/models/test_graph_cf.py``)."""
        B, w = rows_cf.shape[0], np.shape(stack["items" if self.graphs == "joint" else "Q"][0])[1]
        p0 = {k: np.asarray(v, np.float32) for k, v in (p0 or {}).items()}
        zeros = np.zeros((B, w), np.float32)
        if self.graphs == "joint":
            C, d_u = _normalised(sp.hstack([rows_cf, rows_dl]), self.degrees["items"])
            users = p0.get("P", zeros)
            out = [users]
            for k in range(self.layers):
                users = self._node_layer(users, C @ np.asarray(stack["items"][k]))
                out.append(users)
            return np.asarray(self._aggregate(out)), d_u > 0
        (C_cf, d_cf), (C_dl, d_dl) = _normalised(rows_cf, self.degrees["cf"]), _normalised(rows_dl, self.degrees["dl"])
        share = np.where(d_cf + d_dl > 0, d_dl / np.maximum(d_cf + d_dl, 1.0), 0.5).astype(np.float32)[:, None]
        P, P_dl = p0.get("P", zeros), p0.get("P_dl", zeros)
        out = [P]
        for k in range(self.layers):
            P = self._node_layer(P, C_cf @ np.asarray(stack["Q"][k]))
            P_dl = self._node_layer(P_dl, C_dl @ np.asarray(stack["E_dl"][k]))
            P, P_dl = self._exchange(share, P, P_dl)
            out.append(P)
        return np.asarray(self._aggregate(out)), d_cf + d_dl > 0

    def _aggregate(self, layers: list[jax.Array]) -> jax.Array:
        if self.aggregate == "concat":      # rsqrt of a clamped square: a node without edges gets no NaN gradient
            unit = [x * jax.lax.rsqrt(jnp.maximum((x * x).sum(1, keepdims=True), 1e-24)) for x in layers[1:]]
            return jnp.concatenate([layers[0], *unit], axis=1)
        return sum(layers) * (1.0 / (self.layers + 1))

    def o2_loss(self, P: jax.Array, E: jax.Array, users: jax.Array, seq: dict, key: jax.Array) -> jax.Array:
        """The sampled-softmax CF loss on DL-side edges: ``o2_items`` random DL-side items of each of ``users
        [B]`` against ``negatives`` uniform DL-side items shared by the batch (users without DL-side history weigh
        0; the items are drawn from the sequence the encoder reads, the last ``max_len``)."""
        items, mask = seq["items"][users], seq["mask"][users]
        key_pos, key_neg = jax.random.split(key)
        lengths = mask.sum(1)                                                                 # [B]
        pos = jnp.floor(jax.random.uniform(key_pos, (len(users), self.o2_items))
                        * jnp.maximum(lengths, 1)[:, None]).astype(jnp.int32)                 # [B, m]
        target = jnp.maximum(jnp.take_along_axis(items, pos, 1) - 1, 0).reshape(-1)          # [B*m] DL-side items
        neg = jax.random.randint(key_neg, (self.negatives,), 0, E.shape[0])
        p = jnp.repeat(P[users], self.o2_items, axis=0)
        pos_logit = (p * E[target]).sum(-1)
        neg_logit = jnp.where(neg[None, :] == target[:, None], -1e9, p @ E[neg].T)
        weight = jnp.repeat((lengths > 0).astype(jnp.float32), self.o2_items)
        return losses.sampled_softmax(pos_logit, neg_logit, weight)


def _normalised(rows: sp.spmatrix, degrees: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(C [B, I], d_u [B])``: the binary ``rows`` less the items without a training edge, scaled ``1/√(d_u d_i)``
    as :func:`~jmf.models.graph.adjacency.bipartite_edges` scales the training graph."""
    A = (sp.csr_matrix(rows) != 0).astype(np.float64) @ sp.diags((degrees > 0).astype(np.float64))
    d_u = np.asarray(A.sum(1)).ravel()

    def inv_sqrt(d: np.ndarray) -> np.ndarray:
        return np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1.0)), 0.0)
    return (sp.diags(inv_sqrt(d_u)) @ A @ sp.diags(inv_sqrt(degrees))).astype(np.float32).tocsr(), d_u


@functools.partial(jax.jit, static_argnums=0)
def propagated(cf: GraphCF, tables: dict, graph) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:meth:`GraphCF.propagate`, jitted (inference reads it once per fitted state)."""
    return cf.propagate(tables, graph)


@functools.partial(jax.jit, static_argnums=0)
def stacked(cf: GraphCF, tables: dict, graph) -> dict[str, list[jax.Array]]:
    """:meth:`GraphCF.layer_stack`, jitted (folding new users in reads it once per fitted state)."""
    return cf.layer_stack(tables, graph)


def check_cf(cf) -> FactorCF | GraphCF:
    """``model.cf`` (Hydra builds it from ``model/cf``): a CF side, or a clear error."""
    if cf is None:
        return FactorCF()
    if not (hasattr(cf, "dense") and hasattr(cf, "prepare") and hasattr(cf, "has_factors")):
        raise ConfigError(f"model.cf: {cf!r} is not a CF side (model/cf=mf|graph; see jmf.models.joint.cf_side)")
    return cf
