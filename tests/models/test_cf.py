"""CF models against independent references and planted structure."""

import numpy as np
import pytest
import scipy.sparse as sp

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import evaluate_full
from jmf.models.cf.ials import ImplicitALS
from jmf.models.cf.mf import MatrixFactorization
from jmf.models.cf.popularity import Popularity
from jmf.models.cf.svd import explained_variance, randomized_svd


def test_randomized_svd_matches_numpy():
    rng = np.random.default_rng(0)
    low_rank = (rng.normal(size=(300, 20)) * np.linspace(3, 1, 20)) @ rng.normal(size=(20, 200))
    mat = sp.csr_matrix(low_rank + sp.random(300, 200, density=0.05, random_state=0).toarray())
    u, s, vt = randomized_svd(mat, 10, n_iter=6)
    ref = np.linalg.svd(mat.toarray(), compute_uv=False)[:10]
    np.testing.assert_allclose(s, ref, rtol=1e-3)
    assert np.allclose(u.T @ u, np.eye(10), atol=1e-4)


def test_svd_recovers_planted_rank():
    data, truth = synthetic(n_users=400, n_items=300, n_categories=4, shared_dim=3, specific_dim=2,
                            return_truth=True, seed=0)
    affinity = truth.affinity(np.arange(400))  # planted rank 3 + 4*2 = 11
    rank = 3 + 4 * 2
    _, s, _ = randomized_svd(affinity, rank + 5, n_iter=6)
    ev = explained_variance(affinity, s)
    assert ev[rank - 1] > 0.9999
    assert ev[rank - 2] < 0.999  # one fewer factor does not suffice
    assert s[rank] / s[0] < 1e-4


@pytest.fixture(scope="module")
def implicit_split():
    data = synthetic(n_users=1500, n_items=800, n_categories=6, seed=1)
    return make_split(data, partition_categories(data), "ratio", seed=0)


def test_ials_beats_popularity_by_a_wide_margin(implicit_split):
    s = implicit_split
    pop = Popularity()
    pop.fit(s)
    als = ImplicitALS(dim=32, reg=0.1, alpha=10.0, epochs=10, devices=1)
    als.fit(s)
    pop_ndcg = evaluate_full(pop.score, s.train, s.test, ks=(10,))["ndcg@10"]
    als_ndcg = evaluate_full(als.score, s.train, s.test, ks=(10,))["ndcg@10"]
    assert als_ndcg > 2.0 * pop_ndcg, (als_ndcg, pop_ndcg)


def test_ials_cg_converges_to_exact_solution():
    """Many CG steps on one half-epoch reach the closed-form normal-equation solution."""
    rng = np.random.default_rng(0)
    mat = sp.random(30, 20, density=0.3, random_state=3, format="csr", dtype=np.float32)
    mat.data[:] = rng.integers(1, 4, mat.nnz)
    model = ImplicitALS(dim=4, reg=0.5, alpha=2.0, cg_steps=40, devices=1)
    side = model.prepare(mat)
    W = model.init_factors(30, 20, seed=0)   # [X; Y]
    Yn = np.asarray(W, np.float64)[30:]
    from jmf.models.cf.ials import _cg_half_epoch

    X1 = np.asarray(_cg_half_epoch(W, side, 0, reg=0.5, cg_steps=40, mesh=model.mesh))[:30]
    for u in range(30):
        c = np.ones(20)
        p = np.zeros(20)
        row = mat[u]
        c[row.indices] = 2.0 * row.data
        p[row.indices] = 1.0
        A = Yn.T @ (c[:, None] * Yn) + 0.5 * np.eye(4)
        np.testing.assert_allclose(X1[u], np.linalg.solve(A, Yn.T @ (c * p)), rtol=1e-3, atol=1e-4)


def test_mf_learns_ratings_better_than_item_means(data_dir):
    from jmf.data.movielens import load_ml100k
    from jmf.evaluate.protocols import evaluate_ratings

    data = load_ml100k(data_dir / "ml-100k")
    s = make_split(data, partition_categories(data), "ratio", by="global", test_ratio=0.2, valid_ratio=0.0, seed=0)
    mf = MatrixFactorization(dim=32, epochs=15, batch_size=64, lr=0.2, reg=0.05)
    mf.fit(s)
    pop = Popularity()
    pop.fit(s)
    mf_rmse = evaluate_ratings(mf.predict, s.test)["rmse"]
    assert mf_rmse < evaluate_ratings(pop.predict, s.test)["rmse"] - 0.02
    assert mf_rmse < 0.96


