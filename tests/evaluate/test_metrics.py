"""Every metric against values worked out by hand."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from jmf.evaluate import metrics as M
from jmf.evaluate.protocols import evaluate_full, evaluate_ratings, evaluate_sampled, sample_negatives


def test_ranking_metrics_hand_computed():
    # one user, 6 items; scores rank items 5,4,3,2,1,0; relevant = {4, 1}
    scores = jnp.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    relevant = jnp.array([[False, True, False, False, True, False]])
    out = {k: float(v[0]) for k, v in M.ranking_metrics(scores, relevant, (1, 2, 5)).items()}
    # ranks: item5 r1 (miss), item4 r2 (hit), item3 r3, item2 r4, item1 r5 (hit)
    assert out["hr@1"] == 0.0 and out["hr@2"] == 1.0
    assert out["precision@2"] == pytest.approx(0.5)
    assert out["recall@2"] == pytest.approx(0.5)
    assert out["recall@5"] == pytest.approx(1.0)
    assert out["precision@5"] == pytest.approx(0.4)
    assert out["mrr@2"] == pytest.approx(0.5) and out["mrr@1"] == 0.0
    dcg5 = 1 / math.log2(3) + 1 / math.log2(6)
    idcg5 = 1 + 1 / math.log2(3)
    assert out["ndcg@5"] == pytest.approx(dcg5 / idcg5, rel=1e-6)
    assert out["ndcg@2"] == pytest.approx((1 / math.log2(3)) / idcg5, rel=1e-6)


def test_exclusion_masks_training_items():
    scores = jnp.array([[9.0, 1.0, 2.0]])
    relevant = jnp.array([[False, False, True]])
    exclude = jnp.array([[True, False, False]])
    out = M.ranking_metrics(scores, relevant, (1,), exclude=exclude)
    assert float(out["hr@1"][0]) == 1.0
    assert float(M.ranking_metrics(scores, relevant, (1,))["hr@1"][0]) == 0.0


def test_sampled_metrics_hand_computed():
    pos = jnp.array([0.5, 0.9])
    neg = jnp.array([[0.9, 0.1, 0.7], [0.1, 0.2, 0.3]])  # user 0: rank 3; user 1: rank 1
    out = M.sampled_ranking_metrics(pos, neg, (1, 3))
    assert np.allclose(out["hr@1"], [0, 1]) and np.allclose(out["hr@3"], [1, 1])
    assert np.allclose(out["ndcg@3"], [1 / math.log2(4), 1.0])
    assert np.allclose(out["mrr"], [1 / 3, 1.0])


def test_sampled_ties_count_against_the_positive_and_self_negatives_are_ignored():
    pos = jnp.array([1.0])
    neg = jnp.array([[1.0, 0.0, 1.0]])  # two ties
    assert float(M.sampled_ranking_metrics(pos, neg, (1, 3))["mrr"][0]) == pytest.approx(1 / 3)
    masked = M.sampled_ranking_metrics(pos, neg, (1,), neg_mask=jnp.array([[False, True, True]]))
    assert float(masked["mrr"][0]) == pytest.approx(1 / 2)


def test_rating_errors_hand_computed():
    out = M.rating_errors(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0]))
    assert out["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert out["mae"] == pytest.approx(1.0)


def test_evaluate_full_batches_and_padding_agree_with_numpy():
    rng = np.random.default_rng(0)
    n_users, n_items = 37, 50
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    train = sp.random(n_users, n_items, density=0.1, random_state=1, format="csr")
    test = sp.random(n_users, n_items, density=0.05, random_state=2, format="csr")
    test = (test - test.multiply(train > 0)).tocsr()
    test.eliminate_zeros()
    table = jnp.asarray(scores)
    seen = {"total": [], "batches": []}

    def advance(n):
        seen["batches"].append(n)

    advance.set_total = seen["total"].append
    got = evaluate_full(lambda u: table[u], train, test, ks=(5,), batch_size=8, progress=advance)
    n_eval = int((np.diff(test.indptr) > 0).sum())
    assert seen["total"] == [n_eval] and sum(seen["batches"]) == n_eval   # the progress bar's ETA counts real users
    # reference: a straightforward NumPy loop
    recalls, ndcgs = [], []
    for u in range(n_users):
        rel = set(test[u].indices)
        if not rel:
            continue
        s = scores[u].copy()
        s[train[u].indices] = -np.inf
        top = np.argsort(-s, kind="stable")[:5]
        hits = [i in rel for i in top]
        recalls.append(sum(hits) / len(rel))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        ndcgs.append(dcg / sum(1 / math.log2(r + 2) for r in range(min(len(rel), 5))))
    assert got["recall@5"] == pytest.approx(np.mean(recalls), rel=1e-5)
    assert got["ndcg@5"] == pytest.approx(np.mean(ndcgs), rel=1e-5)


def test_sample_negatives_excludes_training_and_positive():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], np.float32))
    negs = sample_negatives(train, np.array([0, 1]), np.array([2, 0]), 3, np.arange(6), seed=0)
    assert not set(negs[0]) & {0, 1, 2} and len(set(negs[0])) == 3
    assert not set(negs[1]) & {5, 0}
    with pytest.raises(ValueError, match="eval.negatives"):
        sample_negatives(train, np.array([0]), np.array([2]), 4, np.arange(6), seed=0)


def test_evaluate_sampled_and_ratings():
    table = jnp.asarray(np.array([[3.0, 2.0, 1.0, 0.0]], np.float32))
    out = evaluate_sampled(lambda u: table[u], np.array([0]), np.array([1]), np.array([[0, 2, 3]]), ks=(1, 2))
    assert out["hr@1"] == 0.0 and out["hr@2"] == 1.0
    truth = sp.csr_matrix(np.array([[0, 4.0], [2.0, 0]]))
    out = evaluate_ratings(lambda u, i: np.full(len(u), 3.0), truth)
    assert out["rmse"] == pytest.approx(1.0) and out["mae"] == pytest.approx(1.0)


def test_indexed_ranking_equals_mask_form():
    """The evaluator's index-list form gives the mask form's values (random scores, ragged lists)."""
    rng = np.random.default_rng(3)
    B, n_items, ks = 16, 50, (1, 5, 10)
    scores = jnp.asarray(rng.standard_normal((B, n_items)), jnp.float32)
    rel = np.full((B, 8), -1, np.int32)
    excl = np.full((B, 12), -1, np.int32)
    relevant = np.zeros((B, n_items), bool)
    exclude = np.zeros((B, n_items), bool)
    for b in range(B):
        items = rng.permutation(n_items)
        n_rel, n_ex = rng.integers(1, 9), rng.integers(0, 13)
        rel[b, :n_rel], excl[b, :n_ex] = items[:n_rel], items[n_rel:n_rel + n_ex]
        relevant[b, items[:n_rel]], exclude[b, items[n_rel:n_rel + n_ex]] = True, True
    want = M.ranking_metrics(scores, jnp.asarray(relevant), ks, exclude=jnp.asarray(exclude))
    got = M.ranking_metrics_indexed(scores, jnp.asarray(rel), ks, exclude_idx=jnp.asarray(excl))
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("n,k,group", [(5000, 20, None), (20001, 20, None), (4099, 10, 16), (300, 20, None)])
def test_two_stage_top_k_equals_lax_top_k(n, k, group):
    """The grouped top-k returns exactly ``lax.top_k``'s indices, ties (lower index first) and ``-inf`` included."""
    import jax

    rng = np.random.default_rng(n)
    cases = [rng.normal(size=(6, n)),                              # distinct scores
             rng.integers(0, 4, size=(6, n)).astype(float)]        # heavy ties (popularity-like counts)
    tied = cases[1].copy()
    tied[:, ::3] = -np.inf                                         # masked training items
    cases.append(tied)
    few = np.full((6, n), -np.inf)
    few[:, n - 7:n - 2] = 1.0                                      # fewer finite scores than k
    cases.append(few)
    for scores in cases:
        scores = jnp.asarray(scores, jnp.float32)
        want = np.asarray(jax.lax.top_k(scores, k)[1])
        got = np.asarray(jax.jit(lambda s: M.top_k_indices(s, k, group))(scores))
        np.testing.assert_array_equal(got, want)


