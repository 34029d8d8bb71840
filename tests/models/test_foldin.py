"""Fold-in of new users against independent references: a per-user loop of the normal equations."""

import numpy as np
import scipy.sparse as sp

from jmf.models.foldin import explicit_fold_in, implicit_fold_in, rows_present


def test_implicit_fold_in_solves_the_weighted_least_squares_of_every_item():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(60, 5))
    R = sp.random(40, 60, density=0.1, random_state=1, format="csr")
    R.data[:] = rng.integers(1, 4, R.nnz)
    for scale_values, alpha in ((False, 1.0), (True, 2.5)):
        x = implicit_fold_in(Q, R, reg=0.3, alpha=alpha, scale_values=scale_values, chunk=7)
        for b in range(40):
            cols = R.indices[R.indptr[b]:R.indptr[b + 1]]
            conf = np.ones(60)        # every item: p = 0 with confidence 1, the user's items p = 1
            target = np.zeros(60)
            conf[cols] = alpha * R.data[R.indptr[b]:R.indptr[b + 1]] if scale_values else 1 + alpha
            target[cols] = 1.0
            W = np.diag(conf)
            want = np.linalg.solve(Q.T @ W @ Q + 0.3 * np.eye(5), Q.T @ W @ target) if len(cols) else np.zeros(5)
            np.testing.assert_allclose(x[b], want, rtol=1e-4, atol=1e-5)
    assert list(rows_present(R)) == list(np.diff(R.indptr) > 0)


def test_explicit_fold_in_is_ridge_regression_with_a_user_bias():
    rng = np.random.default_rng(1)
    Q, bias = rng.normal(size=(30, 4)), rng.normal(size=30)
    R = sp.random(10, 30, density=0.3, random_state=2, format="csr")
    R.data[:] = rng.integers(1, 6, R.nnz)
    x, b_u = explicit_fold_in(Q, bias, 3.2, R, reg=0.5)
    for b in range(10):
        cols, r = R.indices[R.indptr[b]:R.indptr[b + 1]], R.data[R.indptr[b]:R.indptr[b + 1]]
        A = np.concatenate([Q[cols], np.ones((len(cols), 1))], 1)
        ridge = np.linalg.lstsq(np.concatenate([A, np.sqrt(0.5) * np.eye(5)]),
                                np.concatenate([r - 3.2 - bias[cols], np.zeros(5)]), rcond=None)[0]
        np.testing.assert_allclose(np.append(x[b], b_u[b]), ridge, rtol=1e-4, atol=1e-5)
