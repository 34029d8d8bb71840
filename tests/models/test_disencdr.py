"""DisenCDR (jmf/models/graph/disencdr.py): the encoders against a dense numpy reference, the KL against the
Gaussian closed form, the training noise, transfer to cold-start users, exact resume and 1 vs 4 devices.

The model's training step is a large XLA program (five graph encoders and their gradients): ~30 s of LLVM
optimisation on the 2-core CPU against ~9 s without, so this module compiles with
``jax_disable_most_optimizations`` and a persistent compilation cache in a temporary folder (the reference,
crashed and resumed fits share their programs); both are restored afterwards.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy import integrate, stats

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.cf.popularity import Popularity
from jmf.models.graph import disencdr
from jmf.models.graph.adjacency import bipartite_edges
from jmf.models.graph.cdrib import init_vbge
from jmf.models.graph.disencdr import DisenCDR
from jmf.models.base import RunContext

from graph_checks import crash_then_resume, four_devices_match_one

EVAL = EvalConfig(ks=(10,), ratings=False)


@pytest.fixture(autouse=True, scope="module")
def _quick(quick_compiles):
    """Unoptimised XLA and a module-wide compilation cache (tests/conftest.py::quick_compiles)."""
    yield


# ------------------------------------------------------------------- the numpy reference (authors' order)
def _row_normalised(A):
    d = A.sum(1, keepdims=True)
    return np.where(d > 0, A / np.maximum(d, 1), 0.0)


def _gcn(x, adj, wb, leaky=0.1):
    """``LeakyReLU(adj @ (x W) + b)``: the authors' ``GCN(GraphConvolution)``."""
    y = adj @ (x @ np.asarray(wb[0], float)) + np.asarray(wb[1], float)
    return np.where(y > 0, y, leaky * y)


def _linear(wb, *parts):
    return np.concatenate(parts, 1) @ np.asarray(wb[0], float) + np.asarray(wb[1], float)


def _np_heads(q, x, first_adj, second_adj, names):
    first, second, union = names
    h = _gcn(x, first_adj, q[first])
    return (_linear(q[f"{union}_mean"], _gcn(h, second_adj, q[f"{second}_mean"]), x),
            _linear(q[f"{union}_logstd"], _gcn(h, second_adj, q[f"{second}_logstd"]), x))


def _np_user_layer(p, u, UV, VU, names):
    first, second, union = names
    return np.maximum(_linear(p[union], _gcn(_gcn(u, VU, p[first]), UV, p[second]), u), 0)


def _np_specific(p, u, v, A):
    """singleVBGE.forward in evaluation mode: DGCN layers, then the last layer's means and log-stds."""
    UV, VU = _row_normalised(A), _row_normalised(A.T)
    for layer in p["dgcn"]:
        u, v = (_np_user_layer(layer, u, UV, VU, ("gc1", "gc3", "user_union")),
                np.maximum(_linear(layer["item_union"], _gcn(_gcn(v, UV, layer["gc2"]), VU, layer["gc4"]), v), 0))
    return (*_np_heads(p["last"], u, VU, UV, ("gc1", "gc3", "user_union")),
            *_np_heads(p["last"], v, UV, VU, ("gc2", "gc4", "item_union")))


def _np_share_prior(p, u, A):
    UV, VU = _row_normalised(A), _row_normalised(A.T)
    for layer in p["dgcn"]:
        u = _np_user_layer(layer, u, UV, VU, ("gc1", "gc3", "user_union"))
    return _np_heads(p["last"], u, VU, UV, ("gc1", "gc3", "user_union"))


def _np_cross(p, us, ut, As, At, lam):
    """crossVBGE: per layer ``lam S + (1 - lam) T`` fed to both paths; the last layer's heads mixed by ``lam``."""
    sUV, sVU, tUV, tVU = _row_normalised(As), _row_normalised(As.T), _row_normalised(At), _row_normalised(At.T)
    for layer in p["dgcn"]:
        us = ut = (lam * _np_user_layer(layer, us, sUV, sVU, ("gc1", "gc3", "source_user_union"))
                   + (1 - lam) * _np_user_layer(layer, ut, tUV, tVU, ("gc2", "gc4", "target_user_union")))
    mu_s, s_s = _np_heads(p["last"], us, sVU, sUV, ("gc1", "gc3", "source_user_union"))
    mu_t, s_t = _np_heads(p["last"], ut, tVU, tUV, ("gc2", "gc4", "target_user_union"))
    return lam * mu_s + (1 - lam) * mu_t, lam * s_s + (1 - lam) * s_t


