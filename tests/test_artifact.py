"""Trained models as artifacts: JMF recommends to new users from their O2 history exactly as it scored its cold
users; explanations point at the planted signal; bad saved models and inputs are refused.  That every model reloads
to its run's own metrics is checked on the model contract's runs (tests/models/test_model_contract.py)."""

from __future__ import annotations

import json
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import jmf
from jmf.artifact import ArtifactError
from jmf.config import CONF_DIR
from jmf.experiments import register_configs
from jmf.data.interactions import Interactions
from jmf.recommend import RecommendError
from jmf.run import run

DATA = ["data.n_users=240", "data.n_items=120", "data.n_categories=4", "data.interactions_per_user=16",
        "partition.k=2", "split=cold_start", "split.beta=0.3", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.devices=1"]
# model=jmf_map trains every target category of split=category_holdout (its own split, same data)
HOLDOUT = ([o for o in DATA if not o.startswith(("partition.", "split", "data.n_items"))]
           + ["data.n_items=240", "split=category_holdout", "split.beta=0.3", "split.targets=2"])
SMALL = {"dim": 8, "epochs": 2, "batch_size": 32, "map_epochs": 4, "meta_epochs": 2, "meta_dim": 8,
         "map_batch_size": 32, "meta_batch_size": 32, "max_len": 8, "eval_every": 1, "samples": 64, "cg_steps": 2}


def _run(tmp_path, overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *(HOLDOUT if "model=jmf_map" in overrides else DATA)])
    with open_dict(cfg):
        for key, value in SMALL.items():
            if key in cfg.model:
                cfg.model[key] = value
    return run(cfg, tmp_path), cfg


@pytest.fixture(scope="module")
def jmf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jmf_run")
    metrics, cfg = _run(out, ["model=jmf", "model/encoder=bag", "model/terms=[interest,neighbour]"])
    return out, metrics


def _cold_history(rec) -> pd.DataFrame:
    """The cold test users' O2 rows as raw behaviour, each user renamed (they are new to the model)."""
    split, data = rec.split, rec.split.data
    rows = split.dl_rows[np.isin(data.user[split.dl_rows], split.cold_test_users)]
    return pd.DataFrame({"user": ["new-" + str(u) for u in data.user_ids[data.user[rows]]],
                         "item": data.item_ids[data.item[rows]], "timestamp": data.timestamp[rows]})


def test_jmf_recommends_to_new_users_from_o2_history_as_it_scored_its_cold_users(jmf_run, tmp_path):
    out, metrics = jmf_run
    rec = jmf.load(out)
    history = _cold_history(rec)
    path = tmp_path / "history.csv"
    history.to_csv(path, index=False)                                 # through a CSV, raw ids as text
    hist = rec.history(pd.read_csv(path))
    new_scores, fallback = rec.score_new(hist)
    assert not fallback.any()
    users = np.array([rec._user[u.removeprefix("new-")] for u in hist.users])
    known = rec._score_known(users)
    np.testing.assert_allclose(new_scores, known, rtol=1e-5, atol=1e-5)
    # the test metrics of the run, recomputed from recommend_new's lists alone
    k = 10
    recs = rec.recommend_new(pd.read_csv(path), k=k, exclude_seen=False)
    truth = rec.split.test
    ndcg = []
    for user, group in recs.groupby("user", sort=False):
        u = rec._user[user.removeprefix("new-")]
        relevant = {rec.cf_item_ids[i] for i in truth.indices[truth.indptr[u]:truth.indptr[u + 1]]}
        if not relevant:
            continue
        train = {rec.cf_item_ids[i] for i in rec.split.train.indices[rec.split.train.indptr[u]:rec.split.train.indptr[u + 1]]}
        ranked = [i for i in group.sort_values("rank")["item"] if i not in train][:k]
        dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(ranked) if i in relevant)
        ndcg.append(dcg / sum(1 / np.log2(r + 2) for r in range(min(len(relevant), k))))
    assert np.mean(ndcg) == pytest.approx(metrics["test/ndcg@10"], abs=1e-6)


def test_item_transfer_scores_new_users_from_their_o2_history_as_its_cold_users(tmp_path):
    """With model/item_transfer the O1 items attend over a new user's O2 items exactly as over a cold user's."""
    _run(tmp_path, ["model=jmf", "model/encoder=bag", "model/item_transfer=attention"])
    rec = jmf.load(tmp_path)
    hist = rec.history(_cold_history(rec))
    new_scores, fallback = rec.score_new(hist)
    users = np.array([rec._user[u.removeprefix("new-")] for u in hist.users])
    assert not fallback.any() and rec.model.item_transfer
    np.testing.assert_allclose(new_scores, rec._score_known(users), rtol=1e-5, atol=1e-5)


