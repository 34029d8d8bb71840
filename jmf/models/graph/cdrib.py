"""CDRIB (Cao et al., ICDE 2022): cross-domain recommendation to cold-start users through a
variational information bottleneck.

Each domain (the DL side = source ``s``, the CF side = target ``t``) has its own user and item tables
(N(0, 1)) and its own variational bipartite graph encoder (VBGE) over the row-normalised graph ``UV = D_u^-1 A``,
``VU = D_i^-1 Aᵀ``: ``layers - 1`` DGCN layers (``u' = ReLU(W[GCN(GCN(u, VU), UV) ‖ u])``, items
mirrored, ``GCN(x, adj) = LeakyReLU(adj x W + b)``), then a last layer whose two heads give a mean
and a log-std, ``σ = exp(0.1 + 0.9 softplus(min(logstd, 0.4)))`` and ``z = mean + ε σ`` (``mean`` in
evaluation); dropout precedes every layer, and a node's representation concatenates every layer's
output.  Training mixes both domains' interactions in each batch: a sigmoid cross-entropy on every
positive and one uniform negative, scored by dot products, where the users of both domains are
scored with the *other* domain's representation (the information bottleneck's cross-domain term),
plus each domain's ``beta·KL_user + KL_item`` towards ``N(0, σ_p)`` and a contrastive critic (an
MLP on ``[source ‖ target]`` rows) that tells a shared user's two representations from a random
pairing, by a hinge on sigmoids.  A cold-start target user is ranked with its source representation.

Defaults and the reading of the authors' code (cjx96/CDRIB @ bd98945): dim 128, 3 layers, dropout
0.3, LeakyReLU 0.1, beta 1.5, hinge margin 0.3, 64 critic users, batch 1024, Adam lr 1e-3 with
coupled weight decay 5e-4 on every parameter, 100 epochs, validation every 5 epochs.

Differences from the authors' code and why:

* Each domain's encoder runs over the users with training rows in that domain only.  The authors'
  per-domain user space also holds the ~10% shared users held out as cold in that domain: there
  they are a graph row of zeros whose representation is never scored, but they enter the KL's mean
  over users and the critic's random negatives.  jmf has one user space for both domains:
  encoding every user in both would cost ~1.3x the dense products (sport/cloth) for nothing.
* Overlapping (swapped, critic-positive) users are those with training rows in both domains; the
  authors' range ``[0, min test user + 1)`` is one user too long (an off-by-one: the first cold user
  of one domain is swapped and drawn as a critic positive).  The critic's random negatives are drawn
  among the users with training rows in the domain (see the first point).
* In evaluation every user with source rows (cold target users and overlapping users) is ranked
  with the source representation, as the authors' ``[0, max target test user + 1)`` range does;
  users with target rows only keep the target one.
* The interactions are reshuffled every epoch (the authors shuffle once, when the loader is
  built); the negative is redrawn up to 5 times when it is a training item of the user (the
  authors draw at most 5 times and keep the last draw).
* No learning-rate decay: the authors multiply the lr by 0.9 at a validation (from the 11th, epoch
  ~60) whose *source*-domain dev MRR did not improve; jmf validates the target domain only.
  Epochs are selected on jmf's validation fold (``monitor``, ``patience``); the authors report the
  test metrics of the best validated epoch of each domain without stopping early.
* ``monitor: mrr`` is their selection metric, defined by the sampled protocol (999 negatives:
  ``eval.valid_protocol=test`` with ``eval=sampled``); when jmf validates by full ranking it is the
  full-ranking MRR (mrr@I_CF) instead.
* ``adj @ (x W)`` is computed as ``(adj @ x) W`` when that multiplies fewer rows (the same value up
  to float rounding), and the two heads of the last layer share one propagation.
* The authors' evaluation quirks are not copied (negatives are jmf's evaluator's; they do not
  exclude the user's items from the target's sampled negatives).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jmf.data.split import SplitData, dl_side_missing
from jmf.errors import ConfigError
from jmf.models.graph.adjacency import bipartite_edges, to_items, to_users
from jmf.models.graph.common import GraphModel, Triples, check_matmul_dtype, dense
from jmf.train import parallel

DOMAINS = ("s", "t")          # source (the DL side, split.dl), target (the CF side, split.train)
PRIOR_SIGMA = float(np.exp(0.1 + 0.9 * np.log1p(np.exp(0.4))))   # σ of logstd = 1, clamped at 0.4


class CDRIB(GraphModel):
    """CDRIB (see the module docstring).

    Args:
      dim: width of the embeddings and of every layer (the representation is ``layers·dim`` wide).
      layers: encoder layers (``layers - 1`` DGCN layers, then the variational last layer).
      dropout: dropout rate before every layer.  leaky: LeakyReLU slope of the graph convolutions.
      beta: weight of the users' KL (the items' has weight 1).  margin: the critic's hinge margin.
      critic_users: overlapping users per step in the critic (and random users per negative pairing).
      matmul_dtype: ``float32`` or ``bfloat16``: the encoders' dense products in bfloat16 with float32
        accumulation (:func:`~jmf.models.graph.common.dense`; a speed option where the hardware has a
        bfloat16 rate, checked against float32 by ``benchmarks/bf16_check.py``).
      (the rest: :class:`~jmf.models.graph.common.GraphModel`; ``weight_decay`` is the authors' coupled L2)
    """

    name = "cdrib"

    def __init__(self, dim: int = 128, layers: int = 3, dropout: float = 0.3, leaky: float = 0.1, beta: float = 1.5,
                 margin: float = 0.3, critic_users: int = 64, epochs: int = 100, batch_size: int = 1024,
                 lr: float = 1e-3, weight_decay: float = 5e-4, patience: int = 5, eval_every: int = 5,
                 monitor: str = "mrr", eval_batch_size: int = 512, matmul_dtype: str = "float32"):
        self._init_base(dim, epochs, batch_size, lr, weight_decay, patience, eval_every, monitor, eval_batch_size)
        if layers < 1 or critic_users < 1 or not 0 <= dropout < 1:
            raise ConfigError(f"model.layers / critic_users / dropout: {layers} / {critic_users} / {dropout} must be "
                              ">= 1 / >= 1 / in [0, 1)")
        self.layers, self.dropout, self.leaky, self.beta, self.margin = layers, dropout, leaky, beta, margin
        self.critic_users = critic_users
        self.matmul_dtype = check_matmul_dtype(matmul_dtype)

    # --------------------------------------------------------------- data
    def prepare(self, split: SplitData) -> dict:
        mats = {"s": sp.csr_matrix(split.dl), "t": sp.csr_matrix(split.train)}
        if mats["s"].nnz == 0:
            raise ConfigError(dl_side_missing(split.data, split.partition, "model=cdrib"))
        if getattr(self, "engine", None) is not None:
            parallel.check_batch_size(self.critic_users, self.engine.mesh, "model.critic_users")
        self.members = {d: np.flatnonzero(np.diff(m.indptr) > 0) for d, m in mats.items()}
        self.local = {}
        for d, users in self.members.items():             # jmf user -> row of the domain's encoder (-1: none)
            self.local[d] = np.full(split.n_users, -1, np.int64)
            self.local[d][users] = np.arange(len(users))
        self.overlap = np.flatnonzero((self.local["s"] >= 0) & (self.local["t"] >= 0))
        if len(self.overlap) == 0:
            raise ConfigError("model=cdrib needs users with training rows in both domains")
        self.triples = {d: Triples(m) for d, m in mats.items()}
        self.n_items = {d: m.shape[1] for d, m in mats.items()}
        use_s = self.local["s"] >= 0
        return {"graph": {d: bipartite_edges(mats[d][self.members[d]], "row") for d in DOMAINS},
                "eval_s": jnp.asarray(np.maximum(self.local["s"], 0), jnp.int32),
                "eval_t": jnp.asarray(np.maximum(self.local["t"], 0), jnp.int32),
                "use_s": jnp.asarray(use_s), "use_t": jnp.asarray(~use_s & (self.local["t"] >= 0)),
                # the DL side mirrored: a user with target rows is ranked on source items by its target row
                "dl_use_t": jnp.asarray(self.local["t"] >= 0),
                "dl_use_s": jnp.asarray((self.local["t"] < 0) & use_s)}

    def init_params(self, split: SplitData, key: jax.Array) -> dict:
        # host draws seeded by the key: jax.random compiled one kernel per parameter (44 s for this model)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        rows = tuple((len(self.members[d]), self.n_items[d]) for d in DOMAINS)
        return _init_params(rng, self.dim, self.layers, rows)

    # --------------------------------------------------------------- model
    def encode(self, params: dict, data: dict, key: jax.Array | None) -> dict:
        """Both domains' ``(users, items, kl)`` (per-layer outputs, see :func:`vbge`); ``key=None``: evaluation."""
        seeds = (None, None) if key is None else jax.random.bits(key, (2,), jnp.uint32)
        return {d: vbge(params["enc"][d], params["emb"][f"{d}u"], params["emb"][f"{d}i"], data["graph"][d],
                        self.leaky, self.beta, seed, self.dropout)
                for d, seed in zip(DOMAINS, seeds)}

    def loss(self, params, data, batch, key):
        out = self.encode(params, data, key)
        (su, si, kl_s), (tu, ti, kl_t) = out["s"], out["t"]
        users = jnp.where(batch["from_s"][:, None], layer_rows(su, batch["user_s"]),       # swapped
                          layer_rows(tu, batch["user_t"]))
        tgt = batch["tgt"]

        def item(col):
            return jnp.where(tgt[:, None], layer_rows(ti, jnp.where(tgt, batch[col], 0)),
                             layer_rows(si, jnp.where(tgt, 0, batch[col])))
        pos, neg = (users * item("pos")).sum(-1), (users * item("neg")).sum(-1)
        rows = jax.nn.softplus(-pos) + jax.nn.softplus(neg)                  # BCE(pos, 1) + BCE(neg, 0)
        n_t = tgt.sum()
        bce_t = jnp.where(tgt, rows, 0.0).sum() / jnp.maximum(n_t, 1)
        bce_s = jnp.where(tgt, 0.0, rows).sum() / jnp.maximum(tgt.shape[0] - n_t, 1)
        critic = self.critic_loss(params["critic"], su, tu, batch)
        parts = {"bce_s": bce_s, "bce_t": bce_t, "kl_s": kl_s, "kl_t": kl_t, "critic": critic}
        return sum(parts.values()), parts

    def critic_loss(self, mlp: list, su: list, tu: list, batch: dict) -> jax.Array:
        """Hinge between the critic on shared users' two (unswapped) rows and on two random pairings."""
        a, b = layer_rows(su, batch["crit_s"]), layer_rows(tu, batch["crit_t"])
        pos = critic(mlp, a, b)
        neg_1 = critic(mlp, a, layer_rows(tu, batch["rand_t"]))
        neg_2 = critic(mlp, layer_rows(su, batch["rand_s"]), b)

        def hinge(p, n):
            return jax.nn.relu(self.margin - jax.nn.sigmoid(p) + jax.nn.sigmoid(n)).mean()
        return hinge(pos, neg_1) + hinge(pos, neg_2)

    def embed(self, params, data):
        out = self.encode(params, data, None)
        src, tgt = layer_rows(out["s"][0], data["eval_s"]), layer_rows(out["t"][0], data["eval_t"])
        users = jnp.where(data["use_s"][:, None], src, jnp.where(data["use_t"][:, None], tgt, 0.0))
        return users, layer_rows(out["t"][1])

    trains_both_sides = True

    def embed_dl(self, params, data):
        """The source domain ranked as the authors rank it (their second direction): a user with target rows
        (a cold source user) by its target representation, the others by their source one."""
        out = self.encode(params, data, None)
        src, tgt = layer_rows(out["s"][0], data["eval_s"]), layer_rows(out["t"][0], data["eval_t"])
        users = jnp.where(data["dl_use_t"][:, None], tgt, jnp.where(data["dl_use_s"][:, None], src, 0.0))
        return users, layer_rows(out["s"][1])

    # --------------------------------------------------------------- batches
    def steps_per_epoch(self) -> int:
        return max(1, -(-sum(len(t) for t in self.triples.values()) // self.batch_size))

    def sample(self, rng: np.random.Generator, n_steps: int, epoch: int) -> dict[str, np.ndarray]:
        """Both domains' interactions shuffled together (the epoch's tail padded from its head), one
        negative each; every step also draws the critic's shared and random users."""
        s, t = self.triples["s"], self.triples["t"]
        users = np.concatenate([s.users, t.users])
        items = np.concatenate([s.items, t.items])
        tgt = np.concatenate([np.zeros(len(s), bool), np.ones(len(t), bool)])
        total = n_steps * self.batch_size
        order = rng.permutation(len(users))
        order = np.concatenate([order] * -(-total // len(order)))[:total]
        users, items, tgt = users[order], items[order], tgt[order]
        neg = np.empty_like(items)
        for flag, triples in ((False, s), (True, t)):
            rows = tgt == flag
            neg[rows] = triples.negatives(users[rows], (int(rows.sum()),), rng)
        shared = (self.local["s"][users] >= 0) & (self.local["t"][users] >= 0)
        shape = (n_steps, self.batch_size)
        out = {"user_s": np.maximum(self.local["s"][users], 0), "user_t": np.maximum(self.local["t"][users], 0),
               "from_s": tgt == shared, "tgt": tgt, "pos": items, "neg": neg}
        out = {k: v.reshape(shape).astype(np.int32 if v.dtype != bool else bool) for k, v in out.items()}
        return {**out, **self._critic_draws(rng, n_steps)}

    def _critic_draws(self, rng: np.random.Generator, n_steps: int) -> dict[str, np.ndarray]:
        P = self.critic_users

        def draw(n: int) -> np.ndarray:     # without replacement, as the authors' randperm[:P]
            return np.stack([rng.choice(n, P, replace=n < P) for _ in range(n_steps)])
        shared = self.overlap[draw(len(self.overlap))]
        return {"crit_s": self.local["s"][shared].astype(np.int32), "crit_t": self.local["t"][shared].astype(np.int32),
                "rand_t": draw(len(self.members["t"])).astype(np.int32),
                "rand_s": draw(len(self.members["s"])).astype(np.int32)}


# ------------------------------------------------------------------- the encoder (pure functions)
def _init_params(rng: np.random.Generator, dim: int, layers: int, rows: tuple) -> dict:
    """Every parameter: N(0, 1) tables ``rows = ((U_s, I_s), (U_t, I_t))``, the encoders, the critic MLP."""
    params = {"emb": {}, "enc": {}}
    for d, (n_users, n_items) in zip(DOMAINS, rows):
        params["emb"][f"{d}u"] = jnp.asarray(rng.standard_normal((n_users, dim)), jnp.float32)
        params["emb"][f"{d}i"] = jnp.asarray(rng.standard_normal((n_items, dim)), jnp.float32)
        params["enc"][d] = init_vbge(rng, dim, layers)
    params["critic"] = [_linear(rng, n_in, n_out) for n_in, n_out in zip((2 * layers * dim, dim, 100), (dim, 100, 1))]
    return params


def init_vbge(rng: np.random.Generator, dim: int, layers: int) -> dict:
    """One domain's VBGE parameters: ``{"dgcn": [per DGCN layer {name: (W, b)}], "last": {name: (W, b)}}``."""
    dgcn = [{**{f"gc{j}": _gcn_init(rng, dim, dim) for j in (1, 2, 3, 4)},
             "user_union": _linear(rng, 2 * dim, dim), "item_union": _linear(rng, 2 * dim, dim)}
            for _ in range(layers - 1)]
    names = ("gc1", "gc2", "gc3_mean", "gc3_logstd", "gc4_mean", "gc4_logstd")
    last = {**{n: _gcn_init(rng, dim, dim) for n in names},
            **{f"{s}_union_{h}": _linear(rng, 2 * dim, dim) for s in ("user", "item") for h in ("mean", "logstd")}}
    return {"dgcn": dgcn, "last": last}


def vbge(p: dict, users: jax.Array, items: jax.Array, graph, leaky: float, beta: float,
         seed: jax.Array | None = None, dropout: float = 0.0) -> tuple[list, list, jax.Array]:
    """``(users, items, beta·KL_user + KL_item)`` of one domain, ``users``/``items`` the ``L`` layers' outputs
    ``[U, d]``/``[I, d]`` (a node's representation is their concatenation, :func:`layer_rows`); ``seed`` (a uint32
    scalar) draws the dropout masks and the reparameterisation noise, ``None``: evaluation mode."""
    outs_u, outs_i = [], []
    for j, layer in enumerate([*p["dgcn"], None]):
        if seed is not None:
            users, items = _dropout(seed, 4 * j, users, dropout), _dropout(seed, 4 * j + 1, items, dropout)
        if layer is None:
            noise = None if seed is None else (_normal(seed, 4 * j + 2, users.shape),
                                               _normal(seed, 4 * j + 3, items.shape))
            users, items, kl = _last_layer(p["last"], users, items, graph, leaky, beta, noise)
        else:
            users, items = _dgcn_layer(layer, users, items, graph, leaky)
        outs_u.append(users)
        outs_i.append(items)
    return outs_u, outs_i, kl


def layer_rows(layers: list, index: jax.Array | None = None) -> jax.Array:
    """``[n, L·d]`` representations (every layer's output side by side) of the rows ``index`` (all: None).
    Training gathers the batch's rows layer by layer, so the ``[N, L·d]`` tables are never written."""
    return jnp.concatenate([x if index is None else x[index] for x in layers], 1)


def _dgcn_layer(p: dict, u: jax.Array, v: jax.Array, graph, leaky: float) -> tuple[jax.Array, jax.Array]:
    n_u, n_i = u.shape[0], v.shape[0]
    (h,) = _gcn(u, [p["gc1"]], lambda x: to_items(graph, x), n_i, leaky)          # GCN1(u, VU)
    (h,) = _gcn(h, [p["gc3"]], lambda x: to_users(graph, x), n_u, leaky)          # GCN3(., UV)
    (g,) = _gcn(v, [p["gc2"]], lambda x: to_users(graph, x), n_u, leaky)          # GCN2(v, UV)
    (g,) = _gcn(g, [p["gc4"]], lambda x: to_items(graph, x), n_i, leaky)          # GCN4(., VU)
    return jax.nn.relu(_union(p["user_union"], h, u)), jax.nn.relu(_union(p["item_union"], g, v))


def _last_layer(p: dict, u: jax.Array, v: jax.Array, graph, leaky: float, beta: float,
                noise: tuple | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    n_u, n_i = u.shape[0], v.shape[0]
    (h,) = _gcn(u, [p["gc1"]], lambda x: to_items(graph, x), n_i, leaky)
    h_mean, h_logstd = _gcn(h, [p["gc3_mean"], p["gc3_logstd"]], lambda x: to_users(graph, x), n_u, leaky)
    (g,) = _gcn(v, [p["gc2"]], lambda x: to_users(graph, x), n_u, leaky)
    g_mean, g_logstd = _gcn(g, [p["gc4_mean"], p["gc4_logstd"]], lambda x: to_items(graph, x), n_i, leaky)
    eps_u, eps_i = (None, None) if noise is None else noise
    z_u, kl_u = _reparameterise(_union(p["user_union_mean"], h_mean, u), _union(p["user_union_logstd"], h_logstd, u),
                                eps_u)
    z_i, kl_i = _reparameterise(_union(p["item_union_mean"], g_mean, v), _union(p["item_union_logstd"], g_logstd, v),
                                eps_i)
    return z_u, z_i, beta * kl_u + kl_i


def _gcn(x: jax.Array, heads: list, spread, n_out: int, leaky: float) -> list[jax.Array]:
    """``LeakyReLU(adj @ (x W) + b)`` for each ``(W, b)`` of ``heads``, sharing one propagation; the
    product runs on the fewer rows: ``adj @ (x W)`` or ``(adj @ x) W`` (equal up to rounding)."""
    w = jnp.concatenate([h[0] for h in heads], 1) if len(heads) > 1 else heads[0][0]
    y = spread(dense(x, w)) if x.shape[0] <= n_out else dense(spread(x), w)
    parts = jnp.split(y, len(heads), axis=1) if len(heads) > 1 else [y]
    return [jax.nn.leaky_relu(part + b, leaky) for part, (_, b) in zip(parts, heads)]


def _union(p: tuple, h: jax.Array, x: jax.Array) -> jax.Array:
    """``Linear([h ‖ x])`` as ``h W_h + x W_x + b``: the ``[N, 2d]`` concatenation is never written."""
    w, b = p
    return dense(h, w[:h.shape[1]]) + dense(x, w[h.shape[1]:]) + b


def _reparameterise(mean: jax.Array, logstd: jax.Array, eps: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """``(z, KL(N(mean, σ) ‖ N(0, σ_p)))``: ``z = mean + ε σ`` (``mean`` without ``eps``), the KL summed
    over dimensions and averaged over rows."""
    log_sigma = 0.1 + 0.9 * jax.nn.softplus(jnp.minimum(logstd, 0.4))
    sigma = jnp.exp(log_sigma)
    kl = gaussian_kl(mean, sigma, PRIOR_SIGMA, log_sigma).mean(0).sum()
    z = mean if eps is None else mean + sigma * eps
    return z, kl


def gaussian_kl(mean: jax.Array, sigma: jax.Array, prior_sigma: float, log_sigma: jax.Array | None = None) -> jax.Array:
    """Elementwise ``KL(N(mean, sigma²) ‖ N(0, prior_sigma²))`` (``log_sigma``: ``log(sigma)`` if known)."""
    log_sigma = jnp.log(sigma) if log_sigma is None else log_sigma
    return np.log(prior_sigma) - log_sigma + (sigma ** 2 + mean ** 2) / (2.0 * prior_sigma ** 2) - 0.5


def critic(mlp: list, a: jax.Array, b: jax.Array) -> jax.Array:
    """``[P]`` logits of the critic MLP on ``[a ‖ b]`` (ReLU between the layers)."""
    x = jnp.concatenate([a, b], 1)
    for j, (w, bias) in enumerate(mlp):
        x = x @ w + bias
        x = jax.nn.relu(x) if j < len(mlp) - 1 else x
    return x[:, 0]


def _bits(seed: jax.Array, stream: int, shape: tuple) -> jax.Array:
    """uint32 random bits of ``shape``: a keyed counter hash (two ``lowbias32`` rounds).  A step draws
    ~50M numbers on sport/cloth; on the 2-core CPU ``jax.random.bernoulli`` took 160 ms per 40k x 128
    mask (a third of the training forward in all), this dropout 4 ms."""
    key = _mix(seed + np.uint32((stream * 0x9E3779B9) & 0xFFFFFFFF))
    count = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
    return _mix(_mix(count ^ key) + key)


def _mix(x: jax.Array) -> jax.Array:
    """``lowbias32`` (C. Wellons' integer hash): a bijection of uint32 with good avalanche."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _normal(seed: jax.Array, stream: int, shape: tuple) -> jax.Array:
    """Standard normal draws, ``√2 erf⁻¹(v)`` of ``v`` uniform on ``(-1, 1)`` from 23 random bits (as
    ``jax.random.normal``; Box-Muller's sine and cosine cost 3x more here)."""
    v = ((_bits(seed, stream, shape) >> 9).astype(jnp.float32) + 0.5) * (2.0 ** -22) - 1.0
    return np.sqrt(2.0) * jax.lax.erf_inv(v)


def _dropout(seed: jax.Array, stream: int, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout (``torch.nn.functional.dropout``): zero with probability ``rate``, scale the rest."""
    if not rate:
        return x
    keep = _bits(seed, 2 * stream, x.shape) < jnp.uint32(round((1.0 - rate) * 2.0 ** 32))
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _linear(rng: np.random.Generator, n_in: int, n_out: int) -> tuple[jax.Array, jax.Array]:
    """``torch.nn.Linear``'s default initialisation: ``W, b ~ U(±1/√n_in)``; ``W`` stored ``[n_in, n_out]``."""
    return _uniform_pair(rng, n_in, n_out, 1.0 / np.sqrt(n_in))


def _gcn_init(rng: np.random.Generator, n_in: int, n_out: int) -> tuple[jax.Array, jax.Array]:
    """The authors' ``GraphConvolution``: ``W, b ~ U(±1/√n_out)``."""
    return _uniform_pair(rng, n_in, n_out, 1.0 / np.sqrt(n_out))


def _uniform_pair(rng: np.random.Generator, n_in: int, n_out: int, bound: float) -> tuple[jax.Array, jax.Array]:
    return (jnp.asarray(rng.uniform(-bound, bound, (n_in, n_out)), jnp.float32),
            jnp.asarray(rng.uniform(-bound, bound, n_out), jnp.float32))