def _f64(tree):
    return jax.tree.map(lambda x: np.asarray(x, float), tree)


def test_encoders_match_a_dense_reference():
    """7 users, 5 source and 6 target items, d = 4: user 5 has no source rows, user 6 no target rows, source
    item 4 no users (zero graph rows and columns)."""
    rng = np.random.default_rng(0)
    As = (rng.random((7, 5)) < 0.5).astype(float)
    At = (rng.random((7, 6)) < 0.5).astype(float)
    As[:, 4], As[5], At[6] = 0, 0, 0
    As[[0, 1, 2, 3, 4, 6], rng.integers(0, 4, 6)] = 1
    At[np.arange(6), rng.integers(0, 6, 6)] = 1
    graphs = {"s": bipartite_edges(sp.csr_matrix(As), "row"), "t": bipartite_edges(sp.csr_matrix(At), "row")}
    spec, prior = init_vbge(rng, 4, 2), disencdr._user_side(init_vbge(rng, 4, 2))
    cross = disencdr.init_cross(rng, 4, 2)
    u, v, us, ut = (rng.standard_normal(shape).astype(np.float32) for shape in ((7, 4), (5, 4), (7, 4), (7, 4)))
    lam = np.array([[0.2], [0.5], [0.7], [0.4], [0.6], [1.0], [0.0]], np.float32)

    def run(spec, prior, cross):
        return (disencdr.specific_vbge(spec, u, v, graphs["s"], 0.1),
                disencdr.share_prior_vbge(prior, u, graphs["s"], 0.1),
                disencdr.cross_vbge(cross, us, ut, graphs, jnp.asarray(lam), 0.1))
    got = jax.jit(run)(spec, prior, cross)
    spec, prior, cross = _f64(spec), _f64(prior), _f64(cross)
    want = (_np_specific(spec, u.astype(float), v.astype(float), As), _np_share_prior(prior, u.astype(float), As),
            _np_cross(cross, us.astype(float), ut.astype(float), As, At, lam.astype(float)))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), w, atol=1e-5)
    assert not np.allclose(want[0][2][4], want[0][2][3])          # the isolated item still gets its own row


def test_bfloat16_products_stay_close_to_float32():
    """``matmul_dtype: bfloat16``: every dense product takes bfloat16 inputs with float32 accumulation, and the
    encoders' outputs stay within bfloat16 rounding of the float32 ones (8 bits of mantissa: ~0.4 % per
    product); an unknown dtype is a config error."""
    from jmf.errors import ConfigError
    from jmf.models.graph.common import dense, matmul_dtype

    rng = np.random.default_rng(1)
    A = (rng.random((30, 20)) < 0.3).astype(float)
    A[np.arange(20), np.arange(20)] = 1
    graph = bipartite_edges(sp.csr_matrix(A), "row")
    spec = init_vbge(rng, 16, 2)
    u, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((30, 16), (20, 16)))

    def run(dtype):
        with matmul_dtype(dtype):
            return jax.jit(lambda p: disencdr.specific_vbge(p, u, v, graph, 0.1))(spec)
    full, half = run("float32"), run("bfloat16")
    for f, h in zip(full, half):
        f, h = np.asarray(f), np.asarray(h)
        assert not np.array_equal(f, h)
        np.testing.assert_allclose(h, f, atol=0.05 * np.abs(f).max())
    with matmul_dtype("bfloat16"):
        eqn = jax.make_jaxpr(dense)(u, np.ones((16, 4), np.float32)).jaxpr.eqns
    dot = next(e for e in eqn if e.primitive.name == "dot_general")
    assert [x.aval.dtype for x in dot.invars] == [jnp.bfloat16] * 2 and dot.outvars[0].aval.dtype == jnp.float32
    with pytest.raises(ConfigError, match="model.matmul_dtype"):
        DisenCDR(matmul_dtype="float16")


def _tiny_split():
    data = synthetic(n_users=60, n_items=40, n_categories=4, interactions_per_user=6, seed=0)
    return make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)


