"""Score terms inside the fit (``model.terms.neighbour.train_weight``): what a batch carries, checked by a count."""

from functools import partial

import numpy as np
import pytest

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.models.encoders.bag import BagEncoder
from jmf.models.heads.linear import LinearHead
from jmf.models.joint import JMF, ItemNeighbourhood
from jmf.models.joint.plan import user_batches
from jmf.models.joint.terms import neighbour_term
from jmf.models.joint.transfer import TransferJMF


@pytest.fixture(scope="module")
def split():
    data = synthetic(n_users=300, n_items=120, n_categories=4, interactions_per_user=14, implicit=True, seed=5)
    return make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)


def _without_self(split, user: int) -> tuple[np.ndarray, float]:
    """``(n_u without the user's own rows, max_i n_ui with them)``: ``n_ui`` = Σ over the user's O2 items ``j`` of
    the users holding ``j`` in O2 and ``i`` in O1's training rows, over ``|O2(u)|``, by loops over users."""
    o2 = [set(split.dl[v].indices) for v in range(split.dl.shape[0])]
    o1 = [set(split.train[v].indices) for v in range(split.train.shape[0])]
    n_all, n_other = np.zeros(split.train.shape[1]), np.zeros(split.train.shape[1])
    for j in o2[user]:
        for v in range(len(o2)):
            if j in o2[v]:
                for i in o1[v]:
                    n_all[i] += 1.0
                    n_other[i] += v != user
    size = max(len(o2[user]), 1)
    return n_other / size, n_all.max() / size


def test_a_batch_scores_its_pairs_without_their_own_cooccurrence(split):
    """``fit_scores``: ``train_weight·log(1e-3 + n_ui/max_k n_uk)`` with ``n_ui`` counted over the *other* users
    (a training pair must not see itself) and the divisor the ranking uses; on items outside the user's training
    rows that is the ranking's own value, so a validation or test item gets in the fit what the ranking gives it."""
    term = ItemNeighbourhood(weight=1.0, train_weight=2.0)
    term.prepare(split)
    train = split.train.tocsr()
    users = np.flatnonzero((np.diff(train.indptr) >= 3) & (np.diff(split.dl.tocsr().indptr) > 0))[:6]
    items = np.stack([train[u].indices[:3] for u in users])
    negatives = np.arange(0, split.train.shape[1], 7)
    pos, neg = term.fit_scores(users, items, negatives)
    assert pos.shape == items.shape and neg.shape == (len(users), len(negatives))
    ranking = neighbour_term(term.rows, term.matrix, users)
    for b, u in enumerate(users):
        n, top = _without_self(split, int(u))
        want = 2.0 * np.log(1e-3 + n / (top + 1e-9))
        np.testing.assert_allclose(pos[b], want[items[b]], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(neg[b], want[negatives], rtol=1e-5, atol=1e-5)
        outside = np.setdiff1d(negatives, train[u].indices)
        np.testing.assert_allclose(neg[b][np.isin(negatives, outside)], 2.0 * ranking[b][outside], rtol=1e-5,
                                   atol=1e-5)
    # the user's own co-occurrence is what was taken out: a training pair scores lower than with it counted
    assert (pos < 2.0 * ranking[np.arange(len(users))[:, None], items] - 1e-3).all()


def test_a_fit_with_the_term_inside_draws_its_batches_up_front_and_trains(split):
    """The batch plan draws every step's negatives up front, so a batch is the same whatever order the steps run
    in (an exact resume); the fit trains, and its learned scores differ from a fit without the term inside."""
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=8, epochs=2, patience=0, batch_size=64, negatives=16,
                terms=[ItemNeighbourhood(weight=[1.0, 0.0], train_weight=1.0)], rank_monitor="ndcg@10")
    plan = model.setup(split)
    assert model.fit_terms == [model.terms["neighbour"]]
    epoch = user_batches(model.engine, split.train.tocsr(), np.arange(10), model.engine.epoch_rng(1, 0), 64,
                         model.items_per_user, model.fit_terms, 16)
    assert epoch.n_steps >= 2
    late_first, b0, late = epoch.batch(1), epoch.batch(0), epoch.batch(1)
    for key in ("neg_rows", "prior_pos", "prior_neg", "users"):
        np.testing.assert_array_equal(np.asarray(late_first[key]), np.asarray(late[key]))
    negs = np.asarray(b0["neg_rows"])
    assert negs.shape == (64, 16) and (negs == negs[0]).all()
    assert np.asarray(b0["prior_neg"]).shape == (64, 16) and np.isfinite(np.asarray(b0["prior_pos"])).all()
    assert plan.phases
    info = model.fit(split)
    assert np.isfinite(info["train/best_valid_ndcg@10"])
    plain = JMF(partial(BagEncoder), partial(LinearHead), dim=8, epochs=2, patience=0, batch_size=64, negatives=16,
                terms=[ItemNeighbourhood(weight=[1.0, 0.0])], rank_monitor="ndcg@10")
    plain.fit(split)
    users = np.asarray(split.cold_test_users[:8])
    for m in (model, plain):
        m.terms["neighbour"].weight = 0.0       # the learned scores alone
    assert np.abs(np.asarray(model.score(users)) - np.asarray(plain.score(users))).max() > 1e-3


def test_bad_settings_of_a_term_inside_the_fit_name_their_key(split):
    with pytest.raises(ValueError, match="model.terms.neighbour.train_weight.*kernel=count"):
        ItemNeighbourhood(kernel="conditional", train_weight=1.0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="model.terms.neighbour.train_weight"):
            ItemNeighbourhood(train_weight=bad)
    ratings = make_split(synthetic(n_users=120, n_items=60, n_categories=4, seed=1),
                         partition_categories(synthetic(n_users=120, n_items=60, n_categories=4, seed=1), k=2),
                         "cold_start", beta=0.3, seed=0)
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=8, loss="mse",
                terms=[ItemNeighbourhood(weight=1.0, train_weight=1.0)])
    with pytest.raises(ValueError, match="train_weight.*model.loss"):
        model.setup(ratings)
    with pytest.raises(ValueError, match="model=jmf_map.*train_weight"):
        TransferJMF(partial(BagEncoder), partial(LinearHead), terms=[ItemNeighbourhood(train_weight=1.0)]).setup(split)
