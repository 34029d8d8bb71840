"""The model contract (``jmf/models/base.py``) over every model config, timm-style.

Every ``conf/model/*.yaml`` -- and for ``model=jmf`` every encoder and every head -- is composed
through Hydra (and every CF side and item transfer, ``model/cf``, ``model/item_transfer``), run by ``jmf.run.run`` on a small synthetic cold-start split (which calls
``fit(split, ctx)`` with a run directory), and then checked as a :class:`~jmf.models.base.Model`:
finite ``[B, I_T]`` scores that depend on the fit, valid/test metrics, ratings on explicit data; each model's
saved model reloads to its run's own metrics.
A new model, encoder or head YAML is tested here without an edit to this file.  The worked example
of the contract's docstring is executed and held to the same checks.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from jmf.config import CONF_DIR
from jmf.experiments import register_configs
from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models import base
from jmf.models.base import FAMILIES, DotScores, HasInterest, Model, RunContext, family_of
from jmf.run import run

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
# the LM encoder reads pretrained weights (~20 s more a run): tests/models/test_lm.py runs it through JMF's fit
ENCODERS = sorted(p.stem for p in (CONF_DIR / "model" / "encoder").glob("*.yaml") if p.stem != "lm")
HEADS = sorted(p.stem for p in (CONF_DIR / "model" / "head").glob("*.yaml"))
CF_SIDES = sorted(p.stem for p in (CONF_DIR / "model" / "cf").glob("*.yaml"))
ITEM_TRANSFERS = sorted(p.stem for p in (CONF_DIR / "model" / "item_transfer").glob("*.yaml"))
CASES = ([[f"model={m}"] for m in MODELS]
         + [["model=jmf", f"model/cf={c}"] for c in CF_SIDES if c != "mf"]
         + [["model=jmf", f"model/item_transfer={t}"] for t in ITEM_TRANSFERS]
         + [["model=jmf", f"model/encoder={e}"] for e in ENCODERS if e != "cnn"]
         + [["model=jmf", "model/encoder=bag", f"model/head={h}"] for h in HEADS if h != "linear"]
         + [["model=jmf", "model/encoder=bag", "model/terms=[interest,neighbour]", "model.terms.neighbour.weight=[0,1]"]])
DATA = ["data.n_users=240", "data.n_items=120", "data.n_categories=4", "data.interactions_per_user=16",
        "partition.k=2", "split=cold_start", "split.beta=0.3", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.devices=1"]
# model=jmf_map trains every target category of split=category_holdout (its own split, same data)
HOLDOUT = ([o for o in DATA if not o.startswith(("partition.", "split", "data.n_items"))]
           + ["data.n_items=240", "split=category_holdout", "split.beta=0.3", "split.targets=2"])
# small sizes for whichever of these knobs a model has (the contract does not depend on them)
SMALL = {"dim": 8, "epochs": 1, "pretrain_epochs": 1, "batch_size": 32, "map_epochs": 4, "meta_epochs": 2,
         "meta_dim": 8, "map_batch_size": 32, "meta_batch_size": 32, "max_len": 8, "eval_every": 1, "samples": 64,
         "cg_steps": 2}
ENCODER_SMALL = {"embed_dim": 8, "filters": 8, "out_dim": 8, "hidden": 16, "max_tokens": 16}


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *(HOLDOUT if "model=jmf_map" in overrides else DATA)])
    with open_dict(cfg):
        for key, value in SMALL.items():
            if key in cfg.model:
                cfg.model[key] = value
        if "encoder" in cfg.model:
            for key, value in ENCODER_SMALL.items():
                if key in cfg.model.encoder and cfg.model.encoder[key] is not None:
                    cfg.model.encoder[key] = value
    return cfg


@pytest.mark.parametrize("overrides", CASES, ids=lambda o: " ".join(
    x.split("=", 1)[0].removeprefix("model/") + "=" + x.split("=", 1)[1] if x.startswith(("model/cf=", "model/item_"))
    else x.split("=", 1)[1] for x in o))
def test_every_model_config_follows_the_contract(overrides, tmp_path):
    cfg = _compose(overrides)
    metrics = run(cfg, tmp_path)          # jmf.run: instantiate, fit(split, ctx), evaluate, write
    for key in ("valid/ndcg@10", "test/ndcg@10", "test/recall@20"):
        assert key in metrics and math.isfinite(metrics[key]) and 0 <= metrics[key] <= 1, (key, metrics.get(key))
    assert (tmp_path / "metrics.json").exists()
    if len(overrides) == 1 or overrides[1].startswith(("model/cf=", "model/item_")):  # each model and part: an artifact
        _reloads_to_its_own_metrics(tmp_path, metrics, overrides[0].split("=", 1)[1])


def _reloads_to_its_own_metrics(out: Path, metrics: dict, name: str) -> None:
    """The run's saved model, loaded, gives the run's metrics exactly, recommends unseen items, and says whether it
    explains its recommendations as ``jmf.recommend.EXPLAINED`` lists."""
    import jmf
    from jmf.recommend import EXPLAINED

    rec = jmf.load(out)
    again = rec.evaluate()
    saved = {k: v for k, v in metrics.items() if k.startswith(("valid/", "test/", "targets/"))}
    assert saved and again == saved          # exactly: the same scores from the reloaded model
    users = list(rec.user_ids[:3])
    top = rec.recommend(users, k=5)
    assert list(top.columns) == ["user", "rank", "item", "score"] and len(top) == 15
    seen = {(rec.user_ids[u], rec.cf_item_ids[i]) for u, i in zip(*rec.split.train[:3].nonzero())}
    assert not seen & set(zip(top["user"], top["item"]))
    assert rec.explains() == (name in EXPLAINED)     # the list --explain's refusal names, measured on every model


@pytest.fixture(scope="module")
def split():
    data = synthetic(n_users=240, n_items=120, n_categories=4, interactions_per_user=16, implicit=False, seed=0)
    return make_split(data, partition_categories(data, k=2), "cold_start", beta=0.3, seed=0)


# the oracle needs its data config; JMF's library use on ratings is tests/models/test_joint.py's subject, jmf_map's
# (on its own split) tests/models/test_transfer_map.py's
@pytest.mark.parametrize("name", [m for m in MODELS if m not in ("oracle", "jmf", "jmf_map")])
def test_library_use_fit_score_predict(name, split):
    """``fit(split)`` / ``fit(split, RunContext(seed=...))`` without Hydra's run: ratings where the model rates."""
    model = instantiate(_compose([f"model={name}"]).model, _convert_="all")
    assert isinstance(model, Model)
    info = model.fit(split, RunContext(seed=1))
    assert all(isinstance(v, float) for v in info.values())
    users = np.asarray(split.cold_test_users[:5], np.int32)
    scores = np.asarray(model.score(jnp.asarray(users)))
    assert scores.shape == (5, split.train.shape[1]) and np.isfinite(scores).all()
    if isinstance(model, DotScores):       # the evaluator's one-program path scores from these tables
        users_table, items_table, bias = (None if t is None else np.asarray(t) for t in model.score_tables())
        want = users_table[users] @ items_table.T + (0.0 if bias is None else bias[None, :])
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
    rows = split.test.tocoo()
    if name in ("ials",) or not getattr(model, "rates", True):   # ranking-only models: no rating scale
        return
    ratings = np.asarray(model.predict(rows.row[:20], rows.col[:20]))
    assert ratings.shape == (20,) and np.isfinite(ratings).all()
    assert 0.0 < ratings.mean() < 6.0, ratings
    if isinstance(model, HasInterest):
        interest = np.asarray(model.interest(jnp.asarray(users)))
        np.testing.assert_allclose(interest.sum(1), 1.0, atol=1e-5)