def test_evaluation_tables_are_shared_plus_target_means():
    """``embed``: ``μ_sh + μ_t`` for every user, ``μ`` of the target items, over the split's graphs and
    per-user ``λ_u`` (3 layers: two stacked DGCN layers)."""
    split = _tiny_split()
    model = DisenCDR(dim=4, layers=3)
    data = model.prepare(split)
    params = model.init_params(split, jax.random.key(0))
    users, items = jax.jit(model.embed)(params, data)
    p = _f64(params)
    As, At = (split.dl.toarray() != 0).astype(float), (split.train.toarray() != 0).astype(float)
    s, t = As.sum(1, keepdims=True), At.sum(1, keepdims=True)
    lam = np.where(s + t > 0, s / np.maximum(s + t, 1), 0.5)
    cold = np.asarray(split.cold_test_users)
    assert (lam[cold] == 1).all() and ((lam > 0) & (lam < 1)).any()
    mu_u, _, mu_i, _ = _np_specific(p["spec"]["t"], p["emb"]["tu"], p["emb"]["ti"], At)
    mu_sh, _ = _np_cross(p["cross"], p["emb"]["su_sh"], p["emb"]["tu_sh"], As, At, lam)
    np.testing.assert_allclose(np.asarray(users), mu_sh + mu_u, atol=1e-5)
    np.testing.assert_allclose(np.asarray(items), mu_i, atol=1e-5)
    last = DisenCDR(share_rate="last_user")
    last.prepare(split)
    both = np.flatnonzero((s[:, 0] > 0) & (t[:, 0] > 0))[-1]
    np.testing.assert_allclose(last.source_shares(), lam[both, 0])   # the authors' scalar: the last user's share
    assert model.rates is False                                      # ranking only: no RMSE/MAE in its tables


def test_kl_is_the_gaussian_closed_form():
    """``kld`` against numerical integration of ``∫ p log(p/q)``, averaged over rows, summed over dimensions."""
    mu_1 = np.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]], np.float32)
    s_1 = np.array([[0.0, 1.0, -3.0], [0.4, -0.5, 2.0]], np.float32)
    mu_2 = np.array([[0.0, 1.0, -0.5], [1.0, 0.3, 0.2]], np.float32)
    s_2 = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]], np.float32)

    def sigma(s):
        return math.exp(0.1 + 0.9 * math.log1p(math.exp(s)))
    assert abs(sigma(disencdr.PRIOR_LOGSTD) - 3.6036) < 1e-4

    def integral(m1, l1, m2, l2):
        out = np.zeros(m1.shape)
        for idx in np.ndindex(m1.shape):
            p = stats.norm(m1[idx], sigma(float(l1[idx])))
            q = stats.norm(np.broadcast_to(m2, m1.shape)[idx], sigma(float(np.broadcast_to(l2, m1.shape)[idx])))
            out[idx] = integrate.quad(lambda x, p=p, q=q: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -80, 80,
                                      limit=400)[0]
        return out.mean(0).sum()
    got = float(disencdr.kld(jnp.asarray(mu_1), jnp.asarray(s_1), jnp.asarray(mu_2), jnp.asarray(s_2)))
    np.testing.assert_allclose(got, integral(mu_1, s_1, mu_2, s_2), rtol=1e-5)
    got = float(disencdr.kl_prior(jnp.asarray(mu_1), jnp.asarray(s_1)))
    np.testing.assert_allclose(got, integral(mu_1, s_1, 0.0, 1.0), rtol=1e-5)
    assert float(disencdr.kld(jnp.asarray(mu_1), jnp.asarray(s_1), jnp.asarray(mu_1), jnp.asarray(s_1))) == 0.0


def test_training_noise_is_the_authors_double_exponential():
    """``z = μ + ε exp(σ)``, ``σ = exp(0.1 + 0.9 softplus(logstd))``; one draw per row and step."""
    mu = jnp.asarray(np.linspace(-1, 1, 4096 * 2).reshape(4096, 2), jnp.float32)
    logstd = jnp.tile(jnp.asarray([[-2.0, 0.5]], jnp.float32), (4096, 1))
    rows = jnp.arange(4096)
    z = np.asarray(disencdr.sample_rows(mu, logstd, rows, jnp.uint32(3), 0))
    eps = (z - np.asarray(mu)) / np.exp(np.exp(0.1 + 0.9 * np.log1p(np.exp([-2.0, 0.5]))))
    assert np.abs(eps.mean(0)).max() < 0.05 and np.abs(eps.std(0) - 1).max() < 0.03
    assert abs(np.corrcoef(eps[:, 0], eps[:, 1])[0, 1]) < 0.05
    twice = np.asarray(disencdr.sample_rows(mu, logstd, jnp.asarray([7, 9, 7]), jnp.uint32(3), 0))
    np.testing.assert_array_equal(twice[0], twice[2])                 # a row drawn twice: one draw
    np.testing.assert_array_equal(twice[0], z[7])
    other = np.asarray(disencdr.sample_rows(mu, logstd, rows, jnp.uint32(3), 1))
    assert not np.allclose(other, z)                                   # another stream: another draw


