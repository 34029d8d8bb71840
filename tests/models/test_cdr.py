"""Cross-domain baselines (CMF, EMCDR, PTUPCDR): transfer on planted cold start, closed-form
references for the mappings, errors that name the key, and the Hydra configs end to end."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from flax import nnx
from hydra import compose, initialize_config_dir

from jmf.config import CONF_DIR
from jmf.experiments import register_configs
from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.cdr import tables
from jmf.models.cdr.cmf import CMF
from jmf.models.cdr.emcdr import EMCDR, FactorMapping
from jmf.models.cdr.ptupcdr import PTUPCDR, MetaBridge, make_meta_epoch
from jmf.models.cf.popularity import Popularity
from jmf.models.base import Model

EVAL = EvalConfig(ks=(10,))
MF = {"dim": 16, "epochs": 8, "batch_size": 256, "optimizer": "adam", "lr": 0.01, "reg": 0.001}
SMALL = {
    "cmf": lambda **kw: CMF(**{**MF, "patience": 0, "eval_every": 4, **kw}),
    "emcdr": lambda **kw: EMCDR(**{**MF, "map_hidden": [32], "map_epochs": 60, "map_lr": 3e-3, "eval_every": 20,
                                   "patience": 0, **kw}),
    "ptupcdr": lambda **kw: PTUPCDR(**{**MF, "meta_epochs": 6, "meta_dim": 16, "meta_lr": 3e-3, "max_len": 20,
                                       "meta_batch_size": 64, "eval_every": 3, "patience": 0, **kw}),
}


@pytest.fixture(scope="module")
def cold_split():
    data = synthetic(n_users=1200, n_items=600, n_categories=6, seed=0)
    return make_split(data, partition_categories(data, k=3), "cold_start", beta=0.3, seed=0)


@pytest.fixture(scope="module")
def pop_ndcg(cold_split):
    pop = Popularity()
    pop.fit(cold_split)
    return evaluate_split(pop, cold_split, "test", EVAL)["ndcg@10"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_baseline_transfers_to_cold_start_users(cold_split, pop_ndcg, name):
    model = SMALL[name]()
    assert isinstance(model, Model)
    info = model.fit(cold_split)
    assert info["train/validations"] >= 1 and np.isfinite(info["train/best_valid_ndcg@10"])
    ndcg = evaluate_split(model, cold_split, "test", EVAL)["ndcg@10"]
    print(f"{name}: cold-start test ndcg@10 {ndcg:.4f} vs popularity {pop_ndcg:.4f}")
    assert ndcg > 1.15 * pop_ndcg, (ndcg, pop_ndcg)
    warm = np.flatnonzero(np.diff(cold_split.train.indptr) > 0)
    cold = cold_split.cold_test_users
    table = model.user_factors
    if name != "cmf":  # warm users keep their own target factors; cold ones are transferred
        own = np.asarray(model.target["P"])
        np.testing.assert_array_equal(table[warm], own[warm])
        assert not np.allclose(table[cold], own[cold])
    # every stage ran on the engine and traced its jitted pass once (no weak-type or sharding drift)
    engines = {"cmf": lambda: [(model.engine, "tables")],
               "emcdr": lambda: [(model.tables_engine, "tables"), (model.mapping.engine, "emcdr-mapping")],
               "ptupcdr": lambda: [(model.tables_engine, "tables"), (model.meta_engine, "meta")]}[name]
    for engine, stage in engines():
        assert engine.traces[stage] == 1, (stage, dict(engine.traces))
    scores = np.asarray(model.score(jnp.asarray(cold[:4])))
    assert scores.shape == (4, cold_split.train.shape[1]) and np.isfinite(scores).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_baseline_predicts_ratings_for_cold_users(name):
    data = synthetic(n_users=600, n_items=300, n_categories=4, implicit=False, seed=2)
    split = make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)
    model = SMALL[name]()
    info = model.fit(split)
    assert "train/best_valid_rmse" in info
    out = evaluate_split(model, split, "test", EvalConfig(ks=(10,)))
    truth = split.test[split.cold_test_users].data
    mean_rmse = float(np.sqrt(((truth - split.train.data.mean()) ** 2).mean()))  # the global-mean predictor
    print(f"{name}: cold-start test rmse {out['rmse']:.4f} vs global mean {mean_rmse:.4f}")
    assert out["rmse"] < mean_rmse and out["mae"] > 0


def test_table_epochs_trace_once_and_are_seeded():
    """Each fit traces its epoch once however many epochs run; a seed fixes the result."""
    data = synthetic(n_users=150, n_items=80, n_categories=3, seed=3)
    split = make_split(data, partition_categories(data, k=1), "cold_start", beta=0.3, seed=0)
    fits = {}
    for seed, epochs, scale in [(0, 2, 0.1), (1, 3, 0.05), (1, 3, 0.05)]:
        cfg = tables.TableConfig(dim=4, kind="bpr", epochs=epochs, batch_size=64, init_scale=scale)
        out = tables.fit_tables(split, cfg, shared_users=False, seed=seed, model="test")
        assert np.isfinite(out.loss) and out.side("source")["P"].shape == (150, 4)
        assert out.engine.traces["tables"] == 1
        fits.setdefault(seed, []).append(np.asarray(out.params["P"]))
    np.testing.assert_array_equal(fits[1][0], fits[1][1])
    assert not np.allclose(fits[0][0], fits[1][0])


def test_linear_mapping_matches_least_squares():
    """EMCDR's mapping with no hidden layer converges to the least-squares (affine) solution."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(400, 6)).astype(np.float32)
    planted = rng.normal(size=(6, 5)).astype(np.float32)
    target = (source @ planted + 0.3 + 0.05 * rng.normal(size=(400, 5))).astype(np.float32)
    design = np.concatenate([source, np.ones((400, 1), np.float32)], 1)
    solution = np.linalg.lstsq(design, target, rcond=None)[0]                      # [7, 5]
    mapping = FactorMapping(6, 5, hidden=(), lr=0.02, batch_size=64, seed=0)
    mapping.fit(jnp.asarray(source), jnp.asarray(target), epochs=150)
    np.testing.assert_allclose(np.asarray(mapping.params["out"]["kernel"][...]), solution[:6], atol=1e-2)
    np.testing.assert_allclose(np.asarray(mapping.params["out"]["bias"][...]), solution[6], atol=1e-2)
    np.testing.assert_allclose(planted, solution[:6], atol=0.02)  # and least squares recovers the plant


