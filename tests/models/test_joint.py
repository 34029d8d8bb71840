"""The joint model on synthetic cold start: it transfers, and every option trains."""

from functools import partial

import numpy as np
import pytest

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.cf.popularity import Popularity
from jmf.models.encoders.bag import BagEncoder
from jmf.models.heads.linear import LinearHead
from jmf.models.joint import JMF, InterestReweighting, ItemNeighbourhood
from jmf.models.joint.start import ZeroBias

EVAL = EvalConfig(ks=(10,))


@pytest.fixture(scope="module")
def cold_split():
    data = synthetic(n_users=1200, n_items=600, n_categories=6, seed=0)
    return make_split(data, partition_categories(data, k=3), "cold_start", beta=0.3, seed=0)


def _ndcg(model, split):
    return evaluate_split(model, split, "test", EVAL)["ndcg@10"]


def test_jmf_transfers_to_cold_start_users(cold_split):
    pop = Popularity()
    pop.fit(cold_split)
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=32, epochs=8, patience=0, batch_size=128)
    info = model.fit(cold_split)
    assert info["train/epochs"] == 8
    jmf, floor = _ndcg(model, cold_split), _ndcg(pop, cold_split)
    assert jmf > 1.15 * floor, (jmf, floor)
    interest = np.asarray(model.interest(np.asarray(cold_split.cold_test_users[:5])))
    assert interest.shape == (5, 3) and np.allclose(interest.sum(1), 1.0, atol=1e-5)


def test_jmf_needs_a_dl_side():
    data = synthetic(n_users=100, n_items=60, n_categories=3, seed=0)
    split = make_split(data, partition_categories(data), "ratio")
    with pytest.raises(ValueError, match="needs a DL side"):
        JMF(partial(BagEncoder), partial(LinearHead)).fit(split)
    with pytest.raises(ValueError, match="model.weights"):
        JMF(partial(BagEncoder), partial(LinearHead), weights={"alpha": 1.0})


@pytest.fixture(scope="module")
def rating_split():
    data = synthetic(n_users=1200, n_items=600, n_categories=6, implicit=False, seed=1)
    return make_split(data, partition_categories(data, k=3), "cold_start", beta=0.3, seed=0)


def test_jmf_rating_bias_prior_is_the_popularity_predictor(rating_split):
    """``bias_init=prior`` on ratings starts ``μ + b_i`` at ``model=pop``'s damped item means."""
    pop = Popularity(damping=5.0)
    pop.fit(rating_split)
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=8, bias_damping=5.0)
    model.setup(rating_split)
    items = np.arange(rating_split.train.shape[1])
    start = model.mean + np.asarray(model.state.tables["item_bias"])[items, 0]
    np.testing.assert_allclose(start, pop.predict(np.zeros_like(items), items), rtol=1e-5, atol=1e-5)
    rank_bias = np.asarray(model.state.tables["rank_bias"])[:, 0]
    counts = np.diff(rating_split.train.tocsc().indptr)
    assert abs(rank_bias.mean()) < 1e-5 and np.all(np.diff(rank_bias[np.argsort(counts)]) >= -1e-6)
    zero = JMF(partial(BagEncoder), partial(LinearHead), dim=8, bias_init=ZeroBias())
    zero.setup(rating_split)
    assert not np.asarray(zero.state.tables["item_bias"]).any()
    with pytest.raises(ValueError, match="model.bias_init"):
        JMF(partial(BagEncoder), partial(LinearHead), bias_init="pop")


def test_jmf_rank_term_ranks_cold_users_on_ratings(rating_split):
    """An MSE fit sees only rated items and ranks the unrated ones badly (NDCG@10 ~0.03 here, popularity
    ~0.24); ``weights.rank`` adds which items a user rates, which brings the cold users' ranking up to
    popularity's level while ``predict`` stays a rating model at least as accurate as popularity."""
    pop = Popularity()
    pop.fit(rating_split)
    kw = dict(dim=16, epochs=6, patience=0, batch_size=128, lr=0.01)
    mse_only = JMF(partial(BagEncoder), partial(LinearHead), **kw)
    mse_only.fit(rating_split)
    ranked = JMF(partial(BagEncoder), partial(LinearHead), weights={"rank": 1.0}, **kw)
    ranked.fit(rating_split)
    assert ranked.ranks_by_rank_bias and not mse_only.ranks_by_rank_bias
    cfg = EvalConfig(ks=(10,))
    out = {name: evaluate_split(m, rating_split, "test", cfg) for name, m in
           [("pop", pop), ("mse", mse_only), ("rank", ranked)]}
    assert out["rank"]["ndcg@10"] > 5 * out["mse"]["ndcg@10"], out
    assert out["rank"]["ndcg@10"] > 0.98 * out["pop"]["ndcg@10"], out
    assert out["rank"]["rmse"] < out["pop"]["rmse"], out