def test_full_ranking_from_score_tables_equals_the_score_function():
    """``evaluate_full(..., tables=)`` (score, mask and rank in one program, larger batches) gives the metrics of
    the two-program path, biases and excluded items included."""
    import scipy.sparse as sp

    from jmf.evaluate.protocols import evaluate_full

    rng = np.random.default_rng(3)
    n_users, n_items, d = 300, 5000, 8
    U, V = rng.standard_normal((n_users, d)).astype(np.float32), rng.standard_normal((n_items, d)).astype(np.float32)
    bias = rng.standard_normal(n_items).astype(np.float32)
    exclude = sp.random(n_users, n_items, density=0.01, format="csr", random_state=1)
    truth = sp.random(n_users, n_items, density=0.002, format="csr", random_state=2)
    truth = (truth - truth.multiply(exclude != 0)).tocsr()
    truth.eliminate_zeros()

    def score(users):
        return jnp.asarray(U)[users] @ jnp.asarray(V).T + jnp.asarray(bias)[None, :]
    two = evaluate_full(score, exclude, truth, ks=(5, 20), batch_size=64)
    one = evaluate_full(score, exclude, truth, ks=(5, 20), batch_size=64,
                        tables=(jnp.asarray(U), jnp.asarray(V), jnp.asarray(bias)))
    assert two and set(one) == set(two) and two["ndcg@20"] > 0
    for k in two:
        np.testing.assert_allclose(one[k], two[k], rtol=1e-6, atol=1e-7)


def test_full_ranking_sharded_over_devices_equals_one_device():
    """With several devices the evaluator splits each batch's users over them: the same metrics as one device
    (a subprocess with 1 and with 4 forced CPU devices)."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, jax, jax.numpy as jnp, numpy as np, scipy.sparse as sp
from jmf.evaluate.protocols import evaluate_full
rng = np.random.default_rng(5)
U, V = rng.standard_normal((333, 8)).astype(np.float32), rng.standard_normal((4000, 8)).astype(np.float32)
exclude = sp.random(333, 4000, density=0.01, format="csr", random_state=1)
truth = sp.random(333, 4000, density=0.003, format="csr", random_state=2)
tables = (jnp.asarray(U), jnp.asarray(V), None)
print(json.dumps([len(jax.devices()), evaluate_full(None, exclude, truth, ks=(10,), batch_size=24, tables=tables)]))
"""
    out = {}
    for n in (1, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        devices, out[n] = json.loads(res.stdout.strip().splitlines()[-1])
        assert devices == n
    assert out[1]["ndcg@10"] > 0 and set(out[1]) == set(out[4])
    for k in out[1]:
        np.testing.assert_allclose(out[4][k], out[1][k], rtol=1e-6)