def test_mlp_mapping_fits_a_linear_map_as_well_as_least_squares():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(600, 6)).astype(np.float32)
    target = (source @ rng.normal(size=(6, 6)) + 0.1 * rng.normal(size=(600, 6))).astype(np.float32)
    fit, held = slice(0, 500), slice(500, None)
    solution = np.linalg.lstsq(source[fit], target[fit], rcond=None)[0]
    ls_error = ((source[held] @ solution - target[held]) ** 2).mean()
    mapping = FactorMapping(6, 6, hidden=(32,), lr=3e-3, batch_size=64, seed=0)
    mapping.fit(jnp.asarray(source[fit]), jnp.asarray(target[fit]), epochs=200)
    mlp_error = float(((np.asarray(mapping(jnp.asarray(source[held]))) - target[held]) ** 2).mean())
    total = target[held].var(0).sum() / target.shape[1]
    assert mlp_error < ls_error + 0.02 * total, (mlp_error, ls_error, total)


def test_bridge_with_constant_meta_output_is_a_shared_linear_map():
    """With ``W₄ = 0`` the meta network writes the same ``W_u = reshape(b₄)`` for every history."""
    d, B, L = 5, 7, 6
    rng = np.random.default_rng(0)
    net = MetaBridge(d, meta_dim=8, rngs=nnx.Rngs(0))
    shared = rng.normal(size=(d, d)).astype(np.float32)
    net.meta_out.bias[...] = jnp.asarray(shared.reshape(-1))
    source = rng.normal(size=(B, d)).astype(np.float32)
    history = jnp.asarray(rng.normal(size=(B, L, d)), jnp.float32)
    mask = jnp.asarray(rng.random((B, L)) < 0.6).at[0].set(False)  # user 0: empty history
    p_hat, _ = net(jnp.asarray(source), jnp.zeros(B), history, mask)
    np.testing.assert_allclose(np.asarray(p_hat), source @ shared, rtol=1e-5, atol=1e-5)
    c = np.asarray(net.characteristic(history, mask))
    assert np.allclose(c[0], 0.0) and not np.allclose(c[1:], 0.0)


def test_ptupcdr_starts_from_the_least_squares_bridge(cold_split):
    """No meta epoch: cold users get ``P_s A`` with ``A = argmin ‖P_s A − P_t‖²`` over the overlapping users."""
    model = SMALL["ptupcdr"](meta_epochs=0, epochs=2)
    model.fit(cold_split)
    P_s, P_t = np.asarray(model.source["P"]), np.asarray(model.target["P"])
    overlap = np.flatnonzero((np.diff(cold_split.train.indptr) > 0) & (np.diff(cold_split.dl.indptr) > 0))
    A = np.linalg.lstsq(P_s[overlap], P_t[overlap], rcond=None)[0]
    cold = cold_split.cold_test_users
    np.testing.assert_allclose(model.user_factors[cold], P_s[cold] @ A, rtol=1e-4, atol=1e-4)