def test_o2_user_offsets_match_a_per_user_loop(rating_split):
    """``o_u`` against a plain loop: each O2 rating minus its item's damped O2 mean, summed per user
    and divided by ``n_u + damping``; the start of ``a`` is the least-squares fit on O1 training rows."""
    from jmf.models.joint import o2_user_offsets

    damping = 3.0
    dl = rating_split.dl.tocsc()
    mu = rating_split.dl.data.mean()
    item_mean = [(dl[:, j].sum() + damping * mu) / (dl[:, j].nnz + damping) for j in range(dl.shape[1])]
    rows = rating_split.dl.tocsr()
    want = np.zeros(rating_split.n_users)
    for u in range(rating_split.n_users):
        cols, vals = rows.indices[rows.indptr[u]:rows.indptr[u + 1]], rows.data[rows.indptr[u]:rows.indptr[u + 1]]
        want[u] = sum(v - item_mean[j] for j, v in zip(cols, vals)) / (len(cols) + damping)
    got = o2_user_offsets(rating_split, damping)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(got).max() > 0.1

    model = JMF(partial(BagEncoder), partial(LinearHead), dim=8, bias_damping=damping)
    model.setup(rating_split)
    train = rating_split.train.tocoo()
    prior = model.mean + np.asarray(model.state.tables["item_bias"])[train.col, 0]
    x = got[train.row]
    a, *_ = np.linalg.lstsq(x[:, None], train.data - prior, rcond=None)
    np.testing.assert_allclose(float(model.state.params["offset_scale"][...]), a[0], rtol=1e-4)
    off = JMF(partial(BagEncoder), partial(LinearHead), dim=8, user_offset=False)
    off.setup(rating_split)
    assert float(off.state.params["offset_scale"][...]) == 0.0 and not np.asarray(off.seq["offset"]).any()


def test_jmf_user_offset_transfers_a_shared_rating_bias():
    """Users who rate 1.5 stars high or low in every category: the O2 offset carries that bias to cold
    users' O1 ratings, which the item prior alone (popularity) cannot; without it JMF stays near popularity."""
    import dataclasses

    data = synthetic(n_users=1200, n_items=600, n_categories=6, implicit=False, seed=2)
    shift = np.random.default_rng(0).choice([-1.5, 1.5], data.n_users)
    data = dataclasses.replace(data, value=np.clip(data.value + shift[data.user], 1, 5).astype(np.float32))
    split = make_split(data, partition_categories(data, k=3), "cold_start", beta=0.3, seed=0)
    pop = Popularity()
    pop.fit(split)
    kw = dict(dim=8, epochs=2, patience=0, batch_size=128, lr=0.003)
    cfg = EvalConfig(ks=(10,), ratings=True)
    rmse = {"pop": evaluate_split(pop, split, "test", cfg)["rmse"]}
    for on in (True, False):
        model = JMF(partial(BagEncoder), partial(LinearHead), user_offset=on, **kw)
        model.fit(split)
        rmse[on] = evaluate_split(model, split, "test", cfg)["rmse"]
    # seen: pop 1.45, with the offset 0.92, without 1.07 (the encoder reads the centred O2 ratings and
    # learns part of the bias itself)
    assert rmse[True] < 0.7 * rmse["pop"] and rmse[True] < 0.92 * rmse[False], rmse


def test_interest_term_reweights_ranking_by_the_interest_vector(rating_split):
    """The ``interest`` score term at weight ``λ`` adds ``λ·(log softmax(I_u)[c_i] − log p̄(c_i))`` to every score, ``p̄`` the
    warm users' mean O1 category mix, computed here from the raw rows; ``predict`` is unchanged."""
    users = np.asarray(rating_split.cold_test_users[:16])
    models = {}
    for lam in (0.0, 2.0):
        models[lam] = JMF(partial(BagEncoder), partial(LinearHead), dim=8, weights={"rank": 1.0},
                          terms=[InterestReweighting(weight=lam)])
        models[lam].setup(rating_split)
    base, reweighted = (np.asarray(models[lam].score(users)) for lam in (0.0, 2.0))

    data, split = rating_split.data, rating_split
    cats = list(split.partition.cf_categories)
    item_cat = np.array([cats.index(c) for c in data.item_category[split.cf_items]])
    mixes = []
    for u in range(split.n_users):
        items = split.train.indices[split.train.indptr[u]:split.train.indptr[u + 1]]
        if len(items):
            mixes.append(np.bincount(item_cat[items], minlength=len(cats)) / len(items))
    prior = np.mean(mixes, axis=0)
    logits = np.asarray(models[0.0].user_vectors(users).interest, np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    want = base + 2.0 * (log_p - np.log(prior))[:, item_cat]
    np.testing.assert_allclose(reweighted, want, rtol=1e-4, atol=1e-4)
    assert np.abs(reweighted - base).max() > 1e-3
    rows = rating_split.test.tocoo()
    np.testing.assert_array_equal(models[0.0].predict(rows.row[:50], rows.col[:50]),
                                  models[2.0].predict(rows.row[:50], rows.col[:50]))


def test_rank_monitor_ranks_with_its_own_best_epoch(rating_split):
    """``rank_monitor=ndcg@10``: ``score`` uses the state of the epoch with the best validation NDCG@10
    and ``predict`` the one with the best validation RMSE (early stopping's), each re-measured here."""
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=16, epochs=5, patience=0, batch_size=128, lr=0.01,
                weights={"rank": 1.0}, rank_monitor="ndcg@10")
    info = model.fit(rating_split)
    assert len(model.rank_history) == 5 and model.rank_state is not None
    assert len(set(np.round(model.rank_history, 6))) > 1, model.rank_history   # the epochs differ
    ranked = evaluate_split(model, rating_split, "valid", EvalConfig(ks=(10,), ratings=False))["ndcg@10"]
    assert ranked == pytest.approx(max(model.rank_history), abs=1e-6)
    assert info["train/best_valid_ndcg@10"] == pytest.approx(max(model.rank_history))
    rated = evaluate_split(model, rating_split, "valid", EvalConfig(ks=(10,)))["rmse"]
    assert rated == pytest.approx(info["train/best_valid_rmse"], abs=1e-5)
    with pytest.raises(ValueError, match="model.rank_monitor"):
        JMF(partial(BagEncoder), partial(LinearHead), rank_monitor="rmse")


