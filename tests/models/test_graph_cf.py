"""``model/cf=graph``: the joint model's CF side as LightGCN over the joint training graph of both sides."""

from functools import partial

import jax.numpy as jnp
import numpy as np
import pytest

from jmf.data.holdout import make_holdout_split
from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.cf.popularity import Popularity
from jmf.models.encoders.bag import BagEncoder
from jmf.models.heads.linear import LinearHead
from jmf.models.joint import JMF, TransferJMF
from jmf.models.joint.cf_side import GraphCF, check_cf
from jmf.errors import ConfigError

EVAL = EvalConfig(ks=(10,))


@pytest.fixture(scope="module")
def cold_split():
    data = synthetic(n_users=1200, n_items=600, n_categories=6, seed=0)
    return make_split(data, partition_categories(data, k=3), "cold_start", beta=0.3, seed=0)


def _dense_lightgcn(A: np.ndarray, P: np.ndarray, items: np.ndarray, layers: int):
    """The reference, by dense matrices: ``Â = D^-½ [[0, A], [Aᵀ, 0]] D^-½``, factors = mean of ``Âᵏ E``."""
    n_u, n_i = A.shape
    adj = np.block([[np.zeros((n_u, n_u)), A], [A.T, np.zeros((n_i, n_i))]])
    degree = adj.sum(1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1)), 0.0)
    norm = scale[:, None] * adj * scale[None, :]
    E = np.concatenate([P, items])
    layer, total = E, E.copy()
    for _ in range(layers):
        layer = norm @ layer
        total += layer
    total /= layers + 1
    return total[:n_u], total[n_u:]


def test_graph_cf_propagates_as_lightgcn_on_both_sides(cold_split):
    """P, Q and the DL-side item nodes are the layer means of ``D^-½ A D^-½`` over ``[O1 | O2]`` (dense reference)."""
    cf = GraphCF(layers=2, init="normal")
    tables = {k: jnp.asarray(v) for k, v in cf.start(cold_split, 8, seed=0).items()}
    graph = cf.prepare(cold_split)["cf_graph"]
    P, Q, E = cf.propagate(tables, graph)
    A = GraphCF.joint_matrix(cold_split).toarray().astype(np.float64)
    n_cf = cold_split.train.shape[1]
    assert A.shape[1] == n_cf + cold_split.dl.shape[1] and A[:, n_cf:].sum() == (cold_split.dl != 0).sum()
    users, items = _dense_lightgcn(A, np.asarray(tables["P"], np.float64),
                                   np.concatenate([tables["Q"], tables["E_dl"]]).astype(np.float64), 2)
    np.testing.assert_allclose(P, users, atol=1e-5)
    np.testing.assert_allclose(Q, items[:n_cf], atol=1e-5)
    np.testing.assert_allclose(E, items[n_cf:], atol=1e-5)
    # every cold user with DL-side history is reached (their P_u blends in at inference)
    cold = np.asarray(cold_split.cold_test_users)
    has_dl = np.diff(cold_split.dl.tocsr().indptr)[cold] > 0
    assert cf.has_factors(cold_split)[cold][has_dl].all() and np.abs(np.asarray(P)[cold[has_dl]]).sum(1).min() > 0


def test_graph_cf_bi_interaction_and_joined_layers_match_a_dense_reference(cold_split):
    """``layer=bi``: ``E' = S + E ⊙ S``, ``S = Â E``; ``aggregate=concat``: ``[E⁰ | n(E¹) | n(E²)]``, dim / 3 each."""
    cf = GraphCF(layers=2, init="normal", layer="bi", aggregate="concat")
    tables = {k: jnp.asarray(v) for k, v in cf.start(cold_split, 12, seed=0).items()}
    assert tables["P"].shape[1] == 4
    P, Q, E = cf.propagate(tables, cf.prepare(cold_split)["cf_graph"])
    A = GraphCF.joint_matrix(cold_split).toarray().astype(np.float64)
    n_u, n_i = A.shape
    adj = np.block([[np.zeros((n_u, n_u)), A], [A.T, np.zeros((n_i, n_i))]])
    scale = 1.0 / np.sqrt(np.maximum(adj.sum(1), 1))
    layer = np.concatenate([tables["P"], tables["Q"], tables["E_dl"]]).astype(np.float64)
    joined = [layer]
    for _ in range(2):
        S = (scale[:, None] * adj * scale[None, :]) @ layer
        layer = S + layer * S
        joined.append(layer / np.maximum(np.linalg.norm(layer, axis=1, keepdims=True), 1e-12))
    joined = np.concatenate(joined, axis=1)
    n_cf = cold_split.train.shape[1]
    assert P.shape == (n_u, 12)
    np.testing.assert_allclose(P, joined[:n_u], atol=1e-5)
    np.testing.assert_allclose(Q, joined[n_u:n_u + n_cf], atol=1e-5)
    np.testing.assert_allclose(E, joined[n_u + n_cf:], atol=1e-5)
    with pytest.raises(ConfigError, match="model.dim: 10 is not a multiple"):
        cf.start(cold_split, 10, seed=0)