def test_graph_cf_folds_new_users_into_its_saved_graph(tmp_path):
    """With model/cf=graph a reloaded model folds a new user's rows into the saved graph: a cold user's O2 history
    as a new user scores as that cold user less their layer-0 row's share (a new user has none), nothing falls back
    to popularity, and the O1 rows alone are enough."""
    _run(tmp_path, ["model=jmf", "model/encoder=bag", "model/cf=graph", "model.cf.layers=2"])
    rec = jmf.load(tmp_path)
    model = rec.model
    hist = rec.history(_cold_history(rec))
    new_scores, fallback = rec.score_new(hist)
    users = np.array([rec._user[u.removeprefix("new-")] for u in hist.users])
    state = model.state if model.rank_state is None else model.rank_state
    layer0 = np.asarray(state.tables["P"])[users] / 3                     # mean of layers 0..2
    want = rec._score_known(users) - model.blend * layer0 @ np.asarray(model.factors(state)["Q"]).T
    assert not fallback.any() and model.cf.dense
    np.testing.assert_allclose(new_scores, want, rtol=1e-4, atol=1e-4)
    split = rec.split
    warm = np.flatnonzero(np.diff(split.train.indptr))[:3]
    rows = split.train_rows[np.isin(split.data.user[split.train_rows], warm)]
    o1_only = pd.DataFrame({"user": ["o1-" + str(u) for u in split.data.user_ids[split.data.user[rows]]],
                            "item": split.data.item_ids[split.data.item[rows]]})
    _, fallback = rec.score_new(rec.history(o1_only))
    assert not fallback.any()


def test_recommend_new_inputs_and_fallbacks(jmf_run):
    rec = jmf.load(jmf_run[0])
    history = _cold_history(rec).head(30)
    extra = pd.DataFrame({"user": ["stranger", history["user"].iloc[0]], "item": ["no-such-item", "no-such-item"]})
    out = rec.recommend_new(pd.concat([history, extra]), k=3)
    assert out.attrs["unknown_items"] == 2
    stranger = out[out["user"] == "stranger"]                     # nothing usable: popularity, flagged
    assert len(stranger) == 3 and stranger["fallback"].all()
    assert not out[out["user"] != "stranger"]["fallback"].any()
    cf_only = pd.DataFrame({"user": ["cf-only"], "item": [rec.cf_item_ids[0]]})
    flagged = rec.recommend_new(cf_only, k=3)
    assert flagged["fallback"].all() and flagged.attrs["fallback_users"] == 1   # no O2 history: popularity
    with pytest.raises(RecommendError, match=r"missing column\(s\) \['item'\]"):
        rec.recommend_new(pd.DataFrame({"user": ["a"]}))
    with pytest.raises(RecommendError, match="users not in the saved run"):
        rec.recommend(["nobody"])
    with pytest.raises(RecommendError, match="k: 0"):
        rec.recommend_new(history, k=0)
    interest = rec.interest(history)
    assert list(interest.columns) == ["user", *rec.cf_categories]
    np.testing.assert_allclose(interest[rec.cf_categories].sum(axis=1), 1.0, atol=1e-5)


def test_reload_refuses_other_versions_and_a_reused_run_directory(jmf_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(jmf_run[0], copy)
    meta_path = copy / "model" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["versions"]["jax"] = "0.0.1"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"other versions \(jax 0.0.1 ->"):
        jmf.load(copy)
    jmf.load(copy, strict=False)                                      # accepted on request
    meta["versions"]["jax"] = jmf.artifact.versions()["jax"]
    meta_path.write_text(json.dumps(meta))
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text().replace("dim: 8", "dim: 16", 1))
    with pytest.raises(ArtifactError, match="config.yaml differs.*dim"):
        jmf.load(copy)
    with pytest.raises(ArtifactError, match="no such run directory"):
        jmf.load(tmp_path / "nowhere")
    (copy / "model" / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="state.safetensors: damaged"):
        jmf.load(copy)
    del meta["sha256"]                                                # saved before the checksums: parsed, refused
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="cannot read the saved model"):
        jmf.load(copy)


