"""Graph models against dense references, and on the engine: LightGCN, BiTGCF and JMF's graph encoder.

The references rebuild each model's propagation with dense numpy matrices on a tiny random graph; the
engine tests resume a crashed fit to identical embeddings and match 1 and 4 devices.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from flax import nnx

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.cf.popularity import Popularity
from jmf.models.encoders.graph import GraphEncoder
from jmf.models.graph import common
from jmf.models.graph.bitgcf import BiTGCF
from jmf.models.graph.lightgcn import LightGCN
from jmf.models.base import RunContext

EVAL = EvalConfig(ks=(10,), ratings=False)


def _tiny_split(seed=0):
    data = synthetic(n_users=60, n_items=40, n_categories=4, interactions_per_user=6, seed=seed)
    return make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)


def _sym(A: np.ndarray) -> np.ndarray:
    """``D^-½ A D^-½`` of the bipartite ``[U, I]`` block, as the ``[U+I, U+I]`` matrix."""
    U, I = A.shape
    full = np.zeros((U + I, U + I))
    full[:U, U:], full[U:, :U] = A, A.T
    d = full.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
    return inv[:, None] * full * inv[None, :]


@pytest.mark.parametrize("graph", ["target", "merged"])
def test_lightgcn_embeddings_are_the_mean_of_dense_propagations(graph):
    split = _tiny_split()
    model = LightGCN(dim=5, layers=3, graph=graph)
    data = model.prepare(split)
    import jax

    params = model.init_params(split, jax.random.key(0))
    users, items = (np.asarray(x) for x in model.embed(params, data))
    A = (split.train if graph == "target" else sp.hstack([split.train, split.dl])).toarray() > 0
    S = _sym(A.astype(float))
    E = np.concatenate([np.asarray(params["users"]), np.asarray(params["items"])]).astype(float)
    layers = [E]
    for _ in range(3):
        layers.append(S @ layers[-1])
    want = np.mean(layers, axis=0)
    U = split.n_users
    np.testing.assert_allclose(users, want[:U], atol=1e-5)
    np.testing.assert_allclose(items, want[U:U + split.train.shape[1]], atol=1e-5)


def test_bitgcf_layers_and_transfer_match_a_dense_reference():
    import jax

    split = _tiny_split(1)
    model = BiTGCF(dim=4, layers=2, lambda_s=0.7, lambda_t=0.9)
    data = model.prepare(split)
    params = model.init_params(split, jax.random.key(0))
    users, items = (np.asarray(x) for x in model.embed(params, data))

    def norm_adj(A):   # D̃^-1 (A + I) of the [U+I] bipartite graph
        U, I = A.shape
        full = np.eye(U + I)
        full[:U, U:], full[U:, :U] = full[:U, U:] + A, full[U:, :U] + A.T
        return full / full.sum(1, keepdims=True)

    A_s, A_t = (split.dl.toarray() > 0).astype(float), (split.train.toarray() > 0).astype(float)
    S_s, S_t = norm_adj(A_s), norm_adj(A_t)
    U = split.n_users
    deg_s, deg_t = A_s.sum(1), A_t.sum(1)
    share = np.where(deg_s + deg_t > 0, deg_s / np.maximum(deg_s + deg_t, 1), 0.5)[:, None]
    E_s = np.concatenate([params["su"], params["si"]]).astype(float)
    E_t = np.concatenate([params["tu"], params["ti"]]).astype(float)
    out_t = [E_t]
    for _ in range(2):
        M_s, M_t = S_s @ E_s, S_t @ E_t
        E_s, E_t = M_s + E_s * M_s, M_t + E_t * M_t
        us, ut = E_s[:U].copy(), E_t[:U].copy()
        lap = share * us + (1 - share) * ut
        E_s[:U] = (lap + 0.7 * us + 0.3 * ut) / 2
        E_t[:U] = (lap + 0.1 * us + 0.9 * ut) / 2
        out_t.append(E_t / np.linalg.norm(E_t, axis=1, keepdims=True))
    want = np.concatenate(out_t, axis=1)
    np.testing.assert_allclose(users, want[:U], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(items, want[U:], rtol=1e-4, atol=1e-5)


def test_graph_encoder_reads_a_user_through_the_propagated_item_graph():
    """``h_u = W mean_k Σ_j i^(k)_j / √(|x_u| d_j) + b`` with ``i^(k+1) = Âᵀ Â i^(k)`` -- dense reference."""
    rng = np.random.default_rng(0)
    o2 = sp.csr_matrix((rng.random((9, 7)) < 0.4).astype(np.float32))
    item_category = rng.integers(1, 3, 7)
    enc = GraphEncoder(n_items=7, n_categories=2, max_len=4, embed_dim=3, layers=2, out_dim=2, rngs=nnx.Rngs(0))
    shared = GraphEncoder.graph_inputs(o2, item_category)
    items = np.array([[1, 3, 0, 0], [7, 2, 5, 6]], np.int32)       # ids + 1, 0 = pad
    mask = items > 0
    h = np.asarray(enc(items, np.zeros_like(items), mask, **shared))
    A = o2.toarray()
    du, di = A.sum(1), A.sum(0)
    An = A / np.sqrt(np.maximum(np.outer(du, di), 1e-12)) * (A > 0)
    table = np.asarray(enc.items.embedding[...])[1:] + np.asarray(enc.categories.embedding[...])[item_category]
    layers = [table]
    for _ in range(2):
        layers.append(An.T @ (An @ layers[-1]))
    want = []
    for row, m in zip(items, mask):
        j = row[m] - 1
        w = 1 / np.sqrt(len(j) * np.maximum(di[j], 1))
        want.append(np.mean([(w[:, None] * t[j]).sum(0) for t in layers], axis=0))
    want = np.asarray(want) @ np.asarray(enc.out.kernel[...]) + np.asarray(enc.out.bias[...])
    np.testing.assert_allclose(h, want, atol=1e-5)


@pytest.fixture(scope="module")
def cold():
    # planted taste shared by every category (experiments/synthetic_cold_start.yaml, smaller)
    data = synthetic(n_users=600, n_items=160, n_categories=4, interactions_per_user=30, shared_dim=3,
                     specific_dim=0, shared_weight=1.0, temperature=0.25, seed=0)
    return make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)


def test_merged_lightgcn_transfers_to_cold_users_and_target_only_cannot(cold):
    pop = Popularity()
    pop.fit(cold)
    floor = evaluate_split(pop, cold, "test", EVAL)["ndcg@10"]
    got = {}
    for graph in ("target", "merged"):
        model = LightGCN(dim=16, epochs=15, batch_size=256, lr=0.01, graph=graph, patience=0)
        model.fit(cold, RunContext(seed=0, devices=1))
        got[graph] = evaluate_split(model, cold, "test", EVAL)["ndcg@10"]
    # a cold user has no O1 edge: target-only LightGCN ranks them by an untrained row, the merged graph
    # reaches them through their O2 items
    assert got["merged"] > 1.3 * floor and got["merged"] > 1.5 * got["target"], (got, floor)


SMALL = {"lightgcn": lambda: LightGCN(dim=8, epochs=3, batch_size=64, patience=0, graph="merged"),
         "bitgcf": lambda: BiTGCF(dim=8, layers=2, epochs=3, batch_size=16, patience=0)}


def _ctx(out_dir=None, **kw):
    return RunContext(out_dir=out_dir, checkpoint=out_dir is not None, tensorboard=False, async_checkpoints=False,
                      **kw)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_crashed_fit_resumes_to_the_same_embeddings(name, tmp_path, monkeypatch, caplog):
    split = _tiny_split()
    reference = SMALL[name]()
    reference.fit(split, _ctx(tmp_path / "ref", devices=1))
    real, calls = common.GraphModel._validate, []

    def crash_on_second(self, state):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(self, state)

    monkeypatch.setattr(common.GraphModel, "_validate", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        SMALL[name]().fit(split, _ctx(tmp_path / "run", devices=1))
    monkeypatch.setattr(common.GraphModel, "_validate", real)
    resumed = SMALL[name]()
    with caplog.at_level("INFO", logger="jmf"):
        resumed.fit(split, _ctx(tmp_path / "run", devices=1))
    assert "resumed from step" in caplog.text
    np.testing.assert_array_equal(np.asarray(resumed.user_table), np.asarray(reference.user_table))
    np.testing.assert_array_equal(np.asarray(resumed.item_table), np.asarray(reference.item_table))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_4_devices_match_1(name):
    split = _tiny_split()
    one, four = SMALL[name](), SMALL[name]()
    one.fit(split, _ctx(devices=1))
    four.fit(split, _ctx(devices=4))
    assert four.engine.n_devices == 4
    np.testing.assert_allclose(np.asarray(four.user_table), np.asarray(one.user_table), atol=1e-4)
    a, b = (evaluate_split(m, split, "test", EVAL)["ndcg@10"] for m in (one, four))
    assert abs(a - b) < 1e-4