def _sym(A: np.ndarray) -> np.ndarray:
    """``D^-½ [[0, A], [Aᵀ, 0]] D^-½`` of one side's binary ``[U, I]`` matrix."""
    n_u, n_i = A.shape
    adj = np.block([[np.zeros((n_u, n_u)), A], [A.T, np.zeros((n_i, n_i))]])
    scale = np.where(adj.sum(1) > 0, 1.0 / np.sqrt(np.maximum(adj.sum(1), 1)), 0.0)
    return scale[:, None] * adj * scale[None, :]


def test_graph_cf_per_side_graphs_exchange_user_rows_as_bitgcf(cold_split):
    """``graphs=per_side``: each side propagates over its own normalised graph and the user rows of the two are mixed
    after every layer by BiTGCF's transfer (its degree shares, λ_cf, λ_dl), by dense matrices here; the DL-side edge
    loss reads the DL side's own user factors."""
    cf = GraphCF(layers=2, init="normal", graphs="per_side", lambda_cf=0.7, lambda_dl=0.9)
    tables = {k: jnp.asarray(v) for k, v in cf.start(cold_split, 8, seed=0).items()}
    assert set(tables) == {"P", "Q", "E_dl", "P_dl"}
    P, Q, E, P_dl = cf.propagate_sides(tables, cf.prepare(cold_split)["cf_graph"])
    sides = [(m != 0).toarray().astype(np.float64) for m in (cold_split.train, cold_split.dl)]
    deg_cf, deg_dl = (a.sum(1) for a in sides)
    share = np.where(deg_cf + deg_dl > 0, deg_dl / np.maximum(deg_cf + deg_dl, 1), 0.5)[:, None]
    n_u = sides[0].shape[0]
    cf_nodes = np.concatenate([tables["P"], tables["Q"]]).astype(np.float64)
    dl_nodes = np.concatenate([tables["P_dl"], tables["E_dl"]]).astype(np.float64)
    sums = [cf_nodes.copy(), dl_nodes.copy()]
    for _ in range(2):
        cf_nodes, dl_nodes = _sym(sides[0]) @ cf_nodes, _sym(sides[1]) @ dl_nodes
        u_cf, u_dl = cf_nodes[:n_u].copy(), dl_nodes[:n_u].copy()
        lap = share * u_dl + (1 - share) * u_cf
        dl_nodes[:n_u] = (lap + 0.9 * u_dl + 0.1 * u_cf) / 2
        cf_nodes[:n_u] = (lap + 0.3 * u_dl + 0.7 * u_cf) / 2
        sums[0] += cf_nodes
        sums[1] += dl_nodes
    want_cf, want_dl = sums[0] / 3, sums[1] / 3
    np.testing.assert_allclose(P, want_cf[:n_u], atol=1e-5)
    np.testing.assert_allclose(Q, want_cf[n_u:], atol=1e-5)
    np.testing.assert_allclose(P_dl, want_dl[:n_u], atol=1e-5)
    np.testing.assert_allclose(E, want_dl[n_u:], atol=1e-5)
    # a cold user (no CF-side rows) gets CF-side factors through the transfer alone
    cold = np.asarray(cold_split.cold_test_users)
    reached = cold[deg_dl[cold] > 0]
    assert np.abs(np.asarray(P)[reached] - np.asarray(tables["P"])[reached] / 3).sum(1).min() > 0
    for bad in ({"graphs": "two"}, {"lambda_cf": 1.5}, {"lambda_dl": -0.1}):
        with pytest.raises(ConfigError, match="model.cf.(graphs|lambda)"):
            GraphCF(**bad)


