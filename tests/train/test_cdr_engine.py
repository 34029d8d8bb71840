"""The cross-domain baselines on the engine: a crashed fit resumes to the same tables, and
the fit on a 4-device mesh matches the 1-device fit."""

import numpy as np
import pytest

from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.validator import Validator
from jmf.models.cdr import cmf, emcdr, ptupcdr
from jmf.train.engine import RunContext

SMALL = {
    "cmf": lambda: cmf.CMF(dim=8, epochs=4, batch_size=64, patience=0, eval_every=1),
    "emcdr": lambda: emcdr.EMCDR(dim=8, epochs=2, batch_size=64, map_hidden=[16], map_epochs=6, map_batch_size=32,
                                 eval_every=2, patience=0),
    "ptupcdr": lambda: ptupcdr.PTUPCDR(dim=8, epochs=2, batch_size=64, meta_dim=8, max_len=8, meta_epochs=4,
                                       meta_batch_size=32, eval_every=1, patience=0),
}


@pytest.fixture(scope="module")
def split():
    data = synthetic(n_users=300, n_items=160, n_categories=4, interactions_per_user=12, seed=1)
    return make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)


def _ctx(out_dir=None, **kw):
    return RunContext(out_dir=out_dir, checkpoint=out_dir is not None, progress=False, tensorboard=False,
                      async_checkpoints=False, **kw)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_crashed_fit_resumes_to_the_same_model(split, tmp_path, monkeypatch, caplog, name):
    """The run dies in its second validation (of the last stage); the same fit again resumes from the
    stage checkpoints (finished stages restore, the interrupted one continues) and ends identical."""
    reference = SMALL[name]()
    reference.fit(split, _ctx(tmp_path / "ref", devices=1))

    real, calls = Validator.__call__, []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(Validator, "__call__", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        SMALL[name]().fit(split, _ctx(tmp_path / "run", devices=1))
    monkeypatch.setattr(Validator, "__call__", real)
    resumed = SMALL[name]()
    with caplog.at_level("INFO", logger="jmf"):
        resumed.fit(split, _ctx(tmp_path / "run", devices=1))
    assert "resumed from step" in caplog.text
    np.testing.assert_array_equal(resumed.user_factors, reference.user_factors)
    np.testing.assert_array_equal(resumed.item_factors, reference.item_factors)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_4_devices_match_1(split, name):
    one, four = SMALL[name](), SMALL[name]()
    one.fit(split, _ctx(devices=1))
    four.fit(split, _ctx(devices=4))
    engine = {"cmf": lambda m: m.engine, "emcdr": lambda m: m.mapping.engine, "ptupcdr": lambda m: m.meta_engine}
    assert engine[name](four).n_devices == 4
    np.testing.assert_allclose(four.user_factors, one.user_factors, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(four.item_factors, one.item_factors, rtol=1e-3, atol=1e-4)
