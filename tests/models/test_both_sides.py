"""One run, both sides (``split.dl_folds``): DisenCDR, CDRIB and BiTGCF validate the DL side with its own best
epoch and are tested on it (``dl/...``), the CF side's figures are those of a run without, and a model that
does not rank DL-side items is told so."""

import dataclasses
import json

import numpy as np
import pytest

from jmf.data.interactions import TEST, TRAIN
from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.errors import ConfigError
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.base import BothSides, RunContext
from jmf.models.graph.bitgcf import BiTGCF
from jmf.models.graph.cdrib import CDRIB
from jmf.models.graph.disencdr import DisenCDR
from jmf.models.graph.lightgcn import LightGCN
from jmf.pipeline import evaluate

EVAL = EvalConfig(ks=(10,), ratings=False)


@pytest.fixture(autouse=True, scope="module")
def _quick(quick_compiles):
    """Unoptimised XLA and a module-wide compilation cache (tests/conftest.py::quick_compiles)."""
    yield


def _folded(seed=0):
    """Synthetic interactions with predefined folds: one random test row per user and side."""
    data = synthetic(n_users=120, n_items=60, n_categories=4, interactions_per_user=12, seed=seed)
    partition = partition_categories(data, k=2)
    cf = np.isin(data.item_category[data.item], partition.cf_categories)
    rng = np.random.default_rng(seed)
    fold = np.full(len(data), TRAIN, np.int8)
    for side in (cf, ~cf):
        rows = np.flatnonzero(side)
        order = rows[np.lexsort((rng.random(len(rows)), data.user[rows]))]
        first = order[np.r_[0, np.flatnonzero(np.diff(data.user[order])) + 1]]
        fold[first] = TEST
    return dataclasses.replace(data, fold=fold), partition


def _split(dl_folds=True, authors=False):
    data, partition = _folded()
    if authors:
        return make_split(data, partition, "predefined", valid_ratio=0.0, valid_is_test=True, dl_folds=dl_folds)
    return make_split(data, partition, "predefined", valid_ratio=1.0, dl_folds=dl_folds)


def _ctx(**kw):
    return RunContext(**{"checkpoint": False, "tensorboard": False, "progress": False, "devices": 1, **kw})


SMALL = {"dim": 8, "epochs": 4, "batch_size": 32, "eval_every": 1, "patience": 0, "monitor": "ndcg@10"}


@pytest.mark.parametrize("make", [lambda: BiTGCF(layers=2, **SMALL),
                                  lambda: DisenCDR(layers=2, warmup_epochs=1, **SMALL),
                                  lambda: CDRIB(layers=2, critic_users=16, **SMALL)], ids=["bitgcf", "disencdr", "cdrib"])
def test_the_dl_side_is_validated_on_its_own_and_tested(make):
    split = _split()
    model = make()
    assert isinstance(model, BothSides)
    info = model.fit(split, _ctx())
    view = model.dl_view()
    users, items = view.score_tables()[:2]
    assert users.shape[0] == split.n_users and items.shape[0] == split.dl.shape[1] != split.train.shape[1]
    assert users.shape[1] == items.shape[1] >= model.dim        # (concatenated layers: BiTGCF, CDRIB)
    # the DL side's tables are those of its own best validated epoch: re-evaluated, its best validation value
    best = info["train/dl/best_valid_ndcg@10"]
    assert evaluate_split(view, split.mirrored(), "valid", EVAL)["ndcg@10"] == pytest.approx(best, abs=1e-6)
    metrics = evaluate(model, split, EVAL)
    assert {"dl/valid/ndcg@10", "dl/test/ndcg@10", "valid/ndcg@10", "test/ndcg@10"} <= set(metrics)
    assert metrics["dl/valid/ndcg@10"] == pytest.approx(best, abs=1e-6)