def test_jmf_with_per_side_graphs_trains_every_layer0_table(cold_split):
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=16, epochs=2, patience=0, batch_size=128,
                cf=GraphCF(layers=2, graphs="per_side"))
    start = {k: np.asarray(v) for k, v in model.setup(cold_split).state.tables.items()}
    info = model.fit(cold_split)
    assert np.isfinite(info["train/best_valid_ndcg@10"])
    for name in ("P", "Q", "E_dl", "P_dl"):
        assert np.abs(np.asarray(model.state.tables[name]) - start[name]).max() > 1e-4, name


@pytest.fixture(scope="module")
def graph_jmf(cold_split):
    """JMF with the graph CF side fitted on ``cold_split``, and its layer-0 tables at the start."""
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=32, epochs=8, patience=0, batch_size=128,
                cf=GraphCF(layers=2))
    start = {k: np.asarray(v) for k, v in model.setup(cold_split).state.tables.items()}
    model.fit(cold_split)
    return model, start


def test_jmf_with_the_graph_cf_side_transfers_and_blends_cold_users(cold_split, graph_jmf):
    pop = Popularity()
    pop.fit(cold_split)
    model, start = graph_jmf
    ndcg, floor = (evaluate_split(m, cold_split, "test", EVAL)["ndcg@10"] for m in (model, pop))
    assert ndcg > 1.3 * floor, (ndcg, floor)       # 0.28 against 0.18 here
    tables = model.state.tables
    for name in ("P", "Q", "E_dl"):                     # every layer-0 table is trained (dense updates)
        assert not np.allclose(np.asarray(tables[name]), start[name])
    # a cold user's vector is blend·P_u (propagated: with model/cf=mf a cold user has none) + (1-blend)·P̂_u
    cold = jnp.asarray(cold_split.cold_test_users[:4])
    P = np.asarray(model.factors(model.state)["P"])[np.asarray(cold)]
    vectors = {}
    for blend in (1.0, 0.0, 0.5):
        model.blend = blend
        vectors[blend] = np.asarray(model.user_vectors(cold).vec)
    np.testing.assert_allclose(vectors[1.0], P, atol=1e-6)
    assert not np.allclose(vectors[0.0], P, atol=1e-3)             # P̂_u, the mapping of the DL-side history
    np.testing.assert_allclose(vectors[0.5], 0.5 * P + 0.5 * vectors[0.0], atol=1e-5)


def test_jmf_fits_with_the_bitgcf_style_graph_cf_side(cold_split):
    """The bi-interaction layers joined (``dim / 3`` wide each) train end to end and beat popularity."""
    pop = Popularity()
    pop.fit(cold_split)
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=24, epochs=6, patience=0, batch_size=128,
                cf=GraphCF(layers=2, layer="bi", aggregate="concat"))
    model.fit(cold_split)
    assert model.state.tables["P"].shape[1] == 8 and model.factors(model.state)["P"].shape[1] == 24
    ndcg, floor = (evaluate_split(m, cold_split, "test", EVAL)["ndcg@10"] for m in (model, pop))
    assert ndcg > 1.2 * floor, (ndcg, floor)


def test_graph_cf_without_layers_or_dl_edges_leaves_the_dl_nodes_alone(cold_split):
    """``layers=0, o2_weight=0``: nothing reaches the DL-side item nodes, so they keep their start exactly."""
    model = JMF(partial(BagEncoder), partial(LinearHead), dim=8, epochs=1, patience=0, batch_size=128,
                cf=GraphCF(layers=0, o2_weight=0.0))
    start = np.asarray(model.setup(cold_split).state.tables["E_dl"])
    model.fit(cold_split)
    np.testing.assert_array_equal(np.asarray(model.state.tables["E_dl"]), start)
    np.testing.assert_array_equal(np.asarray(model.factors(model.state)["P"]), np.asarray(model.state.tables["P"]))


