"""``split=category_holdout``, ``model=jmf_map`` and the category transfer map (jmf/transfer_map.py).

The split holds out what it says, target by target; the one model trained over every target is seen target by
target as a single-target model, hides exactly the categories it is told to, scores a new user's history as it
scores the same history in training; a run writes the map, the planted map and the picture in the layout the
interface names, and says so in its last line.  How well the map recovers a planted graph is measured by
``benchmarks/transfer_map.py`` (3 seeds of ``experiment=synthetic_transfer_map``), not here.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from jmf.config import CONF_DIR
from jmf.data.holdout import make_holdout_split, target_view, view_at
from jmf.data.planted import planted_map, planted_weights
from jmf.errors import ConfigError
from jmf.experiments import register_configs
from jmf.run import run
from jmf.transfer_map import clustered_order, planted_agreement, read_csv, write_csv

TINY = ["data.n_users=500", "data.groups=[2,2]", "data.items_per_category=40", "data.active=3",
        "data.per_category=6", "model.epochs=2", "model.dim=8", "model.batch_size=64", "model.max_len=12",
        "model.encoder.embed_dim=8", "model.encoder.hidden=16", "model.encoder.out_dim=8",
        "trainer.progress=false", "trainer.tensorboard=false", "trainer.devices=1"]


def _data(seed: int = 0):
    return planted_map(n_users=400, groups=(2, 2), weights=(0.9, 0.5), items_per_category=30, active=3,
                       per_category=6, seed=seed)


def test_each_target_loses_exactly_its_cold_users_rows():
    data = _data()
    split = make_holdout_split(data, seed=0, beta=0.3)
    h = split.holdout
    assert list(h.targets) == [0, 1, 2, 3]
    cat = data.item_category[data.item]
    train_rows = set(split.dl_rows.tolist())
    for k, t in enumerate(h.targets):
        view = view_at(split, k)
        assert (target_view(split, data.category_names[t]).test != view.test).nnz == 0
        test, valid = h.test_users[k], h.valid_users[k]
        assert len(test) and not set(test) & set(valid)
        assert (data.item_category[view.cf_items] == t).all() and t not in view.partition.dl_categories
        for users, fold in ((test, view.test), (valid, view.valid)):
            held = np.isin(data.user, users) & (cat == t)
            assert fold.nnz == held.sum() and not train_rows & set(np.flatnonzero(held).tolist())
            assert view.train[users].nnz == 0
        eligible = np.unique(data.user[cat == t])
        assert len(test) <= round(0.3 * len(eligible)) + 1
        # the view's DL side is every other category's training rows, the target's never
        assert not np.isin(data.item_category[view.dl_items], [t]).any()
        assert view.dl.nnz == sum(1 for r in train_rows if cat[r] != t)
        same = make_holdout_split(data, seed=0, beta=0.3, target=data.category_names[t])
        assert (same.test != view.test).nnz == 0 and (same.dl != view.dl).nnz == 0
    cold = split.cold_test_users
    assert (np.diff(split.dl[cold].indptr) > 0).all()      # every cold user keeps training rows somewhere


def test_which_categories_are_targets():
    data = _data()
    assert list(make_holdout_split(data, targets=2).holdout.targets) == sorted(
        np.argsort(-np.bincount(data.item_category[data.item]), kind="stable")[:2])
    assert list(make_holdout_split(data, targets=["g1c03", "g0c00"]).holdout.targets) == [0, 3]
    with pytest.raises(ConfigError, match=r"split\.targets.*'nope'"):
        make_holdout_split(data, targets=["nope"])
    with pytest.raises(ConfigError, match=r"split\.target: 'g9'"):
        make_holdout_split(data, target="g9")
    numbered = dataclasses.replace(data, category_names=("1", "2", "3", "4"))   # Ciao's names are numbers
    view = make_holdout_split(numbered, target=2)            # split.target=2 on the command line: the name "2"
    assert list(view.partition.cf_categories) == [1]
    with pytest.raises(ConfigError, match=r"split\.target: 0 is not a target"):
        make_holdout_split(numbered, target=0)


def test_planted_weights_are_the_groups():
    group, W = planted_weights([2, 3], [0.9, 0.0])
    assert list(group) == [0, 0, 1, 1, 1]
    assert np.isnan(np.diag(W)).all() and W[0, 1] == W[1, 0] == 0.9 and W[2, 3] == 0.0 and W[0, 2] == 0.0
    data = _data()
    assert data.planted.shape == (4, 4) and data.category_names[0] == "g0c00"
    again = _data()
    assert (again.item == data.item).all()                   # a function of the seed


def test_map_helpers(tmp_path):
    m = np.array([[np.nan, 0.5, -0.1], [0.25, np.nan, 0.0], [0.0, 0.1, np.nan]])
    write_csv(tmp_path / "m.csv", ["a", "b", "c"], ["a", "b", "c"], m)
    rows, cols, back = read_csv(tmp_path / "m.csv")
    assert rows == cols == ["a", "b", "c"] and np.array_equal(np.isnan(back), np.isnan(m))
    np.testing.assert_allclose(back[~np.isnan(m)], m[~np.isnan(m)])
    assert (tmp_path / "m.csv").read_text().splitlines()[1] == "a,,0.5,-0.1"
    planted = np.array([[np.nan, 0.9, 0.0], [0.9, np.nan, 0.0], [0.0, 0.0, np.nan]])
    got = planted_agreement(m, planted)
    assert got["map/within"] == pytest.approx((0.5 + 0.25) / 2)
    assert got["map/across"] == pytest.approx((-0.1 + 0.0 + 0.0 + 0.1) / 4)
    assert "map/within_over_across" not in got             # across <= 0: no ratio
    blocks = np.kron(np.eye(2), np.ones((3, 3)))[[0, 3, 1, 4, 2, 5]][:, [0, 3, 1, 4, 2, 5]]
    order = clustered_order(blocks)
    assert {frozenset(order[:3]), frozenset(order[3:])} == {frozenset({0, 2, 4}), frozenset({1, 3, 5})}


def _cfg(overrides):
    """The planted task, tiny; ``model=<m>`` in ``overrides`` is that row at its defaults (the model's own sizes)."""
    row = next((o.split("=")[1] for o in overrides if o.startswith("model=")), None)
    task = "synthetic_transfer_map" + (f"/{row}" if row else "")
    register_configs([f"experiment={task}"])
    rest = [o for o in overrides if not o.startswith("model=")]
    tiny = [o for o in TINY if not (row and o.startswith("model."))]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={task}", *tiny, *rest])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny planted run: ``(its directory, its metrics, the last line it printed, the loaded Recommender)``."""
    import contextlib
    import io

    import jmf

    out = tmp_path_factory.mktemp("fitted")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = run(_cfg(["seed=0"]), out)
    return out, metrics, printed.getvalue().strip().splitlines()[-1], jmf.load(out)


def test_a_run_writes_the_map_the_planted_map_and_the_picture(fitted):
    out, metrics, last, _ = fitted
    names = [f"g{c // 2}c{c:02d}" for c in range(4)]
    rows, cols, tmap = read_csv(out / "transfer_map.csv")
    assert (out / "transfer_map.csv").read_text().startswith("target," + ",".join(names) + "\n")
    assert rows == cols == names and np.isnan(np.diag(tmap)).all() and np.isfinite(tmap[~np.eye(4, dtype=bool)]).all()
    prow, pcol, planted = read_csv(out / "planted_map.csv")
    assert prow == rows and pcol == cols and planted[0, 1] == 0.9 and planted[2, 3] == 0.5 and planted[0, 2] == 0.0
    assert (out / "transfer_map.png").read_bytes()[:4] == b"\x89PNG"
    assert all(f in last for f in ("transfer_map.csv", "transfer_map.png", "planted_map.csv")), last
    per = [metrics[f"targets/{n}/test/ndcg@10"] for n in names]
    assert metrics["test/ndcg@10"] == pytest.approx(np.mean(per))
    assert all(math.isfinite(metrics[k]) for k in ("map/within", "map/across", "map/spearman"))
    lift = (out / "interest_lift.csv").read_text().splitlines()
    assert lift[0] == "target,cold_users,interest_cold,interest_never_active,lift,auc" and len(lift) == 5


def test_single_target_models_and_the_multi_target_split_are_matched(tmp_path):
    with pytest.raises(ConfigError, match=r"split\.target=<category name>"):
        run(_cfg(["model=pop"]), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"needs split=category_holdout"):
        run(_cfg(["split=cold_start", "partition.k=2"]), tmp_path / "b")
    with pytest.raises(ConfigError, match=r"partition\.k.*split\.targets"):
        run(_cfg(["partition.k=2"]), tmp_path / "c")
    metrics = run(_cfg(["model=pop", "split.target=g1c02"]), tmp_path / "d")   # one target's cold-start split
    assert "test/ndcg@10" in metrics and not any(k.startswith("targets/") for k in metrics)


def test_a_target_view_hides_what_it_is_told_and_nothing_else(fitted):
    model, split = fitted[3].model, fitted[3].split
    k, t = 0, int(split.holdout.targets[0])
    users = split.holdout.test_users[k][:16]
    base = np.asarray(model.target_view(k).score(jnp.asarray(users)))
    assert base.shape == (len(users), split.holdout.item_start[1] - split.holdout.item_start[0])
    seq_cats = np.asarray(model.seq["categories"])[users]
    has = [s for s in range(4) if s != t and (seq_cats == s + 1).any()]
    absent = [s for s in range(4) if s != t and not (seq_cats == s + 1).any()]
    hidden = np.asarray(model.target_view(k, hide_source=has[0]).score(jnp.asarray(users)))
    rows = (seq_cats == has[0] + 1).any(1)
    assert not np.allclose(hidden[rows], base[rows]) and np.array_equal(hidden[~rows], base[~rows])
    for s in absent:
        assert np.array_equal(np.asarray(model.target_view(k, hide_source=s).score(jnp.asarray(users))), base)
    with pytest.raises(ValueError, match="target itself"):
        model.target_view(k, hide_source=t)
    # the sampled protocols' candidate scores are this model's per-target scores, picked
    items = np.random.default_rng(0).integers(0, split.train.shape[1], (len(users), 5)).astype(np.int32)
    np.testing.assert_array_equal(np.asarray(model.score_candidates(jnp.asarray(users), jnp.asarray(items))),
                                  np.take_along_axis(np.asarray(model.score(jnp.asarray(users))), items, 1))


def test_a_source_weighed_zero_is_a_hidden_source(fitted):
    """``model.source_weights``: the bag's pooling is the weighted mean, so a source at weight ~0 for a target ranks
    that target as hiding the source does; the weights are per target; an encoder without a weighted pooling is
    refused by name."""
    model, split = fitted[3].model, fitted[3].split
    logits = model.state.params["source_logits"]
    assert logits[...].shape == (4, 5)                                  # targets × (pad + categories)
    k, t = 0, int(split.holdout.targets[0])
    users = split.holdout.test_users[k][:32]
    seq_cats = np.asarray(model.seq["categories"])[users]
    s = next(c for c in range(4) if c != t and (seq_cats == c + 1).any())
    users = users[((seq_cats != 0) & (seq_cats != s + 1)).any(1)]      # users with another input left
    hidden = np.asarray(model.target_view(k, hide_source=s).score(jnp.asarray(users)))
    other = np.asarray(model.target_view(1 if t != 1 else 2).score(jnp.asarray(users)))
    saved = logits[...]
    try:
        logits[...] = saved.at[k, s + 1].set(-3.0)                    # exp(-30) after the rate
        zero = np.asarray(model.target_view(k).score(jnp.asarray(users)))
        np.testing.assert_allclose(zero, hidden, rtol=1e-4, atol=1e-5)
        assert np.array_equal(np.asarray(model.target_view(1 if t != 1 else 2).score(jnp.asarray(users))), other)
    finally:
        logits[...] = saved
    from flax import nnx

    from jmf.models.encoders.cnn import CNNEncoder
    from jmf.models.heads.linear import LinearHead
    from jmf.models.joint.net import JMFNet

    cnn = CNNEncoder(5, 4, 8, embed_dim=4, filters=4, out_dim=4, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match=r"model\.source_weights=true.*CNNEncoder"):
        JMFNet(cnn, LinearHead, 4, 4, 5, 5, 4, rngs=nnx.Rngs(0), n_targets=4, source_weights=True)
    assert JMFNet(cnn, LinearHead, 4, 4, 5, 5, 4, rngs=nnx.Rngs(0), n_targets=4).source_logits is None


def test_each_target_chooses_its_own_term_weight_on_its_validation(tmp_path):
    """A term with a list of weights: each target keeps the weight best on its own validation users; the saved
    model keeps the choices; ``train/targets/<name>/<term>_score`` says them."""
    import jmf

    metrics = run(_cfg(["seed=0", "model/terms=[neighbour]", "model.terms.neighbour.weight=[0.0,4.0]",
                        "model.rank_monitor=ndcg@10"]), tmp_path / "run")
    rec = jmf.load(tmp_path / "run")
    model = rec.model
    names = [str(rec.split.data.category_names[t]) for t in rec.split.holdout.targets]
    chosen = model.target_terms["neighbour"]
    assert [metrics[f"train/targets/{n}/neighbour_score"] for n in names] == chosen.tolist()
    for k, validator in enumerate(model.validator.validators):
        figures = []
        for weight in (0.0, 4.0):
            model.target_terms["neighbour"] = np.where(np.arange(len(chosen)) == k, weight, chosen)
            figures.append(validator(model.target_view(k), "ndcg@10"))
        assert figures[[0.0, 4.0].index(float(chosen[k]))] == max(figures), (k, figures)
    model.target_terms["neighbour"] = chosen


def test_a_new_user_is_scored_as_the_same_history_in_training(fitted):
    """A cold user's own training history, as a new user's, gives their scores in every target they are cold in."""
    import pandas as pd

    rec = fitted[3]
    model, split, data = rec.model, rec.split, rec.split.data
    user = int(split.holdout.test_users[0][0])
    rows = split.dl_rows[data.user[split.dl_rows] == user]          # their training rows, every category
    frame = pd.DataFrame({"user": "someone new", "item": data.item_ids[data.item[rows]],
                          "timestamp": data.timestamp[rows]})
    scores, usable = model.score_new(rec.history(frame))
    want = np.asarray(model.score(jnp.asarray([user])))
    assert usable.all()
    start = split.holdout.item_start
    cold = [k for k in range(len(start) - 1) if not bool(model.warm[user, k])]   # a new user is cold everywhere
    assert 0 in cold
    known = rec.interest([str(data.user_ids[user])])
    np.testing.assert_allclose(known.iloc[0, 1:].to_numpy(float), np.asarray(model.interest(jnp.asarray([user])))[0],
                               rtol=1e-6)
    assert list(known.columns) == ["user", *[str(n) for n in data.category_names]]
    for k in cold:
        np.testing.assert_allclose(np.asarray(scores)[:, start[k]:start[k + 1]], want[:, start[k]:start[k + 1]],
                                   rtol=1e-5, atol=1e-5)


def test_jmf_report_draws_a_sweeps_mean_map_with_its_spread(tmp_path):
    from jmf.report import write_report

    maps = [np.array([[np.nan, 0.2], [0.0, np.nan]]), np.array([[np.nan, 0.4], [0.1, np.nan]])]
    for seed, m in enumerate(maps):
        job = tmp_path / "sweep" / str(seed)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model=jmf_map\n- seed={seed}\n")
        (job / "metrics.json").write_text('{"valid/ndcg@10": 0.3, "test/ndcg@10": 0.25}')
        write_csv(job / "transfer_map.csv", ["a", "b"], ["a", "b"], m)
    report = write_report(tmp_path / "sweep").read_text()
    assert "transfer_map_mean.png" in report and (tmp_path / "sweep" / "transfer_map_mean.png").exists()
    _, _, mean = read_csv(tmp_path / "sweep" / "transfer_map_mean.csv")
    _, _, spread = read_csv(tmp_path / "sweep" / "transfer_map_mean_spread.csv")
    np.testing.assert_allclose([mean[0, 1], mean[1, 0]], [0.3, 0.05], rtol=1e-5)      # CSVs keep 6 digits
    np.testing.assert_allclose(spread[0, 1], np.std([0.2, 0.4], ddof=1), rtol=1e-5)
    assert np.isnan(mean[0, 0]) and np.isnan(spread[1, 1])


def test_jmf_map_trains_data_parallel_with_row_sharded_tables():
    """4 CPU devices (tests/conftest.py), every table row-sharded: ``P`` has a row per (user, target), padded."""
    from functools import partial

    from jmf.models.encoders.bag import BagEncoder
    from jmf.models.heads.linear import LinearHead
    from jmf.models.joint import TransferJMF
    from jmf.train.engine import RunContext

    split = make_holdout_split(_data(), seed=0, beta=0.3)
    model = TransferJMF(partial(BagEncoder, embed_dim=8, out_dim=8), partial(LinearHead), dim=8, epochs=1,
                        pretrain_epochs=1, patience=0, batch_size=16, items_per_user=4, max_len=8, negatives=8)
    info = model.fit(split, RunContext(checkpoint=False, progress=False, devices=4, shard_tables=True))
    P = model.state.tables["P"]
    assert model.engine.n_devices == 4 and "data" in str(P.sharding.spec)
    assert P.shape[0] % 4 == 0 and P.shape[0] >= 4 * split.n_users and info["train/steps"] > 0
    scores = np.asarray(model.score(jnp.asarray(split.holdout.test_users[0][:5])))
    assert scores.shape == (5, split.train.shape[1]) and np.isfinite(scores).all()
