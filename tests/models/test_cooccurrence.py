"""model=cooc: the item-neighbourhood term as a model, checked against a count by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.errors import ConfigError
from jmf.models.cf.cooccurrence import CoOccurrence
from jmf.recommend import History


@pytest.fixture(scope="module")
def split():
    data = synthetic(n_users=200, n_items=90, n_categories=4, interactions_per_user=14, implicit=True, seed=3)
    return make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)


def _by_hand(split, user: int, eps: float = 1e-3) -> np.ndarray:
    """``log(ε + n_ui / max n_u)``, ``n_ui`` = Σ over the user's O2 items j of the users holding j in O2
    and i in O1's training rows, over ``|O2(u)|``: loops over users, no matrix products."""
    o2 = [set(split.dl[v].indices) for v in range(split.dl.shape[0])]
    o1 = [set(split.train[v].indices) for v in range(split.train.shape[0])]
    n = np.zeros(split.train.shape[1])
    for j in o2[user]:
        for v in range(len(o2)):
            if j in o2[v]:
                for i in o1[v]:
                    n[i] += 1.0
    n /= max(len(o2[user]), 1)
    return np.log(eps + n / (n.max() + 1e-9))


def test_scores_are_the_hand_counted_neighbourhood_plus_a_popularity_tie_break(split):
    model = CoOccurrence()
    model.fit(split)
    users = np.asarray(split.cold_test_users[:4])
    scores = np.asarray(model.score(users))
    counts = np.diff(split.train.tocsc().indptr)
    prior = 1e-3 * np.log1p(counts) / np.log1p(counts.max())
    for row, user in zip(scores, users):
        np.testing.assert_allclose(row - prior, _by_hand(split, int(user)), rtol=1e-5, atol=1e-5)
    # the tie-break orders items the kernel does not reach by popularity, never above a reached item
    row = scores[0]
    reached = _by_hand(split, int(users[0])) > np.log(1e-3) + 1e-6
    assert not reached.all() and row[reached].min() > row[~reached].max()
    unreached = np.flatnonzero(~reached)
    assert np.array_equal(np.argsort(-row[unreached], kind="stable"), np.argsort(-counts[unreached], kind="stable"))


def test_new_users_score_as_the_same_users_did_from_their_o2_rows(split):
    model = CoOccurrence()
    model.fit(split)
    users = np.asarray(split.cold_test_users[:5])
    dl = split.dl[users].tocsr()
    empty = sp.csr_matrix((1, dl.shape[1]), dtype=dl.dtype)
    hist = History([str(u) for u in users] + ["nobody"], sp.csr_matrix((6, split.train.shape[1])),
                   sp.vstack([dl, empty]).tocsr(), [], [])
    scores, usable = model.score_new(hist)
    np.testing.assert_allclose(np.asarray(scores)[:5], np.asarray(model.score(users)), rtol=1e-6, atol=1e-6)
    assert usable.tolist() == [True] * 5 + [False]


def test_bad_settings_name_their_key():
    with pytest.raises(ConfigError, match="model.kernel"):
        CoOccurrence(kernel="cosine")
    with pytest.raises(ConfigError, match="model.pop_weight"):
        CoOccurrence(pop_weight=1.5)