def test_disencdr_ranks_the_source_side_by_shared_plus_source_means():
    split = _split()
    model = DisenCDR(layers=2, warmup_epochs=1, **SMALL)
    model.fit(split, _ctx())
    users, items = model.dl_view().score_tables()[:2]
    mu_s, _, mu_i, _ = model.specific(model.dl_params, model.data, "s", None)
    mu_sh = model.shared(model.dl_params, model.data, None)[0]
    np.testing.assert_allclose(np.asarray(users), np.asarray(mu_sh + mu_s), atol=1e-5)
    np.testing.assert_allclose(np.asarray(items), np.asarray(mu_i), atol=1e-5)


def test_the_cf_side_is_the_run_without_dl_folds():
    """Under the authors' protocol (nothing carved) the DL side trains on the same rows: the CF side's
    figures are the plain run's, to the bit; the extra evaluation draws nothing from the training streams."""
    out = []
    for dl_folds in (False, True):
        split = _split(dl_folds=dl_folds, authors=True)
        model = BiTGCF(layers=2, **SMALL)
        info = model.fit(split, _ctx())
        metrics = evaluate(model, split, EVAL)
        out.append((info["train/best_valid_ndcg@10"], {k: v for k, v in metrics.items() if not k.startswith("dl/")},
                    np.asarray(model.user_table)))
        assert any(k.startswith("dl/test/") for k in metrics) == dl_folds
    assert out[0][0] == out[1][0] and out[0][1] == out[1][1]
    np.testing.assert_array_equal(out[0][2], out[1][2])


def test_a_model_that_does_not_rank_the_dl_side_is_told():
    with pytest.raises(ConfigError, match="split.dl_folds=true: model=lightgcn does not rank"):
        LightGCN(dim=8, epochs=1, batch_size=32).fit(_split(), _ctx())


def test_select_on_test_reports_the_test_best_epoch_beside_the_validated_one(tmp_path):
    """``eval.select_on_test``: the test figures of the epoch whose test NDCG@10 is best, on both sides; the
    validated model's test figure is one of the epochs it chose among, so it is never above."""
    split = _split()
    cfg = EvalConfig(ks=(10,), ratings=False, select_on_test=True)
    model = BiTGCF(layers=2, **SMALL)
    info = model.fit(split, _ctx(eval_config=cfg, out_dir=tmp_path))
    metrics = evaluate(model, split, EVAL)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_epoch = {k: [r[k] for r in logged if k in r] for k in ("train/test", "train/dl_test", "train/dl")}
    # the chosen epochs are the logged curves' best ones (1-based), their figures those epochs' values
    assert info["train/dl/best_epoch"] == 1 + int(np.argmax(per_epoch["train/dl"]))
    for prefix, curve in (("", "train/test"), ("dl/", "train/dl_test")):
        assert len(per_epoch[curve]) == SMALL["epochs"]
        assert info[f"{prefix}test_selected/epoch"] == 1 + int(np.argmax(per_epoch[curve]))
        assert info[f"{prefix}test_selected/ndcg@10"] == pytest.approx(max(per_epoch[curve]), abs=1e-9)
        assert info[f"{prefix}test_selected/ndcg@10"] >= metrics[f"{prefix}test/ndcg@10"] - 1e-9
    with pytest.raises(ConfigError, match="monitor"):
        BiTGCF(layers=2, **{**SMALL, "monitor": "ndcg@20"}).fit(split, _ctx(eval_config=cfg))


def test_a_saved_model_keeps_both_sides():
    """``fitted_state`` holds the DL side's own best parameters too; a model rebuilt from it ranks both sides
    as the fitted one does."""
    from jmf.pytrees import flatten

    split = _split()
    model = BiTGCF(layers=2, **SMALL)
    model.fit(split, _ctx())
    arrays, scalars = flatten(model.fitted_state())
    assert any(k.startswith("['dl_params']") for k in arrays)
    again = BiTGCF(layers=2, **SMALL)
    again.load_fitted(split, {"arrays": arrays, "scalars": scalars})
    for a, b in zip(model.dl_view().score_tables()[:2] + model.score_tables()[:2],
                    again.dl_view().score_tables()[:2] + again.score_tables()[:2]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