def test_batches_cover_both_domains_with_the_other_domains_positive():
    split = _tiny_split()
    model = DisenCDR(batch_size=16)
    model.prepare(split)
    n_steps = model.steps_per_epoch()
    b = {k: v.reshape(-1) for k, v in model.sample(np.random.default_rng(0), n_steps, 0).items()}
    n = split.dl.nnz + split.train.nnz
    assert n_steps == -(-n // 16)
    S, T = split.dl.toarray() != 0, split.train.toarray() != 0
    u = b["users"][:n]
    np.testing.assert_array_equal(b["has_s"], S.any(1)[b["users"]])
    np.testing.assert_array_equal(b["has_t"], T.any(1)[b["users"]])
    assert S[u, b["pos_s"][:n]][b["has_s"][:n]].all() and T[u, b["pos_t"][:n]][b["has_t"][:n]].all()
    np.testing.assert_array_equal(np.bincount(u, minlength=len(S)), S.sum(1) + T.sum(1))   # each row once
    assert (~b["has_t"][:n]).sum() == S[~T.any(1)].sum() > 0           # cold users' source rows: no target
    assert S[b["users"], b["neg_s"]].mean() < 0.02 and T[b["users"], b["neg_t"]].mean() < 0.02


@pytest.mark.xfail(strict=True, reason="the authors' training noise exp(σ) >= 3.0 per dimension swamps a short fit "
                                       "(see the docstring); strict: a pass means the model changed")
def test_short_fit_ranks_cold_users_above_popularity():
    """A short fit (dim 16, 4 epochs) against popularity on the cold users' validation NDCG@10: not met.

    What was found: the fit stays at its initial level (valid/test NDCG@10 0.02-0.14 from seeds 0 and 1,
    before and after; popularity 0.272 / 0.283).  The training latents are ``μ + ε exp(σ)`` with ``σ >=
    e^0.1``, so the noise is >= 3.0 per dimension (the fitted ``exp(σ)`` sits at that floor) while the means
    start at ~0.2 per dimension (outputs of ``U(±1/√256)`` Linears): the gradient of a mean through a sampled
    partner has a signal-to-noise ratio of ~0.07 per step, and the BCE terms stay at ~40 per domain (logits
    dominated by noise).  Without the noise (``z = μ`` in training, everything else unchanged) the same fit
    learns (0.16-0.18 after 4 epochs, 0.24 / 0.27 after 10) but is still below popularity: lr 1e-3 on means
    that start at ~0.2 needs more than a few hundred steps.  At dim 64, 6 epochs, batch 32 and lr 3e-3 the
    authors' model reaches popularity's level on seed 0 (0.26 / 0.28) and not on seed 1 (0.23 / 0.19), in
    ~60 s.  On this split CDRIB also stays at popularity's level (tests/models/test_cdrib.py).
    """
    data = synthetic(n_users=400, n_items=200, n_categories=4, interactions_per_user=20, seed=0)
    split = make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)
    pop = Popularity()
    pop.fit(split)
    floor = evaluate_split(pop, split, "valid", EVAL)["ndcg@10"]
    model = DisenCDR(dim=16, epochs=4, batch_size=64, eval_every=1, warmup_epochs=1, patience=0)
    info = model.fit(split, _ctx(devices=1))
    assert info["train/best_valid_ndcg@10"] > floor, (info, floor)


def _ctx(out_dir=None, **kw):
    return RunContext(out_dir=out_dir, checkpoint=out_dir is not None, tensorboard=False, async_checkpoints=False,
                      **kw)


SMALL = {"dim": 8, "layers": 2, "epochs": 2, "batch_size": 32, "eval_every": 1, "warmup_epochs": 1,
         "monitor": "ndcg@10", "patience": 0}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    split = _tiny_split()
    model = DisenCDR(**SMALL)
    model.fit(split, _ctx(tmp_path_factory.mktemp("ref"), devices=1))
    return split, model


def test_crashed_fit_resumes_to_the_same_embeddings(reference, tmp_path, monkeypatch, caplog):
    """The run dies in its second validation (the first epoch after the warm-up); the same fit resumes from
    the first epoch's checkpoint and ends bit-identical to the uninterrupted one."""
    split, ref = reference
    crash_then_resume(DisenCDR, SMALL, split, ref, lambda: _ctx(tmp_path, devices=1), monkeypatch, caplog)


def test_4_devices_match_1(reference):
    split, one = reference
    four_devices_match_one(DisenCDR, SMALL, split, one, _ctx, lambda m: evaluate_split(m, split, "valid", EVAL)["ndcg@10"])