def test_ials_on_4_devices_equals_1_device():
    """The chunks split over 4 devices (shard_map) give the 1-device factors exactly (rows are independent)."""
    import jax

    mat = sp.random(300, 120, density=0.08, random_state=5, format="csr", dtype=np.float32)
    mat.data[:] = 1.0
    factors = {}
    for n in (1, 4):
        model = ImplicitALS(dim=8, devices=n, chunk_bytes=1 << 12)   # small chunks: several per bucket
        side = model.prepare(mat)
        W = model.epoch(model.init_factors(*mat.shape, seed=0), side)   # [X; Y]
        assert model.mesh.size == n == len(W.sharding.device_set)
        factors[n] = np.asarray(W)
    np.testing.assert_array_equal(factors[4], factors[1])
    with pytest.raises(ValueError, match="model.devices"):
        ImplicitALS(devices=len(jax.local_devices()) + 1).mesh


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_mf_grouped_update_equals_the_sorted_one_bit_for_bit(optimizer):
    """MF's mse scan groups each step's repeated rows once per epoch (``jmf.optim.first_occurrence``); its update
    must be :func:`jmf.optim.sparse_rows_update`'s (``jnp.unique`` in every step) to the last bit."""
    import jax
    import jax.numpy as jnp

    from jmf.optim import first_occurrence, grouped_rows_update
    from jmf.optim import build_optimizer, sparse_rows_update

    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 12, (5, 16)), jnp.int32)          # [S, B], many repeats
    group, target = first_occurrence(ids, 12)
    for s in range(ids.shape[0]):   # against a plain reference: first position of each id, n at repeats
        first = [list(np.asarray(ids[s])).index(v) for v in np.asarray(ids[s])]
        np.testing.assert_array_equal(np.asarray(group[s]), first)
        np.testing.assert_array_equal(np.asarray(target[s]), np.where(np.asarray(first) == np.arange(16),
                                                                      np.asarray(ids[s]), 12))
    tx = build_optimizer(optimizer, 0.3)
    table = jnp.asarray(rng.normal(size=(12, 8)), jnp.float32)
    a = b = (table, tx.init(table))
    for s in range(ids.shape[0]):
        grads = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
        a = jax.jit(lambda t, st, i, g: sparse_rows_update(tx, t, st, i, g))(*a, ids[s], grads)
        b = jax.jit(lambda t, st, gr, tg, g: grouped_rows_update(tx, t, st, gr, tg, g))(*b, group[s], target[s], grads)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("weighting,use_bias", [("pair", True), ("user", True), ("pair", False)])
def test_mf_plain_sgd_epoch_equals_the_general_update(weighting, use_bias):
    """``mse`` + ``sgd`` trains with the written-out gradient and scatter-adds (``_sgd_epoch_fn``); after
    an epoch of many repeated rows its tables equal the general path's (autodiff, grouped repeats, optax) up
    to the summation order, and so does the loss."""
    import jax
    import jax.numpy as jnp

    from jmf.models.cf.mf import MatrixFactorization
    from jmf.optim import build_optimizer

    rng = np.random.default_rng(1)
    n_users, n_items, steps, width = 30, 20, 12, 16
    batches = {"users": jnp.asarray(rng.integers(0, n_users, (steps, width)), jnp.int32),
               "items": jnp.asarray(rng.integers(0, n_items, (steps, width)), jnp.int32),
               "values": jnp.asarray(rng.integers(1, 6, (steps, width)), jnp.float32),
               "weight": jnp.asarray(rng.random((steps, width)) > 0.1, jnp.float32)}
    model = MatrixFactorization(dim=6, lr=0.3, reg=0.05, bias_reg=0.02, weighting=weighting, use_bias=use_bias)
    model.loss, model.global_mean = "mse", 3.1
    params = {"P": jnp.asarray(rng.normal(0, 0.3, (n_users, 6)), jnp.float32),
              "Q": jnp.asarray(rng.normal(0, 0.3, (n_items, 6)), jnp.float32),
              "user_bias": jnp.asarray(rng.normal(0, 0.3, (n_users, 1)), jnp.float32),
              "item_bias": jnp.asarray(rng.normal(0, 0.3, (n_items, 1)), jnp.float32)}
    tx = build_optimizer("sgd", model.lr)
    counts = jnp.asarray(rng.integers(1, 9, n_users), jnp.float32)
    out = {}
    for plain in (True, False):
        epoch = jax.jit(model._make_epoch_fn(tx, n_items, counts, plain_sgd=plain))
        out[plain] = epoch(params, {k: tx.init(v) for k, v in params.items()}, dict(batches), jax.random.key(0))
    for name in params:
        np.testing.assert_allclose(np.asarray(out[True][0][name]), np.asarray(out[False][0][name]), rtol=1e-5,
                                   atol=1e-6, err_msg=name)
        assert not np.allclose(np.asarray(out[True][0][name]), np.asarray(params[name])) or \
            (name.endswith("bias") and not use_bias)                 # it trained
    np.testing.assert_allclose(float(out[True][2]), float(out[False][2]), rtol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_ials_long_rows_and_one_confidence_reach_the_exact_solution(binary):
    """Rows longer than a chunk (walked in pieces) and a binary matrix (one stored confidence) solve the same
    normal equations: many CG steps on the item side reach the closed-form solution."""
    rng = np.random.default_rng(1)
    mat = sp.random(60, 25, density=0.3, random_state=4, format="csr", dtype=np.float32).tolil()
    mat[:, 2] = 1.0   # item 2: 60 users, longer than the 16-entry chunks below
    mat = mat.tocsr()
    mat.data[:] = 1.0 if binary else rng.integers(1, 4, mat.nnz)
    model = ImplicitALS(dim=4, reg=0.5, alpha=2.0, cg_steps=60, devices=1, chunk_bytes=16 * 4 * 4)
    side = model.prepare(mat)
    assert (side.conf.shape[0] == 1) == binary and any(C == 0 for _, C, _, _ in side.plan[1])
    W = model.init_factors(60, 25, seed=0)
    Xn = np.asarray(W, np.float64)[:60]
    from jmf.models.cf.ials import _cg_half_epoch

    Y1 = np.asarray(_cg_half_epoch(W, side, 1, reg=0.5, cg_steps=60, mesh=model.mesh))[60:]
    csc = mat.tocsc()
    for i in range(25):
        c, p = np.ones(60), np.zeros(60)
        col = csc[:, i]
        c[col.indices] = 2.0 * col.data
        p[col.indices] = 1.0
        A = Xn.T @ (c[:, None] * Xn) + 0.5 * np.eye(4)
        np.testing.assert_allclose(Y1[i], np.linalg.solve(A, Xn.T @ (c * p)), rtol=1e-3, atol=1e-4)
