"""``model/item_transfer=attention``: CF-side items attend over the user's DL-side items."""

from functools import partial

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jmf.data.interactions import Interactions
from jmf.data.split import make_split, partition_categories
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.errors import ConfigError
from jmf.models.encoders.bag import BagEncoder
from jmf.models.heads.linear import LinearHead
from jmf.models.joint import JMF
from jmf.models.joint.item_transfer import ItemAttention

EVAL = EvalConfig(ks=(10,))


def _attention(tau: float, block: int = 3) -> ItemAttention:
    att = ItemAttention(n_dl_items=4, n_cf_items=7, dim=2, temperature=tau, block=block, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    att.keys.embedding[...] = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
    att.items.embedding[...] = jnp.asarray(rng.normal(size=(7, 2)), jnp.float32)
    att.scale[...] = jnp.float32(1.5)
    return att


def test_attention_scores_by_hand():
    """``w·τ·log mean_j exp(k_j·f_i/τ)`` over the user's DL-side items only; 0 for a user without any; every item
    by blocks equals item by item; a large ``τ`` is the mean similarity (a bag), a small one the maximum."""
    att = _attention(0.5)
    seq = np.array([[2, 4, 0], [0, 0, 0], [1, 0, 0]], np.int32)            # ids + 1, 0 = pad
    mask = seq > 0
    K, F = np.asarray(att.keys.embedding[...], np.float64), np.asarray(att.items.embedding[...], np.float64)
    expected = np.zeros((3, 7))
    for b in range(3):
        sims = K[seq[b][mask[b]]] @ F.T                                      # [n_b, 7]
        if len(sims):
            expected[b] = 1.5 * 0.5 * np.log(np.exp(sims / 0.5).mean(0))
    every = np.asarray(att.all_items(jnp.asarray(seq), jnp.asarray(mask)))
    np.testing.assert_allclose(every, expected, rtol=1e-5, atol=1e-6)
    items = np.array([[0, 6], [1, 2], [5, 5]], np.int32)
    np.testing.assert_allclose(att(jnp.asarray(seq), jnp.asarray(mask), jnp.asarray(items)),
                               np.take_along_axis(expected, items, 1), rtol=1e-5, atol=1e-6)
    shared = np.array([3, 1], np.int32)
    np.testing.assert_allclose(att(jnp.asarray(seq), jnp.asarray(mask), jnp.asarray(shared)), expected[:, shared],
                               rtol=1e-5, atol=1e-6)
    sims = K[[2, 4]] @ F.T
    wide, narrow = _attention(1e4), _attention(1e-3)
    np.testing.assert_allclose(np.asarray(wide.all_items(jnp.asarray(seq), jnp.asarray(mask)))[0],
                               1.5 * sims.mean(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.asarray(narrow.all_items(jnp.asarray(seq), jnp.asarray(mask)))[0],
                               1.5 * sims.max(0), rtol=1e-3, atol=1e-2)
    with pytest.raises(ConfigError, match="model.item_transfer.temperature"):
        ItemAttention(4, 7, temperature=0.0, rngs=nnx.Rngs(0))


def _twins(n_users: int = 1500, n_items: int = 240, per_user: int = 8, seed: int = 0) -> Interactions:
    """Item-level structure and nothing else: every DL-side item ``j`` has a CF-side twin ``t(j)`` (a random
    permutation), and a user holding ``j`` holds ``t(j)`` too with probability 0.9 (plus random CF-side noise).
    No user-level taste, so a ``dim``-wide user map cannot carry it; the items themselves can."""
    rng = np.random.default_rng(seed)
    twin = rng.permutation(n_items)
    users, items = [], []
    for u in range(n_users):
        dl = rng.choice(n_items, per_user, replace=False)
        cf = np.concatenate([twin[dl[rng.random(per_user) < 0.9]], rng.choice(n_items, 2, replace=False)])
        users += [u] * (per_user + len(cf))
        items += list(n_items + dl) + list(cf)
    pairs = np.unique(np.stack([users, items], 1), axis=0)                      # repeats merged
    category = np.r_[np.zeros(n_items), np.ones(n_items)].astype(np.int32)     # 0: CF side, 1: DL side
    return Interactions(user=pairs[:, 0].astype(np.int32), item=pairs[:, 1].astype(np.int32),
                        value=np.ones(len(pairs), np.float32), timestamp=None, item_category=category,
                        user_ids=np.arange(n_users).astype(str), item_ids=np.arange(2 * n_items).astype(str),
                        category_names=("cf", "dl"), name="twins", implicit=True)


def test_item_attention_learns_item_level_twins_a_user_map_cannot_carry():
    data = _twins()
    split = make_split(data, partition_categories(data, cf_categories=[0]), "cold_start", beta=0.3, seed=0)
    common = dict(dim=16, epochs=10, patience=0, batch_size=128, lr=0.01)
    plain = JMF(partial(BagEncoder), partial(LinearHead), **common)
    plain.fit(split)
    attend = JMF(partial(BagEncoder), partial(LinearHead), **common,
                 item_transfer=partial(ItemAttention, dim=16, temperature=0.1))
    attend.fit(split)
    ndcg = {name: evaluate_split(m, split, "test", EVAL)["ndcg@10"] for name, m in (("plain", plain), ("attend", attend))}
    assert ndcg["attend"] > 2.5 * ndcg["plain"], ndcg          # 0.79 against 0.21 here
    assert float(attend.state.params["item_attention"]["scale"][...]) != 1.0      # w is learned
    _candidates_score_as_every_item_does(attend, split)


def _candidates_score_as_every_item_does(model: JMF, split) -> None:
    """The sampled protocols score the candidates only (``score_candidates``: the attention over ``n`` items a user,
    not every item); the values and the metrics are those of the every-item scores, with the score term on too."""
    from jmf.evaluate.protocols import ScoresCandidates, evaluate_sampled, sample_negatives
    from jmf.models.joint.terms import ItemNeighbourhood

    model.terms = {"neighbour": ItemNeighbourhood(weight=0.7)}
    model.terms["neighbour"].prepare(split)
    assert isinstance(model, ScoresCandidates)
    users = np.arange(64, dtype=np.int32)
    cand = np.random.default_rng(1).integers(0, split.train.shape[1], (64, 20)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(model.score_candidates(jnp.asarray(users), jnp.asarray(cand))),
                               np.take_along_axis(np.asarray(model.score(jnp.asarray(users))), cand, 1),
                               rtol=1e-5, atol=1e-5)
    sub = split.test.tocoo()
    pool = np.arange(split.train.shape[1], dtype=np.int32)
    negatives = sample_negatives(split.train, sub.row, sub.col, 50, pool, 0)
    args = (sub.row.astype(np.int32), sub.col.astype(np.int32), negatives, (10,), 256)
    every, only = evaluate_sampled(model.score, *args), evaluate_sampled(model.score, *args,
                                                                          candidate_fn=model.score_candidates)
    assert every.keys() == only.keys() and every["ndcg@10"] > 0.3
    for k in every:
        assert abs(every[k] - only[k]) < 1e-6, (k, every[k], only[k])


def test_item_transfer_is_refused_on_ratings():
    from jmf.data.synthetic import synthetic

    data = synthetic(n_users=200, n_items=120, n_categories=4, implicit=False, seed=0)
    split = make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)
    with pytest.raises(ConfigError, match="model/item_transfer"):
        JMF(partial(BagEncoder), partial(LinearHead), dim=8, item_transfer=partial(ItemAttention)).setup(split)