def _planted() -> Interactions:
    """O1 = 40 items in 4 groups of 10; O2 = a *signal* category (item j is taken with O1 group j % 4)
    and a *noise* category (items taken at random).  Each user likes one group."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(800):
        g = rng.integers(4)
        o1 = 10 * g + rng.choice(10, 5, replace=False)                   # O1 items 0..39
        # histories of varying make-up, so that a history with a category left out is not out of distribution
        signal = 40 + 4 * rng.choice(5, rng.integers(1, 5), replace=False) + g   # signal items 40..59, j % 4 == g
        noise = 60 + rng.choice(20, rng.integers(0, 5), replace=False)           # noise items 60..79
        for i in np.concatenate([o1, signal, noise]):
            users.append(u)
            items.append(i)
    category = np.array([0] * 40 + [1] * 20 + [2] * 20, np.int32)
    n = len(users)
    return Interactions(user=np.array(users, np.int32), item=np.array(items, np.int32), value=np.ones(n, np.float32),
                        timestamp=np.arange(n, dtype=np.int64), item_category=category, user_ids=np.arange(800),
                        item_ids=np.arange(80), category_names=("o1", "signal", "noise"), name="planted",
                        implicit=True)


def test_explanations_point_at_the_category_that_carries_the_planted_signal(tmp_path):
    from jmf.artifact import save_model
    from jmf.data.split import make_split, partition_categories
    from jmf.models.encoders.bag import BagEncoder
    from jmf.models.heads.linear import LinearHead
    from jmf.models.joint import JMF
    from jmf.models.base import RunContext
    from jmf.recommend import Recommender
    from functools import partial

    data = _planted()
    split = make_split(data, partition_categories(data, cf_categories=["o1"]), "cold_start", beta=0.2, seed=0)
    model = JMF(partial(BagEncoder, embed_dim=16, out_dim=16), partial(LinearHead), dim=8, epochs=15, lr=0.01,
                batch_size=64, patience=0)
    model.fit(split, RunContext(seed=0, devices=1))
    rec = Recommender(model, split, None, {})
    history = pd.DataFrame({"user": ["planted"] * 6, "item": ["41", "45", "49", "60", "67", "71"]})  # group 1
    top = rec.recommend_new(history, k=5)
    assert {int(i) // 10 for i in top["item"]} == {1}, top               # the planted group is recommended
    why = rec.explain(history, k=3)
    cats = why[why["kind"] == "category"].pivot_table(index="item", columns="source", values="contribution")
    assert (cats["signal"] > cats["noise"] + 0.1).all(), cats
    items = why[why["kind"] == "item"]
    top_sources = items.groupby("item")["source"].first()               # the strongest single O2 item
    assert all(int(s) < 60 for s in top_sources), items


def test_jmf_recommend_cli_and_its_bad_inputs(jmf_run, tmp_path, capsys):
    import subprocess
    import sys

    from jmf.recommend_cli import USER_ERROR, main

    run_dir = jmf_run[0]
    rec = jmf.load(run_dir)
    history = tmp_path / "history.csv"
    _cold_history(rec).to_csv(history, index=False)
    out = tmp_path / "recs.csv"
    res = subprocess.run([sys.executable, "-m", "jmf.recommend_cli", str(run_dir), "--input", str(history), "--k",
                          "5", "--out", str(out), "--explain"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    recs = pd.read_csv(out, dtype={"user": str, "item": str})
    assert list(recs.columns) == ["user", "rank", "item", "score", "fallback"]
    assert len(recs) == 5 * recs["user"].nunique() and "0 by the popularity fallback" in res.stdout
    assert set(pd.read_csv(tmp_path / "recs.explain.csv")["kind"]) == {"category", "item"}
    users = tmp_path / "users.csv"
    pd.DataFrame({"user": rec.user_ids[:4]}).to_csv(users, index=False)
    assert main([str(run_dir), "--input", str(users), "--k", "3", "--out", str(tmp_path / "k.csv"), "--known"]) == 0
    assert len(pd.read_csv(tmp_path / "k.csv")) == 12
    unknown = tmp_path / "unknown.csv"
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"]}).to_csv(unknown, index=False)
    assert main([str(run_dir), "--input", str(unknown), "--out", str(tmp_path / "u.csv")]) == 0   # counted fallback
    assert pd.read_csv(tmp_path / "u.csv")["fallback"].all() and "2 behaviours with unknown items" in capsys.readouterr().out
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("user,item\n")
    no_item = tmp_path / "no_item.csv"
    no_item.write_text("user\nu1\n")
    cases = [([str(tmp_path / "no-run"), "--input", str(history)], "no such run directory"),
             ([str(run_dir), "--input", str(tmp_path / "missing.csv")], "no such file"),
             ([str(run_dir), "--input", str(empty)], "the file is empty"),
             ([str(run_dir), "--input", str(header_only)], "no rows after the header"),
             ([str(run_dir), "--input", str(no_item)], r"missing column\(s\) \['item'\]"),
             ([str(run_dir), "--input", str(unknown), "--known"], "users not in the saved run"),
             ([str(run_dir), "--input", str(history), "--k", "0"], "k: 0")]
    import re
    for args, message in cases:
        assert main([*args, "--out", str(tmp_path / "x.csv")]) == USER_ERROR, args
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err, (args, err)


# ---------------------------------------------------------------- damaged model files; --explain without explanations
@pytest.fixture(scope="module")
def svd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("svd_run")
    _run(out, ["model=svd"])
    return out


def _damage(path, offset: int, size: int) -> None:
    """Invert ``size`` bytes of ``path`` from ``offset`` (as a bad disk or a torn copy would change them)."""
    blob = bytearray(path.read_bytes())
    blob[offset:offset + size] = bytes(b ^ 0xFF for b in blob[offset:offset + size])
    path.write_bytes(bytes(blob))


def _tensor_data(path) -> tuple[int, int]:
    """``(start, length)`` of a safetensors file's tensor data: past the 8-byte length and the JSON header."""
    blob = path.read_bytes()
    start = 8 + int.from_bytes(blob[:8], "little")
    return start, len(blob) - start