def test_meta_network_learns_history_dependent_bridges():
    """Planted: users whose O2 history lies in item group g have target factor ``P_s A_g``; no shared
    map fits both groups, the task-trained personalised bridge does (on the rating loss alone)."""
    rng = np.random.default_rng(0)
    U, d, I_S, I_T, L, m = 400, 4, 40, 60, 5, 12
    group = rng.integers(0, 2, U)
    maps = rng.normal(size=(2, d, d)).astype(np.float32)
    source_users = rng.normal(size=(U, d)).astype(np.float32)
    target_users = np.einsum("ud,ude->ue", source_users, maps[group])
    offset = np.where(np.arange(I_S) < I_S // 2, 2.0, -2.0)[:, None]      # the two groups' items are apart
    source_items = (rng.normal(size=(I_S, d)) + offset).astype(np.float32)
    history = 1 + rng.integers(0, I_S // 2, (U, L)) + (I_S // 2) * group[:, None]     # group-g items, +1 (0 = pad)
    items = rng.normal(size=(I_T, d)).astype(np.float32)
    frozen = {"source_users": jnp.asarray(source_users), "source_bias": jnp.zeros(U),
              "source_items": jnp.asarray(source_items), "history": jnp.asarray(history, jnp.int32),
              "items": jnp.asarray(items), "item_bias": jnp.zeros(I_T)}
    net = MetaBridge(d, meta_dim=32, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    import optax

    tx = optax.adam(3e-3)
    epoch = jax.jit(make_meta_epoch(graphdef, tx, "mse", 0.0, I_T, 8))
    opt_state = tx.init(params)
    S, B = 25, 64
    for e in range(12):
        users = rng.integers(0, U, (S, B))
        picked = rng.integers(0, I_T, (S, B, m))
        values = np.einsum("sbd,sbmd->sbm", target_users[users], items[picked])
        batches = {"users": jnp.asarray(users, jnp.int32), "items": jnp.asarray(picked, jnp.int32),
                   "values": jnp.asarray(values, jnp.float32)}
        params, opt_state, loss = epoch(params, opt_state, rest, frozen, batches, jax.random.key(e))
    net = nnx.merge(graphdef, params, rest)
    p_hat, _ = net(frozen["source_users"], frozen["source_bias"], frozen["source_items"][frozen["history"] - 1],
                   frozen["history"] > 0)
    personal = float(((np.asarray(p_hat) - target_users) ** 2).mean())
    shared = np.linalg.lstsq(source_users, target_users, rcond=None)[0]
    shared_error = float(((source_users @ shared - target_users) ** 2).mean())
    print(f"planted bridges: personalised factor mse {personal:.4f} vs best shared linear map {shared_error:.4f}")
    assert personal < 0.1 * shared_error, (personal, shared_error)


def test_errors_name_the_key(cold_split):
    data = synthetic(n_users=100, n_items=60, n_categories=3, seed=0)
    no_dl = make_split(data, partition_categories(data), "ratio")
    for name, make in SMALL.items():
        with pytest.raises(ValueError, match=f"model={name} needs a DL side: .* neither partition.k nor "
                                             "partition.cf_categories is set"):
            make().fit(no_dl)
    for cls in (CMF, EMCDR, PTUPCDR):
        with pytest.raises(ValueError, match="model.loss"):
            cls(loss="hinge")
        with pytest.raises(ValueError, match="model.monitor"):
            cls(monitor="ndcg")
        with pytest.raises(ValueError, match="model.negatives"):
            cls(negatives=0)
    with pytest.raises(ValueError, match="model.map_hidden"):
        EMCDR(map_hidden=["wide"])
    with pytest.raises(ValueError, match="model.bridge_init"):
        PTUPCDR(bridge_init="random")
    # drop the O2 rows of every warm user: nobody is active on both sides
    warm = (np.diff(cold_split.train.indptr) > 0).astype(np.float32)
    disjoint = dataclasses.replace(cold_split, dl=sp.csr_matrix(sp.diags(1.0 - warm) @ cold_split.dl))
    for name in ("emcdr", "ptupcdr"):
        with pytest.raises(ValueError, match=f"model={name}: no user has both"):
            SMALL[name]().fit(disjoint)


def test_valid_protocol_reaches_the_models_epoch_selection(tmp_path):
    """``eval.valid_protocol=test`` through ``jmf.run``: CMF's best validation NDCG@10 is the sampled
    protocol's (the run's own sampled valid/ndcg@10 of the kept state), far above full ranking's."""
    from jmf.run import run

    register_configs()
    base = ["model=cmf", "split=cold_start", "partition.k=4", "data.n_users=300", "data.n_items=200",
            "model.dim=8", "model.epochs=3", "eval=sampled", "eval.negatives=20", "eval.ks=[10]"]
    out = {}
    for protocol in ("full", "test"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*base, f"eval.valid_protocol={protocol}"])
        out[protocol] = run(cfg, tmp_path / protocol)
    sampled = out["test"]
    np.testing.assert_allclose(sampled["train/best_valid_ndcg@10"], sampled["valid/ndcg@10"], rtol=1e-5)
    assert sampled["train/best_valid_ndcg@10"] > 1.5 * out["full"]["train/best_valid_ndcg@10"]   # 0.35 vs 0.20
