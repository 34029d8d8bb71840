"""The joint model on synthetic cold start: it transfers, and every option trains."""

from functools import partial

import numpy as np
import pytest

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.cf.popularity import Popularity
from jmf.models.encoders.bag import BagEncoder
from jmf.models.encoders.cnn import CNNEncoder
from jmf.models.heads.linear import LinearHead
from jmf.models.heads.sigmoid import SigmoidHead
from jmf.models.joint import JMF

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
    info = model.fit(cold_split, seed=0)
    assert info["train/epochs"] == 8
    jmf, floor = _ndcg(model, cold_split), _ndcg(pop, cold_split)
    assert jmf > 1.15 * floor, (jmf, floor)
    interest = np.asarray(model.interest(np.asarray(cold_split.cold_test_users[:5])))
    assert interest.shape == (5, 3) and np.allclose(interest.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("encoder, head", [(CNNEncoder, LinearHead), (BagEncoder, SigmoidHead)])
def test_jmf_options_train_and_score(cold_split, encoder, head):
    model = JMF(partial(encoder, embed_dim=16, out_dim=16), partial(head), dim=16, epochs=1, pretrain_epochs=1,
                batch_size=64, items_per_user=4)
    model.fit(cold_split, seed=0)
    assert np.isfinite(_ndcg(model, cold_split))


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
    model.setup(rating_split, seed=0)
    items = np.arange(rating_split.train.shape[1])
    start = model.mean + np.asarray(model.state.tables["item_bias"])[items, 0]
    np.testing.assert_allclose(start, pop.predict(np.zeros_like(items), items), rtol=1e-5, atol=1e-5)
    rank_bias = np.asarray(model.state.tables["rank_bias"])[:, 0]
    counts = np.diff(rating_split.train.tocsc().indptr)
    assert abs(rank_bias.mean()) < 1e-5 and np.all(np.diff(rank_bias[np.argsort(counts)]) >= -1e-6)
    zero = JMF(partial(BagEncoder), partial(LinearHead), dim=8, bias_init="zero")
    zero.setup(rating_split, seed=0)
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
    mse_only.fit(rating_split, seed=0)
    ranked = JMF(partial(BagEncoder), partial(LinearHead), weights={"rank": 1.0}, **kw)
    ranked.fit(rating_split, seed=0)
    assert ranked.ranks_by_rank_bias and not mse_only.ranks_by_rank_bias
    cfg = EvalConfig(ks=(10,))
    out = {name: evaluate_split(m, rating_split, "test", cfg) for name, m in
           [("pop", pop), ("mse", mse_only), ("rank", ranked)]}
    assert out["rank"]["ndcg@10"] > 5 * out["mse"]["ndcg@10"], out
    assert out["rank"]["ndcg@10"] > 0.98 * out["pop"]["ndcg@10"], out
    assert out["rank"]["rmse"] < out["pop"]["rmse"], out