def _loop_kernel(split, kernel):
    """``K[j, i]``: warm users holding O2 item ``j`` and O1 training item ``i`` (``conditional``: over the
    warm holders of ``j``), by a loop over users."""
    X, Y = (split.dl > 0).toarray(), (split.train > 0).toarray()
    K = np.zeros((X.shape[1], Y.shape[1]))
    holders = np.zeros(X.shape[1])
    for u in range(X.shape[0]):
        if Y[u].any():
            K[np.ix_(X[u], Y[u])] += 1.0
            holders += X[u]
    return K / np.maximum(holders, 1)[:, None] if kernel == "conditional" else K


@pytest.mark.parametrize("kernel", ["count", "conditional"])
def test_neighbour_term_adds_the_cross_category_item_neighbourhood(cold_split, kernel):
    """The ``neighbour`` score term at weight ``λ``: ``score`` adds ``λ·log(1e-3 + n_u/max n_u)``, ``n_u`` the mean kernel row
    of the user's O2 items, the kernel re-built here by a loop; ``predict``-free implicit data, λ=0 is
    the plain score."""
    split = cold_split
    users = np.asarray(split.cold_test_users[:12])
    models = {}
    for lam in (0.0, 1.5):
        models[lam] = JMF(partial(BagEncoder), partial(LinearHead), dim=8,
                          terms=[ItemNeighbourhood(weight=lam, kernel=kernel)])
        models[lam].setup(split)
    base, with_nb = (np.asarray(models[lam].score(users)) for lam in (0.0, 1.5))
    K = _loop_kernel(split, kernel)
    X = (split.dl > 0).toarray()
    n = np.stack([K[X[u]].mean(0) for u in users])
    want = base + 1.5 * np.log(1e-3 + n / n.max(1, keepdims=True))
    np.testing.assert_allclose(with_nb, want, rtol=1e-4, atol=1e-4)
    assert np.abs(with_nb - base).max() > 1.0


def test_term_weight_list_is_chosen_on_validation(cold_split):
    """A list of weights: each is scored on the validation fold after the fit and the best is kept
    (re-measured here); a list needs a ranking metric to choose on; bad values are config errors."""
    from jmf.evaluate.protocols import evaluate_split

    choices = [0.0, 0.5, 4.0]
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=16, epochs=2, patience=0, batch_size=128,
                terms=[ItemNeighbourhood(weight=choices)])
    info = model.fit(cold_split)
    term = model.terms["neighbour"]
    valid = {w: info[f"train/valid_ndcg@10@neighbour_score={w:g}"] for w in choices}
    assert info["train/neighbour_score"] == term.weight == max(valid, key=valid.get)
    for w in choices:
        term.weight = w
        assert evaluate_split(model, cold_split, "valid", EVAL)["ndcg@10"] == pytest.approx(valid[w], abs=1e-6)
    assert len(set(np.round(list(valid.values()), 6))) > 1, valid
    for bad in (-1.0, "a", []):
        with pytest.raises(ValueError, match="model.terms.neighbour.weight"):
            ItemNeighbourhood(weight=bad)
    with pytest.raises(ValueError, match="model.terms.neighbour.kernel"):
        ItemNeighbourhood(kernel="cosine")
    with pytest.raises(ValueError, match="model.terms.x: .* is not a score term"):
        JMF(partial(BagEncoder), partial(LinearHead), terms={"x": 3.0})


def test_term_weight_list_on_ratings_needs_rank_monitor(rating_split):
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=8, weights={"rank": 1.0},
                terms=[ItemNeighbourhood(weight=[0.0, 1.0])])
    with pytest.raises(ValueError, match="model.terms.neighbour.weight.*rank_monitor"):
        model.setup(rating_split)
