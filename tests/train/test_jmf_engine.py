"""The joint model on the engine, in process: one trace for both phases, 1 vs 4 devices agree,
row-sharded tables train, and a NaN loss names its term."""

from functools import partial

import numpy as np
import pytest

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.encoders.bag import BagEncoder
from jmf.models.heads.linear import LinearHead
from jmf.models.joint import JMF
from jmf.train.engine import NonFiniteLossError, RunContext


@pytest.fixture(scope="module")
def split():
    data = synthetic(n_users=203, n_items=101, n_categories=4, interactions_per_user=12, seed=0)
    return make_split(data, partition_categories(data, k=2), "ratio", seed=0)


def _model(**kw):
    args = dict(dim=8, epochs=2, pretrain_epochs=1, patience=0, batch_size=16, items_per_user=4, max_len=8,
                negatives=8)
    return JMF(partial(BagEncoder, embed_dim=8, out_dim=8), partial(LinearHead), **{**args, **kw})


def _ctx(**kw):
    return RunContext(checkpoint=False, progress=False, **kw)


def test_one_trace_for_both_phases_on_4_devices(split):
    model = _model(epochs=1)
    info = model.fit(split, _ctx())
    assert model.engine.n_devices == 4
    assert model.engine.traces["step"] == 1          # pretrain and joint phases share one compiled step
    assert 0 < model.engine.max_pending <= model.engine.max_inflight
    assert info["train/epochs"] == 1 and info["train/steps"] > 0


@pytest.mark.slow  # ~60 s of compiling; CI compares 1 and 4 devices on the engine's toy (test_engine.py)
def test_1_vs_4_devices(split):
    one, four = _model(epochs=1), _model(epochs=1)
    info1 = one.fit(split, _ctx(devices=1))
    info4 = four.fit(split, _ctx(devices=4))
    assert info1["train/steps"] == info4["train/steps"]
    cfg = EvalConfig(ks=(10,))
    m1, m4 = (evaluate_split(m, split, "test", cfg) for m in (one, four))
    for key in m1:
        np.testing.assert_allclose(m4[key], m1[key], rtol=1e-3, atol=1e-3, err_msg=key)
    np.testing.assert_allclose(np.asarray(four.state.tables["P"]), np.asarray(one.state.tables["P"]), atol=1e-4)


@pytest.mark.slow  # ~30 s; CI covers row sharding on the engine's toy (test_engine.py)
def test_row_sharded_tables_train_and_score(split):
    model = _model(epochs=1)
    model.fit(split, _ctx(devices=4, shard_tables=True))
    P = model.state.tables["P"]
    assert P.shape[0] % 4 == 0 and P.shape[0] >= split.train.shape[0]
    assert "data" in str(P.sharding.spec)
    scores = np.asarray(model.score(np.arange(5, dtype=np.int32)))
    assert scores.shape == (5, split.train.shape[1]) and np.isfinite(scores).all()


@pytest.mark.slow  # CI covers the NaN stop on the engine's toy (test_engine.py)
def test_nan_loss_names_the_step(split):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+ \(phase pretrain"):
        _model(lr=1e30, optimizer="sgd").fit(split, _ctx(devices=1))
