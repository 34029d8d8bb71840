"""DisenCDR (Cao et al., SIGIR 2022): disentangled domain-shared and domain-specific user representations,
learned by variational bipartite graph encoders (VBGE), for cross-domain recommendation.

Each domain (DL side = source ``s``, CF side = target ``t``) has N(0, 1) user and item tables and a *specific*
VBGE over its row-normalised graph (``UV = D_u^-1 A``, ``VU = D_i^-1 Aᵀ``): ``layers - 1`` DGCN layers (``u' = ReLU(W[
GCN(GCN(u, VU), UV) ‖ u])``, items mirrored, ``GCN(x, adj) = LeakyReLU(adj x W + b)``), then a last layer
with a mean and a log-std head per side, ``σ = exp(0.1 + 0.9 softplus(logstd))``, sampled as ``z = μ + ε
exp(σ)`` in training (the authors' double exponential) and ``μ`` in evaluation, dropout before every layer.
A *cross* VBGE encodes two more user tables: every layer runs the source user path on the source graph and
the target one on the target graph and mixes them per user, ``λ_u S + (1 - λ_u) T`` (``λ_u``: the user's
source share of training interactions), giving the shared latent ``z_sh``.  A domain's user is ``z_sh +
z_specific``, scored by dot products with the domain's items and trained by sigmoid cross-entropy on every
training interaction of both domains (the user's positive in the other domain a uniform draw among their
items there; one uniform negative per domain), plus each specific VBGE's ``KL_user + KL_item`` towards the
prior ``N(0, σ_p)`` (``logstd = 1``: ``σ_p = 3.6036``), ``(1 - β) KL(q_sh ‖ prior)`` and ``β`` times the KL
from ``q_sh`` to each domain's *share prior* (a user-only VBGE per domain on the specific user table).  For
the first ``warmup_epochs`` epochs only the specific encoders run.  CF-side items are ranked by ``μ_sh + μ_t``.

Defaults: the authors' ``train_rec.py`` (cjx96/DisenCDR @ 4e6d60b): dim 128, GNN 2, dropout 0.3, LeakyReLU
0.1, beta 0.9, batch 1024, Adam lr 1e-3 (their ``weight_decay=5e-4`` never reaches the optimiser), 50
epochs, evaluation every 10.

Differences from the authors' code and why:

* ``λ_u`` is per user, as in the paper; the code's ``rate`` is one scalar, the ratio of the last user in its
  loop (a bug).  ``share_rate: last_user`` reproduces it (the last user with rows in both domains).
* Users without rows in a domain (jmf's cold-start splits; the authors' users all have both): each domain's
  encoder still encodes every user (a graph row of zeros), and the user's examples have no positive in the
  missing domain, so that domain's two cross-entropy terms skip them (means over the rows that have one).
  ``λ_u`` is 1 for a user with source rows only (0.5 with none at all).
* ``warmup_epochs: 9`` is the authors' ``epoch < 10`` with epochs counted from 1.
* Adam's step count is global in optax and per parameter in torch (a parameter's state starts at its
  first gradient), so just after the warm-up the shared parameters' updates are larger with
  ``adam_state: global`` (the second moment's bias correction is ~1 instead of ``1 - 0.999^k``): ~3-6x lr
  over the first few hundred steps, ~1x after ten epochs.  ``adam_state: first_gradient`` is torch's
  (:func:`jmf.optim.adam_from_first_gradient`); ``global`` stays the default, which the recorded runs used.
* The interactions are reshuffled every epoch (the authors shuffle once); the negative is redrawn up to 5
  times when it is a training item of the user (the authors draw at most 5 times and keep the last).
* Epochs are selected on jmf's validation fold (``monitor``, ``patience``) with jmf's evaluator; the authors
  evaluate on the test lines every 10 epochs (999 sampled negatives) and report the best.
* Random numbers are counter hashes (dropout masks, ``ε``), not torch's generator; ``ε`` is drawn for the
  batch's rows only (one draw per node and step, as the authors').  ``adj @ (x W)`` is computed as
  ``(adj @ x) W`` when that multiplies fewer rows, and ``Linear([h ‖ x])`` as ``h W_h + x W_x`` (equal up
  to rounding).  Parameters that never reach the loss (the authors' ``share_mean``/``share_sigma``, the item
  side of the share-prior VBGEs) are not created.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jmf.data.split import SplitData, dl_side_missing
from jmf.errors import ConfigError
from jmf.models.graph.adjacency import bipartite_edges, to_items, to_users
from jmf.models.graph.cdrib import _dropout, _gcn_init, _linear, _mix, init_vbge
from jmf.models.graph.common import GraphModel, Triples, check_matmul_dtype, dense

DOMAINS = ("s", "t")          # source (the DL side, split.dl), target (the CF side, split.train)
USER = ("gc1", "gc3", "user_union")          # the user path's GCNs and union of a VBGE layer
ITEM = ("gc2", "gc4", "item_union")
CROSS = {"s": ("gc1", "gc3", "source_user_union"), "t": ("gc2", "gc4", "target_user_union")}
PRIOR_LOGSTD = 1.0            # the prior N(0, σ_p): "logstd" 1, σ_p = exp(0.1 + 0.9 softplus(1)) = 3.6036


class DisenCDR(GraphModel):
    """DisenCDR (see the module docstring).

    Args:
      dim: width of the embeddings and of every layer.  layers: VBGE layers (``layers - 1`` DGCN layers,
        then the variational last layer; the authors' ``GNN``).
      dropout: dropout rate before the VBGE layers.  leaky: LeakyReLU slope of the graph convolutions.
      beta: weight of the KL from the shared latent to the share priors (``1 - beta``: to N(0, σ_p)).
      warmup_epochs: first epochs that train the specific encoders only.
      share_rate: ``user`` (per-user ``λ_u``, the paper) or ``last_user`` (the code's scalar).
      adam_state: ``global`` (optax's one step count) or ``first_gradient`` (torch's per-parameter state).
      matmul_dtype: ``float32`` or ``bfloat16``: the encoders' dense products in bfloat16 with float32
        accumulation (:func:`~jmf.models.graph.common.dense`; a speed option where the hardware has a
        bfloat16 rate, checked against float32 by ``benchmarks/bf16_check.py``).
      (the rest: :class:`~jmf.models.graph.common.GraphModel`)
    """

    name = "disencdr"

    def __init__(self, dim: int = 128, layers: int = 2, dropout: float = 0.3, leaky: float = 0.1, beta: float = 0.9,
                 warmup_epochs: int = 9, share_rate: str = "user", adam_state: str = "global", epochs: int = 50,
                 batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 0,
                 eval_every: int = 10, monitor: str = "ndcg@10", eval_batch_size: int = 512, matmul_dtype: str = "float32"):
        self._init_base(dim, epochs, batch_size, lr, weight_decay, patience, eval_every, monitor, eval_batch_size)
        if layers < 1 or not 0 <= dropout < 1 or warmup_epochs < 0 or not 0 <= beta <= 1:
            raise ConfigError(f"model.layers / dropout / warmup_epochs / beta: {layers} / {dropout} / "
                              f"{warmup_epochs} / {beta} must be >= 1 / in [0, 1) / >= 0 / in [0, 1]")
        if share_rate not in ("user", "last_user"):
            raise ConfigError(f"model.share_rate: {share_rate!r} is not user|last_user")
        self.layers, self.dropout, self.leaky, self.beta = layers, dropout, leaky, beta
        if adam_state not in ("global", "first_gradient"):
            raise ConfigError(f"model.adam_state: {adam_state!r} is not global|first_gradient")
        self.warmup_epochs, self.share_rate, self.adam_state = warmup_epochs, share_rate, adam_state
        self.matmul_dtype = check_matmul_dtype(matmul_dtype)

    # --------------------------------------------------------------- data
    def prepare(self, split: SplitData) -> dict:
        mats = {"s": sp.csr_matrix(split.dl), "t": sp.csr_matrix(split.train)}
        if mats["s"].nnz == 0:
            raise ConfigError(dl_side_missing(split.data, split.partition, "model=disencdr"))
        self.triples = {d: Triples(m) for d, m in mats.items()}
        self.n_items = {d: m.shape[1] for d, m in mats.items()}
        self.n_users = split.n_users
        self.degree = {d: np.diff(m.indptr) for d, m in mats.items()}
        self.n_steps = self.steps_per_epoch()
        return {"graph": {d: bipartite_edges(mats[d], "row") for d in DOMAINS},
                "rate": jnp.asarray(self.source_shares()[:, None], jnp.float32)}

    def source_shares(self) -> np.ndarray:
        """``[U]`` source shares ``λ_u = |S(u)| / (|S(u)| + |T(u)|)`` (0.5 without rows), or the code's scalar."""
        s, t = self.degree["s"].astype(np.float64), self.degree["t"].astype(np.float64)
        lam = np.where(s + t > 0, s / np.maximum(s + t, 1), 0.5)
        if self.share_rate == "last_user":
            both = np.flatnonzero((s > 0) & (t > 0))
            lam = np.full_like(lam, lam[both[-1]] if len(both) else 0.5)
        return lam

    def init_params(self, split: SplitData, key: jax.Array) -> dict:
        # host draws seeded by the key (as CDRIB: jax.random compiles one kernel per parameter)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        d, U = self.dim, self.n_users

        def table(n: int) -> jax.Array:
            return jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
        emb = {"su": table(U), "tu": table(U), "si": table(self.n_items["s"]), "ti": table(self.n_items["t"]),
               "su_sh": table(U), "tu_sh": table(U)}
        return {"emb": emb, "spec": {x: init_vbge(rng, d, self.layers) for x in DOMAINS},
                "prior": {x: _user_side(init_vbge(rng, d, self.layers)) for x in DOMAINS},
                "cross": init_cross(rng, d, self.layers)}

    # --------------------------------------------------------------- model
    def specific(self, params: dict, data: dict, domain: str, seed: jax.Array | None) -> tuple:
        """``(μ_u, logstd_u, μ_i, logstd_i)`` of a domain's specific VBGE (``seed=None``: evaluation)."""
        emb = params["emb"]
        return specific_vbge(params["spec"][domain], emb[f"{domain}u"], emb[f"{domain}i"], data["graph"][domain],
                             self.leaky, seed, self.dropout)

    def shared(self, params: dict, data: dict, seed: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """``(μ_sh, logstd_sh)`` ``[U, d]`` of the cross VBGE."""
        emb = params["emb"]
        return cross_vbge(params["cross"], emb["su_sh"], emb["tu_sh"], data["graph"], data["rate"], self.leaky,
                          seed, self.dropout)

    def loss(self, params, data, batch, key):
        seeds = jax.random.bits(key, (6,), jnp.uint32)       # dropout: 0-1 specific, 2-4 shared; 5: ε
        users = batch["users"]
        parts, rows = {}, {}
        for j, d in enumerate(DOMAINS):
            mu_u, s_u, mu_i, s_i = self.specific(params, data, d, seeds[j])
            parts[f"kl_{d}"] = kl_prior(mu_u, s_u) + kl_prior(mu_i, s_i)
            rows[d] = [sample_rows(mu_u, s_u, users, seeds[5], 2 * j)] + \
                [sample_rows(mu_i, s_i, batch[f"{c}_{d}"], seeds[5], 2 * j + 1) for c in ("pos", "neg")]
        on = batch["step"] // self.n_steps >= self.warmup_epochs

        def share(_):
            mu, s = self.shared(params, data, seeds[2])
            close = sum(kld(mu, s, *self.share_prior(params, data, d, seeds[3 + j])) for j, d in enumerate(DOMAINS))
            return sample_rows(mu, s, users, seeds[5], 4), (1 - self.beta) * kl_prior(mu, s) + self.beta * close

        def warm(_):
            return jnp.zeros((users.shape[0], self.dim), jnp.float32), jnp.zeros((), jnp.float32)
        z_sh, parts["kl_share"] = jax.lax.cond(on, share, warm, None)
        for d in DOMAINS:
            user, pos, neg = rows[d]
            user = user + z_sh
            bce = jax.nn.softplus(-(user * pos).sum(-1)) + jax.nn.softplus((user * neg).sum(-1))
            has = batch[f"has_{d}"]
            parts[f"bce_{d}"] = jnp.where(has, bce, 0.0).sum() / jnp.maximum(has.sum(), 1)
        return sum(parts.values()), parts

    def share_prior(self, params: dict, data: dict, domain: str, seed: jax.Array | None) -> tuple:
        """``(μ_d, logstd_d)`` of a domain's share-prior VBGE, on the domain's specific user table."""
        return share_prior_vbge(params["prior"][domain], params["emb"][f"{domain}u"], data["graph"][domain],
                                self.leaky, seed, self.dropout)

    def embed(self, params, data):
        """Evaluation: target users ``μ_sh + μ_t`` (the authors' ``evaluate_embedding``), CF-side items ``μ``."""
        mu_u, _, mu_i, _ = self.specific(params, data, "t", None)
        return self.shared(params, data, None)[0] + mu_u, mu_i

    trains_both_sides = True

    def embed_dl(self, params, data):
        """The source domain, as the authors evaluate it: users ``μ_sh + μ_s``, DL-side items ``μ``."""
        mu_u, _, mu_i, _ = self.specific(params, data, "s", None)
        return self.shared(params, data, None)[0] + mu_u, mu_i

    # --------------------------------------------------------------- batches
    def steps_per_epoch(self) -> int:
        return max(1, -(-sum(len(t) for t in self.triples.values()) // self.batch_size))

    def sample(self, rng: np.random.Generator, n_steps: int, epoch: int) -> dict[str, np.ndarray]:
        """Every training interaction of both domains once (shuffled; the tail padded from the head), with
        the user's uniform positive in the other domain and one negative per domain."""
        s, t = self.triples["s"], self.triples["t"]
        users, items = np.concatenate([s.users, t.users]), np.concatenate([s.items, t.items])
        tgt = np.concatenate([np.zeros(len(s), bool), np.ones(len(t), bool)])
        total = n_steps * self.batch_size
        order = rng.permutation(len(users))
        order = np.concatenate([order] * -(-total // len(order)))[:total]
        users, items, tgt = users[order], items[order], tgt[order]
        out = {"users": users, "pos_s": np.where(tgt, s.other_positive(users, rng), items),
               "pos_t": np.where(tgt, items, t.other_positive(users, rng)),
               "neg_s": s.negatives(users, (total,), rng), "neg_t": t.negatives(users, (total,), rng),
               "has_s": self.degree["s"][users] > 0, "has_t": self.degree["t"][users] > 0}
        return {k: v.reshape(n_steps, self.batch_size).astype(bool if v.dtype == bool else np.int32)
                for k, v in out.items()}


# ------------------------------------------------------------------- the encoders (pure functions)
def specific_vbge(p: dict, u: jax.Array, v: jax.Array, graph, leaky: float, seed: jax.Array | None = None,
                  rate: float = 0.0) -> tuple:
    """The authors' ``singleVBGE.forward``: ``(μ_u, logstd_u, μ_i, logstd_i)``; dropout before every layer."""
    for j, layer in enumerate([*p["dgcn"], None]):
        u, v = _drop(seed, 2 * j, u, rate), _drop(seed, 2 * j + 1, v, rate)
        if layer is not None:
            u, v = _side_layer(layer, u, graph, USER, leaky), _side_layer(layer, v, graph, ITEM, leaky, items=True)
    return (*_heads(p["last"], u, graph, USER, leaky), *_heads(p["last"], v, graph, ITEM, leaky, items=True))


def share_prior_vbge(p: dict, u: jax.Array, graph, leaky: float, seed: jax.Array | None = None,
                     rate: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """The authors' ``singleVBGE.forward_user_share``: ``(μ, logstd)``; dropout before the DGCN layers only."""
    for j, layer in enumerate(p["dgcn"]):
        u = _side_layer(layer, _drop(seed, j, u, rate), graph, USER, leaky)
    return _heads(p["last"], u, graph, USER, leaky)


def cross_vbge(p: dict, u_s: jax.Array, u_t: jax.Array, graphs: dict, lam: jax.Array, leaky: float,
               seed: jax.Array | None = None, rate: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """The authors' ``crossVBGE``: ``(μ, logstd)`` mixed by ``lam`` (``[U, 1]``) from the source path on the
    source graph and the target path on the target graph; dropout before the DGCN layers only."""
    for j, layer in enumerate(p["dgcn"]):
        u_s, u_t = _drop(seed, 2 * j, u_s, rate), _drop(seed, 2 * j + 1, u_t, rate)
        u_s = u_t = (lam * _side_layer(layer, u_s, graphs["s"], CROSS["s"], leaky)
                     + (1 - lam) * _side_layer(layer, u_t, graphs["t"], CROSS["t"], leaky))
    mu_s, s_s = _heads(p["last"], u_s, graphs["s"], CROSS["s"], leaky)
    mu_t, s_t = _heads(p["last"], u_t, graphs["t"], CROSS["t"], leaky)
    return lam * mu_s + (1 - lam) * mu_t, lam * s_s + (1 - lam) * s_t


def _hop(p: dict, x: jax.Array, graph, names: list, leaky: float, to_item_side: bool) -> list[jax.Array]:
    """``LeakyReLU(adj @ (x W) + b)`` for each GCN of ``names``: users -> items over ``VU`` or back over ``UV``.

    The product runs on the fewer rows: ``adj @ (x W)`` or ``(adj @ x) W`` (equal up to rounding).  Several
    heads share ``adj @ x``; propagated after their products they go one at a time, as the CPU's CSR kernel
    takes ~2.5x longer for one 256-wide product than for two 128-wide ones.
    """
    n_users, n_items = graph.A.shape
    n_out = n_items if to_item_side else n_users
    spread = (lambda y: to_items(graph, y)) if to_item_side else (lambda y: to_users(graph, y))
    heads = [p[n] for n in names]
    if x.shape[0] > n_out:
        y = spread(x)
        outs = [dense(y, w) + b for w, b in heads]
    else:
        outs = [spread(dense(x, w)) + b for w, b in heads]
    return [jax.nn.leaky_relu(out, leaky) for out in outs]


def _side_layer(p: dict, x: jax.Array, graph, names: tuple, leaky: float, items: bool = False) -> jax.Array:
    """One side of a DGCN layer: users ``ReLU(Linear([GCN_b(GCN_a(u, VU), UV) ‖ u]))``, items mirrored."""
    first, second, union = names
    (h,) = _hop(p, x, graph, [first], leaky, not items)
    (h,) = _hop(p, h, graph, [second], leaky, items)
    return jax.nn.relu(_union(p[union], h, x))


def _heads(p: dict, x: jax.Array, graph, names: tuple, leaky: float, items: bool = False) -> tuple:
    """A last layer's ``(μ, logstd)`` of one side: two hops (users: over ``VU`` then ``UV``; items: mirrored),
    the second with a mean and a log-std GCN, each concatenated with ``x`` into its Linear (one product
    of ``x`` with both Linears' halves)."""
    first, second, union = names
    (h,) = _hop(p, x, graph, [first], leaky, not items)
    h_mean, h_logstd = _hop(p, h, graph, [f"{second}_mean", f"{second}_logstd"], leaky, items)
    (w_mean, b_mean), (w_logstd, b_logstd) = p[f"{union}_mean"], p[f"{union}_logstd"]
    d = h.shape[1]
    x_mean, x_logstd = jnp.split(dense(x, jnp.concatenate([w_mean[d:], w_logstd[d:]], 1)), 2, axis=1)
    return dense(h_mean, w_mean[:d]) + x_mean + b_mean, dense(h_logstd, w_logstd[:d]) + x_logstd + b_logstd


def _union(p: tuple, h: jax.Array, x: jax.Array) -> jax.Array:
    """``Linear([h ‖ x])`` as ``h W_h + x W_x + b``: the ``[N, 2d]`` concatenation is never written."""
    w, b = p
    return dense(h, w[:h.shape[1]]) + dense(x, w[h.shape[1]:]) + b


def _drop(seed: jax.Array | None, stream: int, x: jax.Array, rate: float) -> jax.Array:
    return x if seed is None else _dropout(seed, stream, x, rate)


# ------------------------------------------------------------------- Gaussians
def log_sigma(logstd: jax.Array) -> jax.Array:
    """The authors' ``log σ = 0.1 + 0.9 softplus(logstd)``."""
    return 0.1 + 0.9 * jax.nn.softplus(logstd)


def kld(mu_1: jax.Array, logstd_1: jax.Array, mu_2, logstd_2) -> jax.Array:
    """``KL(N(μ_1, σ_1²) ‖ N(μ_2, σ_2²))`` per element (``σ`` of :func:`log_sigma`), averaged over rows and
    summed over dimensions (the authors' ``_kld_gauss``)."""
    l_1, l_2 = log_sigma(logstd_1), log_sigma(jnp.asarray(logstd_2, jnp.float32))
    kl = l_2 - l_1 + (jnp.exp(2 * l_1) + (mu_1 - mu_2) ** 2) / (2 * jnp.exp(2 * l_2)) - 0.5
    return kl.mean(0).sum()


def kl_prior(mu: jax.Array, logstd: jax.Array) -> jax.Array:
    """:func:`kld` towards the prior ``N(0, σ_p)``."""
    return kld(mu, logstd, 0.0, PRIOR_LOGSTD)


def sample_rows(mu: jax.Array, logstd: jax.Array, rows: jax.Array, seed: jax.Array, stream: int) -> jax.Array:
    """``z = μ + ε exp(σ)`` at ``rows`` (the authors' ``reparameters``: ``σ`` is already ``exp(log σ)``, so
    the noise scale is a double exponential); ``ε`` is a hash of (seed, stream, row, dimension), so a row
    that appears twice in a batch gets one draw, as it would from a full-table draw."""
    dim = mu.shape[1]
    count = rows.astype(jnp.uint32)[:, None] * jnp.uint32(dim) + jax.lax.iota(jnp.uint32, dim)[None]
    key = _mix(seed + np.uint32((stream * 0x9E3779B9) & 0xFFFFFFFF))
    uniform = ((_mix(_mix(count ^ key) + key) >> 9).astype(jnp.float32) + 0.5) * (2.0 ** -22) - 1.0
    eps = np.sqrt(2.0) * jax.lax.erf_inv(uniform)               # N(0, 1), as cdrib._normal
    return mu[rows] + eps * jnp.exp(jnp.exp(log_sigma(logstd[rows])))


# ------------------------------------------------------------------- parameters
def _user_side(vbge: dict) -> dict:
    """The parameters ``forward_user_share`` reads (the item side of a share-prior VBGE is never used)."""
    keep = {"gc1", "gc3", "user_union", "gc3_mean", "gc3_logstd", "user_union_mean", "user_union_logstd"}
    return {"dgcn": [{k: v for k, v in layer.items() if k in keep} for layer in vbge["dgcn"]],
            "last": {k: v for k, v in vbge["last"].items() if k in keep}}


def init_cross(rng: np.random.Generator, dim: int, layers: int) -> dict:
    """The cross VBGE: per DGCN layer ``gc1-gc4`` and the source / target user unions; the last layer's
    ``gc1``, ``gc2``, mean and log-std GCNs ``gc3_*`` (source), ``gc4_*`` (target) and their unions."""
    dgcn = [{**{f"gc{j}": _gcn_init(rng, dim, dim) for j in (1, 2, 3, 4)},
             **{f"{side}_user_union": _linear(rng, 2 * dim, dim) for side in ("source", "target")}}
            for _ in range(layers - 1)]
    names = ("gc1", "gc2", "gc3_mean", "gc3_logstd", "gc4_mean", "gc4_logstd")
    last = {**{n: _gcn_init(rng, dim, dim) for n in names},
            **{f"{side}_user_union_{h}": _linear(rng, 2 * dim, dim) for side in ("source", "target")
               for h in ("mean", "logstd")}}
    return {"dgcn": dgcn, "last": last}