def _worked_example() -> type:
    """The ``ItemBias`` model of :mod:`jmf.models.base`'s docstring, executed as written."""
    block = re.search(r"Worked example.*?::\n\n(.*?)\n\nConfig:", base.__doc__, re.S).group(1)
    namespace: dict = {}
    exec(compile("\n".join(line[4:] for line in block.splitlines()), "base-example", "exec"), namespace)
    return namespace["ItemBias"]


def test_the_contract_docstring_example_runs_on_the_engine(split, tmp_path):
    model = _worked_example()(epochs=3, lr=0.5)
    assert isinstance(model, Model)
    info = model.fit(split, RunContext(seed=0, out_dir=tmp_path, tensorboard=False))
    assert info["train/epochs"] == 3.0 and (tmp_path / "checkpoints").is_dir()
    # the learned biases rank like popularity: the most frequent training items score highest
    counts = np.diff(split.train.tocsc().indptr)
    bias = np.asarray(model.bias)
    assert np.corrcoef(bias, np.log1p(counts))[0, 1] > 0.8
    out = evaluate_split(model, split, "test", EvalConfig(ks=(10,), ratings=False))
    assert out["ndcg@10"] > 0
    resumed = _worked_example()(epochs=3, lr=0.5)      # the same run directory: nothing left to train
    resumed.fit(split, RunContext(seed=0, out_dir=tmp_path, tensorboard=False))
    np.testing.assert_array_equal(np.asarray(resumed.bias), bias)


def _target(name: str) -> str:
    """``conf/model/<name>.yaml``'s ``_target_``, through the model configs it starts from (``defaults``)."""
    node = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    if "_target_" in node:
        return node["_target_"]
    parents = [e for e in node.get("defaults", []) if isinstance(e, str) and e != "_self_"]
    assert parents, f"conf/model/{name}.yaml has no _target_ and starts from no other model config"
    return _target(parents[0])


@pytest.mark.parametrize("name", MODELS)
def test_every_model_subclasses_exactly_one_family(name):
    """Every ``conf/model/*.yaml`` names a class of one family of :mod:`jmf.models.base`."""
    from hydra.utils import get_class

    cls = get_class(_target(name))
    assert sum(issubclass(cls, f) for f in FAMILIES) == 1, (name, cls.__mro__)
    assert family_of(cls).family in ("engine", "staged", "closed-form")


def test_the_families_are_what_the_docs_say():
    """The family of each model as docs/pages/design.md and base.py's docstring list them."""
    from hydra.utils import get_class

    expected = {"engine": {"mf", "lightgcn", "lightgcn_merged", "bitgcf", "disencdr", "cdrib", "jmf", "jmf_map"},
                "staged": {"cmf", "emcdr", "ptupcdr"}, "closed-form": {"pop", "svd", "ials", "cooc", "oracle"}}
    found: dict[str, set] = {}
    for name in MODELS:
        cls = get_class(_target(name))
        found.setdefault(family_of(cls).family, set()).add(name)
    assert found == expected
    with pytest.raises(TypeError, match="several model families"):
        family_of(type("Both", (base.EngineModel, base.ClosedFormModel), {}))


def test_runner_refuses_a_target_that_is_not_a_model(tmp_path):
    cfg = _compose(["model=pop"])
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": "jmf.models.joint.start.ZeroBias"})
    with pytest.raises(ValueError, match="is not a model"):
        run(cfg, tmp_path)


def test_contract_lives_in_one_file():
    """The run loop calls every model one way: no probing of a model's methods or signature."""
    source = (Path(__file__).resolve().parents[2] / "jmf" / "run.py").read_text()
    assert "inspect" not in source and "AttributeError" not in source and "hasattr(model" not in source