def test_graph_cf_bad_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match="model.cf.layers"):
        GraphCF(layers=-1)
    with pytest.raises(ConfigError, match="model.cf.o2_weight"):
        GraphCF(o2_weight=float("nan"))
    with pytest.raises(ConfigError, match="model.cf.layer"):
        GraphCF(layer="ngcf")
    with pytest.raises(ConfigError, match="model.cf.aggregate"):
        GraphCF(aggregate="sum")
    with pytest.raises(ConfigError, match="model.cf"):
        check_cf("graph")
    data = synthetic(n_users=200, n_items=120, n_categories=4, seed=0)
    holdout = make_holdout_split(data, seed=0, beta=0.3, targets=2)
    with pytest.raises(ConfigError, match="model/cf=graph"):
        TransferJMF(partial(BagEncoder), partial(LinearHead), dim=8, cf=GraphCF()).setup(holdout)


@pytest.mark.parametrize("options", [{}, {"layer": "bi", "aggregate": "concat"}, {"graphs": "per_side"}],
                         ids=["lightgcn", "bi_concat", "per_side"])
def test_folding_a_training_users_edges_in_gives_their_propagated_factors(cold_split, options):
    """A new user's ``P_u`` is what propagation gives a node with their edges over the trained item layers: with a
    training user's own edges and layer-0 rows it is their propagated ``P_u`` exactly; a user without edges has
    none."""
    cf = GraphCF(layers=2, init="normal", **options)
    tables = {k: jnp.asarray(v) for k, v in cf.start(cold_split, 12, seed=0).items()}
    graph = cf.prepare(cold_split)["cf_graph"]
    P = np.asarray(cf.propagate(tables, graph)[0])
    stack = cf.layer_stack(tables, graph)
    users = np.concatenate([cold_split.cold_test_users[:5], np.flatnonzero(np.diff(cold_split.train.indptr))[:5]])
    rows_cf, rows_dl = cold_split.train.tocsr()[users], cold_split.dl.tocsr()[users]
    p0 = {k: np.asarray(tables[k])[users] for k in ("P", "P_dl") if k in tables}
    folded, has_edge = cf.fold_in(stack, rows_cf, rows_dl, p0)
    assert has_edge.all()
    np.testing.assert_allclose(folded, P[users], atol=1e-5)
    fresh, _ = cf.fold_in(stack, rows_cf, rows_dl)      # a new user has no trained layer-0 row: zero
    assert not np.allclose(fresh, P[users], atol=1e-3) and np.abs(fresh).sum(1).min() > 0
    empty = rows_cf[:1] * 0
    none, has_none = cf.fold_in(stack, empty, rows_dl[:1] * 0)
    assert not has_none[0] and not np.abs(none).any()


def test_jmf_with_the_graph_cf_side_folds_new_users_into_the_graph(cold_split, graph_jmf):
    """``score_new`` gives a user outside training their own folded ``P_u`` (blended with ``P̂_u`` as for a cold
    user of the run): for a training cold user's own history it is their ``P_u`` less the layer-0 row's share, and
    a user with CF-side history alone is scored (not left to popularity)."""
    from jmf.models.joint.infer import new_user_vectors
    from jmf.recommend import History

    model, _ = graph_jmf
    model.blend = 1.0
    cold = np.asarray(cold_split.cold_test_users[:6])
    seq = np.asarray(model.seq["items"])[cold]
    order = [row[row > 0] - 1 for row in seq]
    dl = cold_split.dl.tocsr()[cold]
    hist = History([str(u) for u in cold], cold_split.train.tocsr()[cold], dl, order, [np.ones(len(o)) for o in order])
    vectors, usable = new_user_vectors(model, hist)
    P = np.asarray(model.factors(model.state)["P"])[cold]
    want = P - np.asarray(model.state.tables["P"])[cold] / 3          # mean of layers 0..2, layer 0 now zero
    assert usable.all()
    np.testing.assert_allclose(np.asarray(vectors.vec), want, atol=1e-5)
    warm = np.flatnonzero(np.diff(cold_split.train.indptr))[:3]
    cf_only = History([str(u) for u in warm], cold_split.train.tocsr()[warm], cold_split.dl.tocsr()[warm] * 0,
                      [np.zeros(0, np.int64)] * 3, [np.zeros(0)] * 3)
    scores, usable = model.score_new(cf_only)
    assert usable.all() and np.isfinite(np.asarray(scores)).all()
    assert np.asarray(scores).std(1).min() > 0