def test_a_damaged_model_file_is_refused_naming_it(svd_run, tmp_path, capsys):
    from jmf.recommend_cli import USER_ERROR, main

    meta = json.loads((svd_run / "model" / "meta.json").read_text())
    assert set(meta["sha256"]) == {"state.safetensors", "config.yaml", "data.npz"}
    history = tmp_path / "history.csv"
    _cold_history(jmf.load(svd_run)).to_csv(history, index=False)
    for name in meta["sha256"]:
        copy = tmp_path / name
        shutil.copytree(svd_run, copy)
        file = copy / "model" / name
        if name == "state.safetensors":                    # 4 KiB inside the tensor data, well past the header
            start, length = _tensor_data(file)
            assert length >= 2 * 4096
            _damage(file, start + length // 4, 4096)
        elif name == "config.yaml":                        # a value that still parses: a different model
            file.write_text(file.read_text().replace("n_iter: 4", "n_iter: 5"))
        else:
            _damage(file, file.stat().st_size // 2, 16)
        with pytest.raises(ArtifactError, match=rf"{re.escape(str(file))}: damaged.*sha256.*meta\.json.*jmf-train"):
            jmf.load(copy)
        out = tmp_path / f"{name}.csv"
        assert main([str(copy), "--input", str(history), "--out", str(out)]) == USER_ERROR
        err = capsys.readouterr().err
        assert name in err and "damaged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_a_model_saved_before_checksums_still_loads_with_a_note(svd_run, tmp_path, caplog):
    copy = tmp_path / "old"
    shutil.copytree(svd_run, copy)
    meta_path = copy / "model" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level("INFO", logger="jmf"):
        old = jmf.load(copy)
    assert any("no checksums" in r.getMessage() and str(copy / "model") in r.getMessage() for r in caplog.records)
    users = list(old.user_ids[:3])
    pd.testing.assert_frame_equal(old.recommend(users), jmf.load(svd_run).recommend(users))


def test_explain_is_refused_before_writing_for_a_model_that_ignores_dl_history(svd_run, tmp_path, capsys):
    from jmf.recommend import EXPLAINED
    from jmf.recommend_cli import USER_ERROR, main

    rec = jmf.load(svd_run)
    assert not rec.explains()
    history = _cold_history(rec)
    with pytest.raises(RecommendError, match=r"TruncatedSVD.*DL-side history.*model=jmf"):
        rec.explain(history.head(20))
    path = tmp_path / "history.csv"
    history.to_csv(path, index=False)
    out = tmp_path / "recs.csv"
    refused = (rf"--explain \({re.escape(str(svd_run))}\): .*TruncatedSVD \(jmf\.models\.cf\.svd\.TruncatedSVD\).*"
               + ".*".join(f"model={m}" for m in EXPLAINED))
    for extra, message in ([], refused), (["--known"], "--explain .* cannot be combined with --known"):
        assert main([str(svd_run), "--input", str(path), "--out", str(out), "--explain", *extra]) == USER_ERROR
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() and not out.with_suffix(".explain.csv").exists()
